"""Many processes (torchrun + DDP, gloo, 2 processes x 1 thread): the one-process guarantees.

Each test launches real torchrun groups on loopback, so the module is marked slow; CI runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnlab import checkpoint as ckpt
from rnnlab.training import load_run

pytestmark = pytest.mark.slow

WORDS = "the cat sat on a mat and a dog ran to the log with a big red hat".split()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# docs/scaling-out.md's one-machine command
TORCHRUN = ["torchrun", "--standalone", "--nproc-per-node"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(len(WORDS), (6000,), generator=gen).tolist()
    f = tmp_path_factory.mktemp("data") / "words.txt"
    f.write_text(" ".join(WORDS[i] for i in picks), encoding="utf-8")
    return f


def command(corpus: Path, out: Path, *flags: str, nproc: int = 0, launcher=()) -> list[str]:
    """`rnnlab train ...`, or the same under `rnnlab torchrun` with `nproc` processes."""
    train = ["train", "--corpus", str(corpus), "--out", str(out), "--hidden", "32"]
    train += ["--batch-size", "8", "--num-steps", "16", "--dropout", "0", "--quiet"]
    train += ["--threads", "1", *flags]
    if not nproc:
        return [sys.executable, "-m", "rnnlab", *train]
    return [
        sys.executable,
        "-m",
        "rnnlab",
        *TORCHRUN,
        str(nproc),
        *launcher,
        "-m",
        "rnnlab",
        *train,
    ]


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a command once: a group slow to connect on a loaded machine retries inside rnnlab
    (`distributed.connect`, tests/test_connect.py), so no test relaunches one."""
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def steps(out: Path) -> list[tuple[int, float, float]]:
    rows = (out / ckpt.STEPS).read_text().splitlines()[1:]
    return [(int(r.split(",")[0]), float(r.split(",")[2]), float(r.split(",")[3])) for r in rows]


