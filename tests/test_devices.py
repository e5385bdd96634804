"""Device plumbing without a GPU: --device everywhere, refusals, device-free checkpoints, AMP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rnnlab import checkpoint as ckpt
from rnnlab.cli import main
from rnnlab.corpus import DataConfig
from rnnlab.data import prepare_data
from rnnlab.devices import available, resolve_device
from rnnlab.errors import UsageError
from rnnlab.model import ModelConfig
from rnnlab.training import LanguageModelRecipe, TrainConfig, Trainer, load_run, open_run
from rnnlab.training.distributed import World, backend_for
from rnnlab.training.precision import Precision, resolve_precision, runnable
from rnnlab.training.runtime import Runtime, model_for_device
from tinyrun import write_corpus

TINY = ["--hidden", "16", "--batch-size", "4", "--num-steps", "8", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("runs") / "r"
    args = ["train", "--corpus", str(corpus), "--out", str(out), "--epochs", "1", "--device", "cpu"]
    assert main([*args, *TINY]) == 0
    return out


def test_auto_is_the_cpu_on_a_machine_without_an_accelerator():
    assert resolve_device("auto") == torch.device("cpu")
    assert available()[0] == "cpu"


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_a_missing_device_is_refused_naming_what_is_there(name):
    if name in available():
        pytest.skip(f"{name} is present on this machine")
    with pytest.raises(
        UsageError, match=f"--device {name} is not available on this machine: available: cpu"
    ):
        resolve_device(name)


def test_a_malformed_device_is_refused():
    with pytest.raises(UsageError, match="unknown --device 'gpu'"):
        resolve_device("gpu")


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--corpus", "alphabet", "--epochs", "1"],
        ["check", "--corpus", "alphabet"],
    ],
)
def test_every_command_refuses_a_missing_device_with_exit_2(command, capsys, tmp_path):
    if "cuda" in available():
        pytest.skip("this machine has CUDA")
    assert (
        main(
            [
                *command,
                "--device",
                "cuda",
                "--out" if command[0] == "train" else "--seed",
                str(tmp_path / "r") if command[0] == "train" else "0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --device cuda is not available on this machine: available: cpu"]


def test_commands_on_a_run_take_device_cpu(run, capsys):
    assert main(["predict", str(run), "--prefix", "the", "--device", "cpu", "--json"]) == 0
    assert main(["evaluate", str(run), "--device", "cpu", "--json"]) == 0
    assert main(["score", str(run), "the cat", "--device", "cpu", "--json"]) == 0
    assert main(["check", "--corpus", "alphabet", "--device", "cpu"]) == 0
    if "cuda" not in available():
        assert main(["predict", str(run), "--prefix", "the", "--device", "cuda"]) == 2
    capsys.readouterr()


def test_checkpoint_files_name_no_device(run):
    """A run trained on any device loads on any other: nothing in a checkpoint names one."""
    for _, path in ckpt.list_checkpoints(run):
        for name in ckpt.CHECKPOINT_FILES:
            data = (path / name).read_bytes()
            if name == ckpt.TRAINER:  # the torch build ("2.13.0+cpu") is not a device
                trainer = json.loads(data)
                trainer.pop("torch_version")
                data = json.dumps(trainer).encode()
            for device in (b"cpu", b"cuda", b"mps"):
                assert device not in data, f"{name} names {device!r}"
    tensors = ckpt.read_tensors(ckpt.list_checkpoints(run)[-1][1], ckpt.WEIGHTS)
    assert all(t.device.type == "cpu" for t in tensors.values())
    # How the run was trained is recorded once, in config.json, for the reader.
    runtime = json.loads((run / ckpt.CONFIG).read_text())["runtime"]
    assert runtime == {
        "device": "cpu", "precision": "fp32", "tf32": False, "deterministic": False,
        "world_size": 1, "backend": None, "rows_per_rank": 4,
    }  # fmt: skip


def test_a_cpu_run_loads_onto_another_device_object(run):
    loaded = load_run(run, device=torch.device("cpu"))
    assert next(loaded.model.parameters()).device.type == "cpu"


def test_impl_fast_on_an_accelerator_says_so_and_takes_torch():
    said = []
    config = model_for_device(ModelConfig(impl="fast"), torch.device("cuda"), said.append)
    assert config.impl == "torch" and "CPU kernel" in said[0] and "cuDNN" in said[0]
    assert (
        model_for_device(ModelConfig(impl="fast"), torch.device("cpu"), said.append).impl == "fast"
    )


def test_mps_has_no_collective_backend_for_several_processes():
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda")) == "nccl"
    with pytest.raises(UsageError, match="mps has none"):
        backend_for(torch.device("mps"))


def test_rows_of_the_global_batch():
    assert World().rows(32) == slice(0, 32)
    assert World(rank=1, size=4).rows(32) == slice(8, 16)


def test_precision_choices(corpus, tmp_path, capsys):
    assert resolve_precision("fp32", torch.device("cpu")).scaler is None
    with pytest.raises(UsageError, match="--precision fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(UsageError, match="unknown --precision"):
        resolve_precision("fp8", torch.device("cpu"))
    args = ["train", "--corpus", str(corpus), *TINY, "--epochs", "1"]
    assert main([*args, "--tf32", "--out", str(tmp_path / "t")]) == 2
    assert "--tf32 applies to NVIDIA GPUs only" in capsys.readouterr().err


def test_bf16_autocast_trains_on_the_cpu_and_is_recorded(corpus, tmp_path):
    if "bf16" not in runnable(torch.device("cpu"), "gru"):  # probe, never assume, the CPU
        pytest.skip("this CPU cannot train a GRU in bf16")
    out = tmp_path / "bf16"
    args = ["train", "--corpus", str(corpus), *TINY, "--epochs", "1", "--precision", "bf16"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads((out / ckpt.CONFIG).read_text())["runtime"]["precision"] == "bf16"
    fp32 = tmp_path / "fp32"
    assert main(["train", "--corpus", str(corpus), *TINY, "--epochs", "1", "--out", str(fp32)]) == 0
    a = (out / ckpt.STEPS).read_text().splitlines()[1:]
    b = (fp32 / ckpt.STEPS).read_text().splitlines()[1:]
    assert a != b  # autocast really ran: bf16 products differ from fp32 ones
    losses = [float(r.split(",")[2]) for r in a], [float(r.split(",")[2]) for r in b]
    assert losses[0] == pytest.approx(losses[1], rel=0.05)  # and the model learns the same


def fp16_trainer(corpus: Path, run_dir: Path, epochs: int, resume: bool = False) -> Trainer:
    """A Trainer with an fp16 GradScaler on the CPU (the CLI keeps fp16 for GPUs, but the
    scaler's bookkeeping is the same everywhere, and GRU autocasts to fp16 on the CPU)."""
    data = prepare_data(DataConfig(corpus=str(corpus)))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    runtime = Runtime(precision=Precision("fp16", "cpu", scaler))
    train = TrainConfig(batch_size=4, num_steps=8, epochs=epochs, save_every=7)
    model = ModelConfig(hidden=16, layers=1, dropout=0.0)
    recipe = LanguageModelRecipe(DataConfig(corpus=str(corpus)), model, train, data)
    return open_run(recipe, run_dir, resume=resume, runtime=runtime, log=lambda s: None)


def test_fp16_grad_scaler_state_is_checkpointed_so_resume_is_exact(corpus, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    fp16_trainer(corpus, straight, epochs=2).fit()
    fp16_trainer(corpus, resumed, epochs=1).fit()
    newest = ckpt.list_checkpoints(resumed)[-1][1]
    scaler = json.loads((newest / ckpt.TRAINER).read_text())["grad_scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler
    trainer = fp16_trainer(corpus, resumed, epochs=2, resume=True)
    trainer.resume()
    assert trainer.runtime.precision.scaler.get_scale() == scaler["scale"]
    trainer.fit()
    a, b = (
        ckpt.read_tensors(ckpt.list_checkpoints(r)[-1][1], ckpt.WEIGHTS)
        for r in (straight, resumed)
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (straight / ckpt.STEPS).read_text() == (resumed / ckpt.STEPS).read_text()
