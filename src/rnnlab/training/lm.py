"""The language model as a family of the one loop: its windows of text, its step, its figures.

`LanguageModelFamily` is what `rnnlab.training.loop.Trainer` asks of the language model: the
minibatches of an epoch (random sampling or sequential partitioning, replayed exactly after a
resume), one `train_step` on each, held-out figures after each epoch. `LanguageModelRecipe` is
how a language-model run starts (`rnnlab.training.start.open_run`): the text, the vocabulary,
the model, what config.json records. `start_lm_run` is the whole of `rnnlab train` before its
first step, and `forward_check_run` the whole of `rnnlab check`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab import checkpoint as ckpt
from rnnlab.batches import batches_per_epoch, check_length, make_batches
from rnnlab.corpus import CorpusText, DataConfig, read_corpus
from rnnlab.data import Data, prepare_data
from rnnlab.devices import resolve_device
from rnnlab.errors import UsageError, flag, stderr
from rnnlab.metrics import PARALLEL_ROWS, Metrics, evaluate_nll, metrics_from_nll, perplexity
from rnnlab.model import (
    ARCHITECTURE,
    BIDIRECTIONAL_WARNING,
    RNNLM,
    ModelConfig,
    State,
    count_parameters,
    forward_check,
    load_with_new_rows,
    mask_generator,
)
from rnnlab.presets import Preset, budget_preset
from rnnlab.seeding import seed_everything
from rnnlab.training import distributed
from rnnlab.training.config import TrainConfig
from rnnlab.training.logs import METRICS_HEADER
from rnnlab.training.loop import EpochProgress, Step, Trainer, train_step
from rnnlab.training.runs import (
    RUN_FILES,
    LoadedRun,
    claim_run_dir,
    configs_from_json,
    default_run_dir,
    load_run,
    run_config,
)
from rnnlab.training.runtime import (
    CPU,
    Runtime,
    RuntimeConfig,
    model_for_device,
    setup_runtime,
)
from rnnlab.training.start import RunResult, open_run, resume_configs
from rnnlab.vocab import Vocab


@dataclass
class EpochResult:
    epoch: int
    train: Metrics
    valid: Metrics
    seconds: float  # training time of this epoch, evaluation excluded
    steps: int
    grad_norm: float  # mean global gradient norm before clipping
    clipped: float  # fraction of steps where clipping fired

    @property
    def heldout_loss(self) -> float:
        return self.valid.loss


class LanguageModelFamily:
    """A character language model trained on windows of one long text (d2l 9.3-9.5)."""

    metrics_header = METRICS_HEADER
    save_interval = None  # a checkpoint at every epoch's end
    keeps_best = True  # the run's model is its best held-out epoch

    def __init__(
        self,
        model: RNNLM,
        config: TrainConfig,
        train_ids: torch.Tensor,
        valid_ids: torch.Tensor,
        runtime: Runtime = CPU,
    ) -> None:
        check_length(len(train_ids), config.batch_size, config.num_steps)
        self.config = config
        self.runtime = runtime
        self.model = model.to(runtime.device)
        self.net = distributed.wrap(self.model, runtime.world, runtime.device)  # what trains
        self.train_ids = train_ids.to(runtime.device)  # the data go to the device once
        self.valid_ids = valid_ids.to(runtime.device)
        self.rows = runtime.world.rows(config.batch_size)  # this process's rows of a batch
        self._reduce = self._global_loss if runtime.world.distributed else None

    def new_epoch(self, gen: torch.Generator) -> EpochProgress:
        return EpochProgress(start=gen.get_state())  # replays the epoch's offset and order

    def restore_epoch(
        self, start: torch.Tensor, state: State | None, sums: dict[str, Any]
    ) -> EpochProgress:
        return EpochProgress(start=start, state=state, **sums)

    def num_batches(self) -> int:
        cfg = self.config
        return batches_per_epoch(
            len(self.train_ids), cfg.batch_size, cfg.num_steps, cfg.sampling, cfg.variable_window
        )

    def batches(self, ep: EpochProgress, gen: torch.Generator) -> Iterator[Any]:
        """The epoch's minibatches X, Y (B, T) from the one `ep.batches_done` on."""
        cfg = self.config
        gen.set_state(ep.start)  # the same offset and order as when the epoch began
        batches = make_batches(
            self.train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, gen, cfg.variable_window
        )
        for _ in range(ep.batches_done):  # already trained on before a resume
            next(batches)
        return batches

    def train_mode(self) -> None:
        self.net.train()

    def step(
        self,
        batch: Any,
        ep: EpochProgress,
        optimizer: torch.optim.Optimizer,
        gen: torch.Generator,
        taken: int,
    ) -> Step:
        cfg = self.config
        X, Y = batch  # (B, T), (B, T): the global minibatch
        X, Y = X[self.rows], Y[self.rows]  # (B/N, T): this process's rows
        # Random sampling: windows are unrelated, every minibatch starts from zero.
        carried = None if cfg.sampling == "random" else ep.state
        masks = None
        if self.model.config.uses_masks:  # one set per step, from (seed, step): every rank
            device = self.runtime.device  # draws the global batch's and keeps its rows
            draw_on = device if device.type == "cuda" else torch.device("cpu")
            generator = mask_generator(cfg.seed, taken, draw_on)
            masks = self.model.sample_masks(cfg.batch_size, generator, self.rows)
        step = train_step(
            self.net, optimizer, X, Y, carried, cfg.clip, self.runtime.precision, self._reduce,
            masks,
        )  # fmt: skip
        return dataclasses.replace(step, count=step.count * self.runtime.world.size)

    def _global_loss(self, loss: float) -> float:
        """The global minibatch's mean loss: every rank holds B/N rows of it."""
        return distributed.all_reduce([loss], self.runtime.world)[0] / self.runtime.world.size

    def evaluate(self) -> Metrics:
        """Held-out figures of the weights now; the rows are shared among processes."""
        world = self.runtime.world
        with self.runtime.precision.autocast():
            nll, chars = evaluate_nll(
                self.model, self.valid_ids, rows=PARALLEL_ROWS, shard=(world.rank, world.size)
            )
        nll = distributed.all_reduce([nll], world)[0]  # NLL sums, never averages of averages
        return metrics_from_nll(nll, chars)

    def epoch_record(self, ep: EpochProgress, epoch: int, lr: float) -> EpochResult:
        """The figures of an epoch (whole or stopped part-way), held-out ones of the weights now."""
        steps = max(ep.batches_done, 1)
        valid_m = self.evaluate()
        train_m = metrics_from_nll(ep.total_loss, ep.count) if ep.count else valid_m
        return EpochResult(
            epoch=epoch,
            train=train_m,
            valid=valid_m,
            seconds=ep.seconds,
            steps=ep.batches_done,
            grad_norm=ep.grad_norms / steps,
            clipped=ep.clipped / steps,
        )

    def metrics_row(self, r: EpochResult, step: int) -> str:
        return (
            f"{r.epoch},{step},{r.train.loss:.6f},{r.train.ppl:.6f},"
            f"{r.train.bpc:.6f},{r.valid.loss:.6f},{r.valid.ppl:.6f},{r.valid.bpc:.6f},"
            f"{r.seconds:.3f},{r.train.chars / max(r.seconds, 1e-9):.1f},"
            f"{r.grad_norm:.6f},{r.clipped:.4f}"
        )

    def epoch_line(self, r: EpochResult, improved: bool) -> str:
        return (
            f"epoch {r.epoch:3d}  train ppl {r.train.ppl:7.3f}  "
            f"valid ppl {r.valid.ppl:7.3f} ({r.valid.bpc:.3f} bits/char)  "
            f"{r.train.chars / max(r.seconds, 1e-9):,.0f} chars/s" + ("  *" if improved else "")
        )

    def files_once(self) -> dict[str, bytes]:
        return {}


