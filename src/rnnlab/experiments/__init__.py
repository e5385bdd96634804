"""Experiments: `rnnlab sweep` (a grid of settings trained and measured alike, then a report
whose discussion is generated from the numbers) and the worked examples of `rnnlab demo`.

    spec         what to run: Budget, Grid, Setting, SweepSpec, the configs of each setting
    measure      how a setting is measured: held-out loss carried and reset, gradient flow, ...
    worker       one setting: train or resume it, measure it, save result.json (own process)
    store        the sweep directory: file names, table columns, lock, state, tables
    runner       the grid: workers `jobs` at a time, resume, signals, then the report
    report_data  results pooled over seeds; "clearly different" and trends over num_steps
    rules        the discussion: one rule per effect, each claim naming its evidence
    figures      the report's PNG plots
    markdown     report.md: setup, tables, figures, discussion
    demos        `rnnlab demo srn` and `rnnlab demo bptt`
"""
