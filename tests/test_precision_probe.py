"""A precision the device cannot run is refused up front, by asking the device (a probe).

No test here assumes what this CPU runs: the failing device is a monkeypatched probe, and the
real probe is only checked for what it must be whatever the answer (cached, RNG untouched,
consistent with `resolve_precision`).
"""

from __future__ import annotations

import pytest
import torch

from rnnlab.cli import main
from rnnlab.errors import UsageError
from rnnlab.model import CELLS
from rnnlab.training import precision
from rnnlab.training.precision import probe, resolve_precision, runnable
from tinyrun import write_corpus

CPU = torch.device("cpu")
ONEDNN = "could not create a primitive descriptor for the LSTM forward propagation primitive"


@pytest.fixture
def no_bf16_lstm(monkeypatch):
    """A CPU like an AMD EPYC without native bf16 kernels: oneDNN builds no bf16 LSTM."""

    def fake(name: str, device: torch.device, cell: str, impl: str = "torch") -> str | None:
        return ONEDNN if (name, cell) == ("bf16", "lstm") else None

    monkeypatch.setattr(precision, "probe", fake)


def test_train_refuses_bf16_on_a_cpu_without_a_bf16_lstm_in_one_line(
    no_bf16_lstm, tmp_path, capsys
):
    corpus, out = write_corpus(tmp_path), tmp_path / "run"
    args = ["train", "--corpus", str(corpus), "--out", str(out), "--cell", "lstm"]
    args += ["--precision", "bf16", "--hidden", "16", "--batch-size", "4", "--num-steps", "8"]
    assert main([*args, "--quiet", "--threads", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: --precision bf16 cannot train --cell lstm on this cpu ({ONEDNN}): use "
        "--precision fp32, or bf16 with --cell rnn or gru"
    ]
    assert not out.exists()  # refused before the run directory was made


def test_the_refusal_names_the_core_and_what_else_runs(no_bf16_lstm):
    with pytest.raises(UsageError) as e:
        resolve_precision("bf16", CPU, "lstm", "scratch")
    assert str(e.value).startswith("--precision bf16 cannot train --cell lstm --impl scratch ")
    assert resolve_precision("bf16", CPU, "gru").name == "bf16"  # the other cells still run
    assert runnable(CPU, "lstm") == ["fp32"]
    assert runnable(CPU, "gru") == ["fp32", "bf16"]  # fp16 needs a GPU, whatever it probes


def test_the_probe_explains_a_kernel_error_in_a_few_words(monkeypatch):
    class Broken(torch.nn.Module):
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError(
                f"The following operation failed in the TorchScript interpreter.\n"
                f"Traceback of TorchScript (most recent call last):\n  File x, line 1\n"
                f"RuntimeError: {ONEDNN}. Run workload with environment variable "
                f"ONEDNN_VERBOSE=all to get additional diagnostic information."
            )

    monkeypatch.setattr(precision, "RNNLM", Broken)
    assert probe.__wrapped__("bf16", CPU, "lstm") == ONEDNN


def test_the_real_probe_is_cached_leaves_the_rng_alone_and_decides_resolve_precision():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    answers = {cell: probe("bf16", CPU, cell) for cell in CELLS}
    assert torch.equal(torch.get_rng_state(), before)  # seeded runs start from the same weights
    assert all(probe("bf16", CPU, cell) is answers[cell] for cell in CELLS)  # once a process
    assert probe("fp32", CPU, "lstm") is None
    for cell, why in answers.items():
        assert why is None or (why and "\n" not in why)
        if why is None:
            assert resolve_precision("bf16", CPU, cell).name == "bf16"
        else:
            with pytest.raises(UsageError, match="cannot train"):
                resolve_precision("bf16", CPU, cell)


def test_without_a_cell_every_cell_is_probed(no_bf16_lstm):
    """What `setup_runtime` asks today (it does not pass the model's cell yet)."""
    with pytest.raises(UsageError, match="cannot train --cell lstm"):
        resolve_precision("bf16", CPU)