def lm_trainer(
    model: RNNLM,
    config: TrainConfig,
    train_ids: torch.Tensor,
    valid_ids: torch.Tensor,
    run_dir: Path,
    run_config: dict,
    runtime: Runtime = CPU,
    **options: Any,
) -> Trainer:
    """The Trainer of a language model already built: for tests and benchmarks that bring
    their own model and ids (a run starts with `open_run`, which also seeds and claims)."""
    family = LanguageModelFamily(model, config, train_ids, valid_ids, runtime)
    return Trainer(family, config, run_dir, run_config, runtime=runtime, **options)


@dataclass
class LanguageModelRecipe:
    """How a language-model run starts: its configs, and (after `prepare`) its data."""

    data_config: DataConfig
    model_config: ModelConfig
    train_config: TrainConfig
    data: Data | None = None  # prepared by `prepare`, or given (a demo reuses its text)
    files: tuple[str, ...] = RUN_FILES
    base: LoadedRun | None = None  # fine-tuning: the trained run whose weights start this one
    base_vocab: Vocab | None = None  # fine-tuning: the vocabulary the new text's extends
    preset: str | None = None  # the named configuration it started from (config.json says so)
    preset_rule: str | None = None  # --max-time alone: the size rule that chose the recipe
    text: CorpusText | None = None  # the corpus, when the size rule has read it already

    def prepare(self) -> None:
        if self.data is None:
            self.data = prepare_data(self.data_config, base_vocab=self.base_vocab, text=self.text)
        what = "training text"
        if self.data_config.train_chars is not None:
            what = f"training text cut to --train-chars {self.data_config.train_chars}"
        cfg = self.train_config
        check_length(len(self.data.train_ids), cfg.batch_size, cfg.num_steps, what)
        if len(self.data.valid_ids) < 2:
            raise UsageError("held-out text is too short: raise --valid-fraction")

    def default_run_dir(self) -> Path:
        return default_run_dir(self.data_config, self.model_config)

    def build(self, runtime: Runtime) -> LanguageModelFamily:
        """A freshly initialised model, made on the CPU (the same weights on every device and
        every rank), in its family."""
        assert self.data is not None
        model = RNNLM(len(self.data.vocab), self.model_config)
        if self.base is not None:  # shared characters keep their trained rows, bit for bit
            load_with_new_rows(model, self.base.model.state_dict(), len(self.base.vocab))
        return LanguageModelFamily(
            model, self.train_config, self.data.train_ids, self.data.valid_ids, runtime
        )

    def run_config(self, runtime: Runtime) -> dict[str, Any]:
        assert self.data is not None
        config = run_config(self.data_config, self.model_config, self.train_config, self.data.vocab)
        config["runtime"] = runtime.record(self.train_config.batch_size)
        if self.preset is not None:
            config["preset"] = self.preset
        if self.preset_rule is not None:
            config["preset_rule"] = self.preset_rule
        if self.data.documents:  # a folder or several files: which, and how each was split
            config["data_files"] = self.data.documents
        if self.base is not None:
            config["init_from"] = {
                "run": str(self.base.run_dir),
                "checkpoint": str(self.base.checkpoint),
                "vocab_size": len(self.base.vocab),
                "added": self.data.added,
            }
        return config

    def check_resume(self, run_dir: Path, stored: dict[str, Any]) -> None:
        assert self.data is not None
        if stored["vocab"] != self.data.vocab.to_json():
            raise UsageError("the corpus changed since this run started: its vocabulary differs")

    def started(self, trainer: Trainer) -> str:
        assert self.data is not None
        data = self.data
        if self.base is not None:
            added = data.added
            shown = "".join(added[:20]).encode("unicode_escape").decode("ascii")
            return (
                f"fine-tuning {str(self.base.run_dir)!r} ({self.model_config.cell.upper()}, "
                f"{count_parameters(trainer.model):,} parameters) on {self.data_config.corpus}: "
                f"{len(added)} character(s) new to it get fresh rows"
                + (f" ({shown}{'...' if len(added) > 20 else ''})" if added else "")
                + f", the other {len(self.base.vocab)} keep theirs; {len(data.train_ids):,} "
                f"train / {len(data.valid_ids):,} held-out characters"
            )
        return (
            f"training a {self.model_config.cell.upper()} "
            f"({count_parameters(trainer.model):,} parameters, vocabulary {len(data.vocab)}) on "
            f"{self.data_config.corpus}: {len(data.train_ids):,} train / "
            f"{len(data.valid_ids):,} held-out characters"
        )


