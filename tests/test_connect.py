"""Joining a process group survives a slow peer: the retry loop of `distributed.connect`.

The loop is tested with ranks as threads sharing one in-memory store and a fake `init` (fast);
then for real, under torchrun with gloo, with a peer that starts late and a try that fails on
one rank only, and with a group that never connects (slow: each launches torchrun).
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from rnnlab import checkpoint as ckpt
from rnnlab.errors import RnnlabError
from rnnlab.training import distributed
from tinyrun import write_corpus

REFUSED = "Gloo connectFullMesh failed with [pair.cc:144] connect: Connection refused"


class Rank:
    """One fake rank: its `init` fails its first `failures` tries; what it was asked is kept."""

    def __init__(self, failures: int, start_after: float = 0.0) -> None:
        self.failures, self.start_after = failures, start_after
        self.inits: list[float] = []  # when each try's init ran
        self.leaves = 0
        self.sleeps: list[float] = []

    def init(self, store: dist.Store, timeout: datetime.timedelta) -> None:
        assert timeout == distributed.CONNECT_TIMEOUT
        self.inits.append(time.monotonic())
        if len(self.inits) <= self.failures:
            raise RuntimeError(REFUSED)

    def leave(self) -> None:
        self.leaves += 1


def run_ranks(ranks: list[Rank]) -> list[int | BaseException]:
    """`connect` on every rank at once (threads, one store); each rank's tries or error."""
    store = dist.HashStore()
    results: list[int | BaseException] = [0] * len(ranks)

    def go(r: int) -> None:
        time.sleep(ranks[r].start_after)
        try:
            results[r] = distributed.connect(
                store, r, len(ranks), ranks[r].init, ranks[r].leave, ranks[r].sleeps.append
            )
        except BaseException as e:  # noqa: BLE001 - handed to the test
            results[r] = e

    threads = [threading.Thread(target=go, args=(r,), daemon=True) for r in range(len(ranks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a rank is stuck"
    return results


def test_the_back_off_is_bounded_to_about_a_minute():
    assert distributed.CONNECT_TRIES == 5
    assert distributed.connect_budget() == 157.5 <= 160


def test_a_try_that_fails_on_one_rank_is_tried_again_by_every_rank():
    """Rank 0's connection is refused twice; rank 1 connected each time, yet leaves and tries
    again with it (a group with one rank missing would hang at its first collective)."""
    ranks = [Rank(failures=2), Rank(failures=0)]
    assert run_ranks(ranks) == [3, 3]
    for rank in ranks:
        assert len(rank.inits) == 3
        assert rank.leaves == 2
        assert rank.sleeps == [0.5, 1.0]


def test_connecting_starts_when_the_last_peer_has_started():
    """A peer that starts late is waited for (up to GROUP_TIMEOUT): the first try's short
    limit starts only once every rank is there, so no try is lost to a slow start."""
    ranks = [Rank(failures=0), Rank(failures=0, start_after=0.5)]
    started = time.monotonic()
    assert run_ranks(ranks) == [1, 1]
    assert ranks[0].inits[0] - started >= 0.5
    assert ranks[0].leaves == ranks[1].leaves == 0


def test_a_group_that_never_connects_gives_up_with_one_line():
    ranks = [Rank(failures=99), Rank(failures=0)]
    results = run_ranks(ranks)
    for rank, error in zip(ranks, results, strict=True):
        assert isinstance(error, RnnlabError) and error.exit_code == 2
        assert re.sub(r"over \d+ s", "over N s", str(error)) == (
            "the 2 processes could not connect to each other in 5 tries over N s "
            f"(rank 0: {REFUSED}): check that every machine can reach the others (firewall, "
            "GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME), or relaunch when the machine is less "
            "loaded"
        )
        assert len(rank.inits) == distributed.CONNECT_TRIES
        assert sum(rank.sleeps) == sum(distributed.BACKOFF)


def test_a_process_started_by_hand_without_an_address_is_refused(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RnnlabError, match=r"^WORLD_SIZE=2 asks for several processes") as e:
        distributed.join(distributed.world_from_env(), "gloo")
    assert e.value.exit_code == 2
    assert "MASTER_ADDR" in str(e.value) and "\n" not in str(e.value)


# Under torchrun: a wrapper that changes `rnnlab.training.distributed` (or torch) as a test
# asks, then runs `rnnlab.cli.main` on its arguments, as `-m rnnlab` would.
WRAPPER = """
import os, sys, time
import torch.distributed as dist
from rnnlab.cli import main
from rnnlab.training import distributed

rank = int(os.environ["RANK"])
{patch}
sys.exit(main(sys.argv[1:]))
"""

# Rank 1 starts 3 s late, past a connect limit of 1 s. In its first try it connects, then leaves
# and fails a real `init_process_group` (torch counts a group for it all the same): rank 0
# succeeded, rank 1 failed, and both must leave, name their next group alike and connect again.
LATE_AND_FAILED_ONCE = """
second = distributed.datetime.timedelta(seconds=1)
distributed.CONNECT_TIMEOUT = second
real_init, real_connect, calls = dist.init_process_group, distributed.connect, []

def init_process_group(*args, **kwargs):
    real_init(*args, **kwargs)
    calls.append(1)
    if rank == 1 and len(calls) == 1:
        dist.destroy_process_group()
        real_init("gloo", store=dist.HashStore(), rank=1, world_size=2, timeout=second / 10)

def connect(*args, **kwargs):
    tries = real_connect(*args, **kwargs)
    print(f"rank {rank} connected in {tries} tries", file=sys.stderr)
    return tries

dist.init_process_group, distributed.connect = init_process_group, connect
if rank == 1:
    time.sleep(3)
"""

NEVER = f"""
distributed.BACKOFF = (0.01, 0.01, 0.01, 0.01)

def init_process_group(*args, **kwargs):
    raise RuntimeError({REFUSED!r})

dist.init_process_group = init_process_group
"""


def launch(tmp_path: Path, patch: str, *train: str) -> subprocess.CompletedProcess:
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER.format(patch=patch), encoding="utf-8")
    corpus = write_corpus(tmp_path)
    cmd = [sys.executable, "-m", "rnnlab", "torchrun", "--standalone", "--nproc-per-node", "2"]
    cmd += [str(wrapper), "train", "--corpus", str(corpus), "--hidden", "16", "--batch-size"]
    cmd += ["4", "--num-steps", "8", "--quiet", "--threads", "1", *train]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_a_late_peer_and_a_failed_try_still_train_under_torchrun(tmp_path):
    out = tmp_path / "run"
    proc = launch(tmp_path, LATE_AND_FAILED_ONCE, "--max-steps", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "rank 0 connected in 2 tries" in proc.stderr
    assert "rank 1 connected in 2 tries" in proc.stderr
    assert len((out / ckpt.STEPS).read_text().splitlines()) == 1 + 4
    assert ckpt.read_json(out, ckpt.CONFIG)["runtime"]["world_size"] == 2


@pytest.mark.slow
def test_a_group_that_never_connects_exits_2_with_one_line(tmp_path):
    proc = launch(tmp_path, NEVER, "--max-steps", "4", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, proc.stderr
    assert re.fullmatch(
        r"error: the 2 processes could not connect to each other in 5 tries over \d+ s "
        r"\(rank 0: Gloo connectFullMesh failed with .*Connection refused\): check that every "
        r"machine can reach the others .*",
        errors[0],
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


@pytest.mark.slow
def test_launchers_that_never_meet_exit_2_with_one_line(tmp_path):
    """`--nnodes 2` with one launcher started: torchrun's rendezvous times out (2 s here) and
    `rnnlab torchrun` says so in one line, exit 2, where torchrun ends in a traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "rnnlab", "torchrun", "--nnodes", "2", "--nproc-per-node", "1"]
    cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "x"]
    cmd += ["--rdzv-conf", "join_timeout=2", "-m", "rnnlab", "train", "--corpus", "timemachine"]
    cmd += ["--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: rnnlab torchrun: the launchers did not meet at the rendezvous "
        "(RendezvousTimeoutError): start the same command on all --nnodes machines, with one "
        "--rdzv-id and an --rdzv-endpoint they all reach, within --rdzv-conf join_timeout "
        "(600 s by default)"
    ]
    assert not (tmp_path / "run").exists()
