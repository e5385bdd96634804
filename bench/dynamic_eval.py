"""Static against dynamic evaluation of one trained run: held-out figures and seconds.

    python bench/dynamic_eval.py runs/timemachine            # the defaults of `--dynamic`
    python bench/dynamic_eval.py runs/timemachine --quick    # tiny settings: checks it runs
    python bench/dynamic_eval.py RUN --segment 20 --eta 1e-4 --grid 1   # any DynamicConfig field

Prints one table: the static held-out figure as `rnnlab evaluate` gives it (16 streams side by
side), the static figure of the text read as one stream (the protocol the dynamic walk uses,
without the updates), and the dynamic figure, each with its seconds; then every (eta, lambda)
tried on the end of the training text. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

import rnnlab
from rnnlab.cli.flags import add_config_args, given
from rnnlab.data import prepare_data
from rnnlab.dynamic import DynamicConfig, DynamicReport
from rnnlab.metrics import evaluate

QUICK = {"tune_chars": 2000, "stats_batches": 10, "grid": 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory written by `rnnlab train`")
    parser.add_argument("--quick", action="store_true", help=f"tiny settings: {QUICK}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    add_config_args(parser, DynamicConfig)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = DynamicConfig(**{**(QUICK if args.quick else {}), **given(DynamicConfig, args)})
    lm = rnnlab.load(args.run, device="cpu")
    valid = prepare_data(lm.run.data, vocab=lm.vocab).valid_ids

    t0 = time.perf_counter()
    static = lm.evaluate()
    static_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_stream = evaluate(lm.model, valid, rows=1)
    one_stream_s = time.perf_counter() - t0
    report = lm.evaluate(dynamic=config)
    assert isinstance(report, DynamicReport)

    print(f"run {args.run}: {lm!r}, {torch.get_num_threads()} threads")
    print(f"settings: {dataclasses.asdict(config)}")
    print()
    print("| figure (held-out text) | loss (nats/char) | perplexity | bits/char | seconds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = [
        ("static, as `rnnlab evaluate` (16 streams)", static, static_s),
        ("static, one stream", one_stream, one_stream_s),
        ("dynamic* (statistics + tuning + pass)", report.dynamic, report.seconds),
    ]
    for name, m, seconds in rows:
        print(f"| {name} | {m.loss:.4f} | {m.ppl:.3f} | {m.bpc:.4f} | {seconds:.1f} |")
    start, end = report.tuned_on
    print()
    print(
        f"eta and lambda tuned on training characters {start:,}-{end:,} "
        f"(static there {report.tuning_static:.4f}); chosen: eta {report.eta:.3g}, "
        f"lambda {report.decay:.3g}"
        + (f"; at the grid's edge: {', '.join(report.at_edge())}" if report.at_edge() else "")
    )
    print()
    print("| eta | lambda | dynamic loss on the tuning slice |")
    print("| ---: | ---: | ---: |")
    for p in report.grid:
        print(f"| {p.eta:.3g} | {p.decay:.3g} | {p.loss:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