def run_configs(
    preset: Preset | None,
    data_values: dict[str, Any],
    model_values: dict[str, Any],
    train_values: dict[str, Any],
    resume_dir: Path | None = None,
) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The configs a `rnnlab train` (or `rnnlab.train`) asks for: the dataclass defaults, then
    the preset, then the values given; with `resume_dir`, that run's stored configs, checked
    against the data and model values given (`resume_configs`)."""
    pre = preset or Preset("", "", {}, {}, {}, "")
    data_values, model_values = {**pre.data, **data_values}, {**pre.model, **model_values}
    if resume_dir is not None:
        claim_run_dir(resume_dir, force=False, resume=True)
        stored = configs_from_json(ckpt.read_json(resume_dir, ckpt.CONFIG))
        return resume_configs(stored, data_values, model_values, train_values)
    return (
        DataConfig(**data_values),
        ModelConfig(**model_values),
        TrainConfig(**{**pre.train, **train_values}),
    )


def start_lm_run(
    preset: Preset | None,
    data_values: dict[str, Any],
    model_values: dict[str, Any],
    train_values: dict[str, Any],
    runtime_config: RuntimeConfig,
    run_dir: Path | None = None,
    force: bool = False,
    resume: bool = False,
    threads: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = stderr,
) -> Trainer:
    """Everything `rnnlab train` and `rnnlab.train` do before the first step, in one call.

    The configs (defaults, preset, values given; the stored ones on resume), then the device
    and precision (refused before any data is read), then `open_run`.
    """
    if resume and run_dir is None:
        raise UsageError("--resume needs --out DIR naming the run to continue")
    rule, text = None, None
    if preset is None and not resume and budget_alone(train_values):
        text = read_corpus(DataConfig(**data_values))  # read once: prepare_data reuses it
        preset, rule = budget_preset(text.n_train)
        log(rule + (f" ({preset.description}); a flag given overrides it" if preset else ""))
    data_cfg, model_cfg, train_cfg = run_configs(
        preset, data_values, model_values, train_values, run_dir if resume else None
    )
    base, base_vocab = None, None
    if train_cfg.init_from is not None and not resume:
        base = load_run(train_cfg.init_from, warn)  # missing or corrupt: exit 3
        model_cfg = fine_tune_config(base, model_values)
        base_vocab = base.vocab
    elif train_cfg.init_from is not None:  # a fine-tuned run resumes with its own vocabulary
        base_vocab = Vocab.from_json(ckpt.read_json(run_dir, ckpt.CONFIG)["vocab"])
    runtime = setup_runtime(
        runtime_config, train_cfg.batch_size, threads, model_cfg.cell, model_cfg.impl
    )
    model_cfg = model_for_device(model_cfg, runtime.device, warn)
    recipe = LanguageModelRecipe(
        data_cfg, model_cfg, train_cfg, base=base, base_vocab=base_vocab,
        preset=None if preset is None or resume else preset.name, preset_rule=rule, text=text,
    )  # fmt: skip
    trainer = open_run(
        recipe, run_dir, force=force, resume=resume, runtime=runtime, progress=progress,
        log=log, warn=warn,
    )  # fmt: skip
    if model_cfg.bidirectional:
        warn(BIDIRECTIONAL_WARNING)
    return trainer


def budget_alone(train_values: dict[str, Any]) -> bool:
    """Whether the budget given is a time and nothing else: `--max-time` without `--epochs`,
    `--max-steps` or `--init-from` (a fine-tuned model keeps the recipe it was trained with)."""
    given = {k for k, v in train_values.items() if v is not None}
    return "max_time" in given and not given & {"epochs", "max_steps", "init_from"}


def fine_tune_config(base: LoadedRun, given: dict[str, Any]) -> ModelConfig:
    """The model of a fine-tuning run: the trained run's, with the values given on top where
    the weights still fit (dropout, regularisation, implementation); another cell, size, layer
    count or input is refused in one line, since the trained weights could not follow."""
    trained = base.model_config
    changed = [
        f"{flag(name)} {value!r} (it has {getattr(trained, name)!r})"
        for name, value in given.items()
        if name in ARCHITECTURE and getattr(trained, name) != value
    ]
    if changed:
        raise UsageError(
            f"cannot fine-tune {str(base.run_dir)!r} with {', '.join(changed)}: its weights fit "
            "only its own model; drop the flag, or train a new model without --init-from"
        )
    return dataclasses.replace(trained, **given)


def run_summary(result: RunResult) -> dict[str, Any]:
    """The figures `rnnlab train --json` prints (the `valid_*` ones are the last epoch's, or of
    the weights where a run stopped inside an epoch: `epochs` then counts the part done)."""
    t, last = result.trainer, result.last
    records = list(t.history)
    partial = t.current is not None and last is not (records[-1] if records else None)
    if partial:
        records.append(last)
    chars = sum(r.train.chars for r in records if r.steps)
    seconds = sum(r.seconds for r in records)
    best = min(t.best_valid, last.valid.loss) if partial else t.best_valid
    epochs: float = t.epoch
    if partial:
        epochs = round(t.epoch + t.current.batches_done / max(t.family.num_batches(), 1), 4)
    return {
        "train_loss": last.train.loss,
        "train_ppl": last.train.ppl,
        "valid_loss": last.valid.loss,
        "valid_ppl": last.valid.ppl,
        "valid_bpc": last.valid.bpc,
        "best_valid_ppl": perplexity(best) if math.isfinite(best) else None,
        "best_epoch": t.best_epoch,
        "epochs": epochs,
        "steps": t.step,
        "seconds": round(result.seconds, 3),
        "chars_per_sec": round(chars / max(seconds, 1e-9), 1),
        "run_dir": str(t.run_dir),
    }


@dataclass
class CheckResult:
    """`rnnlab check`: one untrained forward pass on the first minibatch of the text."""

    data: Data
    model: RNNLM
    X: torch.Tensor  # (B, T)
    figures: dict[str, Any]  # `forward_check`'s shapes, zero state, loss


def forward_check_run(
    data_config: DataConfig,
    model_config: ModelConfig,
    train_config: TrainConfig,
    device: str = "auto",
    warn: Callable[[str], None] = stderr,
) -> CheckResult:
    """The forward-propagation check of a model as `rnnlab train` would build it (same seed,
    same first minibatch): shapes, a zero initial state, an initial loss near ln |V|."""
    dev = resolve_device(device)
    model_config = model_for_device(model_config, dev, warn)
    data = prepare_data(data_config)
    seed_everything(train_config.seed)
    model = RNNLM(len(data.vocab), model_config).to(dev)
    gen = torch.Generator().manual_seed(train_config.seed)
    ids = data.train_ids.to(dev)
    cfg = train_config
    X, Y = next(make_batches(ids, cfg.batch_size, cfg.num_steps, cfg.sampling, gen))  # (B, T)
    return CheckResult(data, model, X, forward_check(model, X, Y))
