"""Named configurations that reproduce a known experiment: `rnnlab train --preset d2l`.

A preset holds field values for the three configs (`DataConfig`, `ModelConfig`, `TrainConfig`).
They replace the defaults only: a flag the user gives on the command line still wins, so
`--preset d2l --epochs 2` is the d2l run cut to two epochs.

The d2l presets follow Dive into Deep Learning (PyTorch edition 0.17, d2l-zh 2.0), chapter 8:
section 8.5 "Implementation of Recurrent Neural Networks from Scratch" (`d2l`) and section 8.6
"Concise Implementation of Recurrent Neural Networks" (`d2l-concise`). Both load the Time Machine
with `load_data_time_machine(batch_size=32, num_steps=35)`: the first 10,000 characters after
d2l's letters-only cleaning, sequential partitioning (`use_random_iter=False`), one-hot inputs,
and train 500 epochs with plain SGD at lr 1 and the gradient clipped to norm 1.

Three differences remain. d2l's scratch model (8.5) draws its weights from N(0, 0.01^2), while
rnnlab's scratch cells start from PyTorch's uniform(-1/sqrt(H), 1/sqrt(H)) like the concise one.
d2l 0.17 cleans the book line by line and joins the lines with no space between them, while
rnnlab's `letters` cleaning is d2l 1.0's whole-text one (a line break becomes a space), so the
10,000 characters are not byte for byte d2l's. And d2l builds its vocabulary from the whole book,
rnnlab from the characters trained on; the first 10,000 already hold all 26 letters and the
space, so both vocabularies have the same 28 entries with <unk>.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnlab.errors import UsageError


@dataclass(frozen=True)
class Preset:
    """Field values for the data, model and train configs, and a sentence for the user."""

    name: str
    description: str
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    note: str


_D2L_DATA: dict[str, Any] = {"corpus": "timemachine", "cleaning": "letters", "train_chars": 10_000}
_D2L_TRAIN: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 1.0,
    "clip": 1.0,
    "batch_size": 32,
    "num_steps": 35,
    "sampling": "sequential",
    "lr_decay": 1.0,
    "epochs": 500,
}
_HELD_OUT = (
    "d2l reports training perplexity on its 10,000 characters only; rnnlab also reports "
    "held-out perplexity on the last 10% of the whole book, which d2l never evaluates. The "
    "perplexities the book prints for this run could not be confirmed from its text here, so "
    "none is quoted."
)


def _d2l(name: str, description: str, hidden: int, impl: str) -> Preset:
    """A d2l chapter 8 run: only the hidden size and the recurrent implementation differ."""
    model = {"cell": "rnn", "hidden": hidden, "layers": 1, "dropout": 0.0, "embed": 0}
    return Preset(
        name, description, dict(_D2L_DATA), {**model, "impl": impl}, dict(_D2L_TRAIN), _HELD_OUT
    )


# The small-text recipe: the winner of BENCHMARKS.md's equal-time rounds, tuned on a slice of
# The Time Machine's training text (round 5): LSTM 2 x 256, AWD-LSTM's kinds of dropout at
# lighter rates than its PTB settings, and a warm-up-stable-decay schedule at twice the default
# rate. It is what `--max-time` alone trains on a text under SMALL_TEXT_MAX_CHARS characters.
_SMALL_MODEL: dict[str, Any] = {
    "cell": "lstm",
    "hidden": 256,
    "layers": 2,
    "weight_drop": 0.3,
    "dropout_input": 0.1,
    "dropout_hidden": 0.15,
    "dropout_output": 0.1,
}
_SMALL_TRAIN: dict[str, Any] = {"schedule": "wsd", "lr": 0.006}
SMALL_TEXT = Preset(
    "small-text",
    f"a small text within a time budget: LSTM {_SMALL_MODEL['layers']} x "
    f"{_SMALL_MODEL['hidden']} with AWD-LSTM regularisation (weight-drop "
    f"{_SMALL_MODEL['weight_drop']} on W_hh; locked dropout {_SMALL_MODEL['dropout_input']} on "
    f"the input, {_SMALL_MODEL['dropout_hidden']} between the layers, "
    f"{_SMALL_MODEL['dropout_output']} on the output), Adam at {_SMALL_TRAIN['lr']} held until "
    "the last fifth of the budget, then down to 0 as it ends (--schedule wsd)",
    {},
    _SMALL_MODEL,
    _SMALL_TRAIN,
    "Measured best at equal time on texts of 140,000 to 1,000,000 characters (BENCHMARKS.md)",
)

PRESETS: dict[str, Preset] = {
    "d2l": _d2l(
        "d2l",
        "d2l 8.5 RNN from scratch: one-hot, RNN 512, SGD lr 1, clip 1, 500 epochs "
        "on the first 10,000 characters of the Time Machine",
        hidden=512,
        impl="scratch",
    ),
    "d2l-concise": _d2l(
        "d2l-concise",
        "d2l 8.6 concise RNN: nn.RNN(len(vocab), 256), one-hot, SGD lr 1, clip 1, "
        "500 epochs on the first 10,000 characters of the Time Machine",
        hidden=256,
        impl="torch",
    ),
    SMALL_TEXT.name: SMALL_TEXT,
}


# The rule `--max-time` alone follows (BENCHMARKS.md, "Defaults by measurement", round 5): the
# small-text recipe beat the defaults at equal time on every text measured, judged on training
# text, from 140k to 903k training characters (and on tiny Shakespeare's held-out text, 1.0M).
# Beyond a little over the largest text measured nothing is known, so the defaults stay there.
SMALL_TEXT_MAX_CHARS = 1_200_000


def budget_preset(train_chars: int) -> tuple[Preset | None, str]:
    """What a time budget given alone trains on a text of `train_chars` training characters,
    and the rule's sentence (printed, and kept in config.json as `preset_rule`)."""
    size = f"{train_chars:,} training characters"
    if train_chars < SMALL_TEXT_MAX_CHARS:
        return SMALL_TEXT, (
            f"--max-time alone on {size} (under {SMALL_TEXT_MAX_CHARS:,}): the small-text recipe"
        )
    return None, (f"--max-time alone on {size} ({SMALL_TEXT_MAX_CHARS:,} or more): the defaults")


def get_preset(name: str) -> Preset:
    """The preset called `name`; an unknown name is a usage error listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None