def newest_weights(out: Path) -> dict[str, torch.Tensor]:
    return ckpt.read_tensors(ckpt.list_checkpoints(out)[-1][1], ckpt.WEIGHTS)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = newest_weights(a), newest_weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def wait_for_checkpoint(out: Path, step: int, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done = [s for s, _ in ckpt.list_checkpoints(out)] if out.exists() else []
        if done and max(done) >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {step} in {limit} s")


def worker_pid(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker process of `rank` (a descendant of the launcher)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"LOCAL_RANK=" + str(rank).encode() in environ:
            ppid = int(stat[1])
            if ppid == launcher or _is_descendant(ppid, launcher):
                return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under {launcher}")


def _is_descendant(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return False


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_two_processes_train_the_one_process_model(corpus, tmp_path, sampling):
    """The same command, same global batch: the same per-step losses and gradient norms within
    fp32 tolerance for 24 steps, and DDP(2) twice gives identical results."""
    flags = ["--sampling", sampling, "--max-steps", "24", "--epochs", "1"]
    one, two, again = tmp_path / "one", tmp_path / "two", tmp_path / "again"
    assert run(command(corpus, one, *flags)).returncode == 0
    for out in (two, again):
        proc = run(command(corpus, out, *flags, nproc=2))
        assert proc.returncode == 0, proc.stderr
    a, b = steps(one), steps(two)
    assert len(a) == len(b) == 24
    for (s1, loss1, norm1), (s2, loss2, norm2) in zip(a, b, strict=True):
        assert s1 == s2
        assert loss2 == pytest.approx(loss1, rel=1e-5, abs=1e-6)
        assert norm2 == pytest.approx(norm1, rel=1e-4, abs=1e-6)
    wa, wb = newest_weights(one), newest_weights(two)
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5) for k in wa)
    assert (two / ckpt.STEPS).read_text() == (again / ckpt.STEPS).read_text()
    assert same_weights(two, again)
    runtime = json.loads((two / ckpt.CONFIG).read_text())["runtime"]
    assert runtime["world_size"] == 2 and runtime["backend"] == "gloo"
    assert runtime["rows_per_rank"] == 4
    # A run trained on two processes loads in one: the same prediction as the one-process run's.
    predict = [sys.executable, "-m", "rnnlab", "predict", "--prefix", "the ca", "--json"]
    a, b = (json.loads(run([*predict, str(r)]).stdout.splitlines()[-1]) for r in (one, two))
    assert b["next"][0]["char"] == a["next"][0]["char"]
    assert b["next"][0]["prob"] == pytest.approx(a["next"][0]["prob"], rel=1e-3)


def test_a_global_batch_the_processes_cannot_share_is_refused(corpus, tmp_path):
    proc = run(command(corpus, tmp_path / "r", "--batch-size", "7", "--epochs", "1", nproc=2))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert errors == [
        "error: --batch-size 7 is the global batch and must divide evenly among 2 processes: "
        "use a multiple of 2"
    ]
    assert "Traceback" not in proc.stderr


def test_the_error_line_survives_rank_0_being_stopped_before_it_could_print(corpus, tmp_path):
    """The first process to fail makes torchrun stop the others: rank 0, slower to reach the
    same mistake, was stopped before printing it (a CI run saw exit 2 and no line). The line
    travels through torchrun's reply file and the launcher prints it once."""
    slow = tmp_path / "slow_rank_0.py"
    slow.write_text(
        "import os, sys, time\n"
        "from rnnlab.cli import main\n"
        "if os.environ['RANK'] == '0':\n"
        "    time.sleep(60)\n"
        "sys.exit(main(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    train = command(corpus, tmp_path / "r", "--batch-size", "7", "--epochs", "1")[3:]
    proc = run([sys.executable, "-m", "rnnlab", *TORCHRUN, "2", str(slow), *train], timeout=50)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert errors == [
        "error: --batch-size 7 is the global batch and must divide evenly among 2 processes: "
        "use a multiple of 2"
    ]
    assert not (tmp_path / "r").exists()


def test_sigterm_to_the_launcher_saves_once_and_resumes(corpus, tmp_path):
    """SIGTERM to the launcher: every rank stops at the same step, one checkpoint, exit 143;
    resuming on 2 processes is exact, on 1 it continues (re-sliced, warned)."""
    flags = ["--epochs", "2", "--max-steps", "180", "--save-every", "20"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run(command(corpus, straight, *flags, nproc=2)).returncode == 0
    proc = subprocess.Popen(
        command(corpus, stopped, *flags, nproc=2), env=ENV, stderr=subprocess.PIPE, text=True
    )
    wait_for_checkpoint(stopped, 40, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert len([line for line in err.splitlines() if line.startswith("stopped by SIGTERM")]) == 1
    assert "Traceback" not in err
    newest = ckpt.list_checkpoints(stopped)[-1]
    assert newest[0] < 180
    assert load_run(newest[1]).model is not None  # a complete, loadable checkpoint
    one = tmp_path / "one"
    shutil.copytree(stopped, one)
    proc = run(command(corpus, stopped, *flags, "--resume", nproc=2))
    assert proc.returncode == 0, proc.stderr
    assert same_weights(straight, stopped)
    assert steps(straight) == steps(stopped)
    proc = run(command(corpus, one, *flags, "--resume"))  # one process
    assert proc.returncode == 0, proc.stderr
    assert "resuming a run of 2 process(es) with 1" in proc.stderr
    assert steps(one)[-1][0] == 180


def test_a_killed_rank_restarts_the_group_which_ends_as_if_never_interrupted(corpus, tmp_path):
    """--max-restarts 1: SIGKILL one rank mid-run; torchrun restarts the group with the same
    command line, it resumes from the newest complete checkpoint, and the final weights and
    per-step losses equal an uninterrupted run's."""
    flags = ["--epochs", "2", "--max-steps", "160", "--save-every", "20"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    restarts = ["--max-restarts", "1"]
    assert run(command(corpus, straight, *flags, nproc=2, launcher=restarts)).returncode == 0
    proc = subprocess.Popen(
        command(corpus, killed, *flags, nproc=2, launcher=restarts),
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_checkpoint(killed, 40, proc)
    os.kill(worker_pid(proc.pid, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert same_weights(straight, killed)
    assert steps(straight) == steps(killed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_listener(port: int, proc: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {limit} s")


def test_two_machines_meet_through_the_c10d_rendezvous(corpus, tmp_path):
    """docs/scaling-out.md's several-machines command, on loopback: two plain `torchrun` launchers
    (`--nnodes 2`, one process each) meet at a c10d endpoint and train the one-process model."""
    flags = ["--max-steps", "24", "--epochs", "1"]
    one, nodes = tmp_path / "one", tmp_path / "nodes"
    assert run(command(corpus, one, *flags)).returncode == 0
    port = free_port()
    launcher = ["--nnodes", "2", "--rdzv-backend", "c10d"]
    launcher += ["--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes"]
    cmd = command(corpus, nodes, *flags, nproc=1)
    # PyTorch's own `torchrun` executable, exactly as docs/scaling-out.md writes the command.
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, *launcher] + cmd[cmd.index("torchrun") + 2 :]
    assert "--standalone" not in cmd and cmd.count("--nproc-per-node") == 1
    procs = []
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
        # On real machines only the first one's address is the endpoint, so only it hosts the
        # rendezvous store; here both are 127.0.0.1: let the first bind it before the second asks.
        wait_for_listener(port, procs[0])
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    assert json.loads((nodes / ckpt.CONFIG).read_text())["runtime"]["world_size"] == 2
    for (s1, loss1, _), (s2, loss2, _) in zip(steps(one), steps(nodes), strict=True):
        assert s1 == s2 and loss2 == pytest.approx(loss1, rel=1e-5, abs=1e-6)
