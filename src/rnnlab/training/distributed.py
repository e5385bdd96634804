"""Many processes, one model: torchrun + DistributedDataParallel, with one process's guarantees.

Launched by `torchrun` (or `rnnlab torchrun`), every process ("rank") runs the same command. They
share the model (DDP averages gradients in backward, so every rank takes the same step), the
minibatch generator (every rank draws the same global B windows or streams and keeps rows
[r*B/N, (r+1)*B/N)), and every decision: stopping on a signal or the time budget is all-reduced,
so all ranks stop at the same step boundary; losses and held-out figures are all-reduced as NLL
sums and character counts. Rank 0 alone writes files, after gathering what the others hold (their
rows of the carried state, their RNG streams), so a checkpoint is the one a single process would
write for the global batch, and any number of processes can resume it.

A single process is the world of size 1: every helper here is then a no-op and costs nothing.

Joining the group survives a slow peer. The processes first wait for each other in torchrun's
store (up to `GROUP_TIMEOUT`, 10 minutes, however late a peer starts on a loaded machine), and
only then connect, with a short per-try limit; a try that fails on any rank (gloo's
`connectFullMesh` gives up after three immediate retries of a refused connection) is abandoned
by every rank, and all try again after a back-off. At most `CONNECT_TRIES` tries: under three
minutes (`connect_budget()`, 157.5 s), then one line that names the problem and the fix, exit 2.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d
from torch.nn.parallel import DistributedDataParallel

from rnnlab.errors import RnnlabError, UsageError
from rnnlab.model import RNNLM, State


@dataclass(frozen=True)
class World:
    """Where this process stands among those torchrun started (a single process by default)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    restart: int = 0  # how many times torchrun restarted the group (--max-restarts)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global minibatch of `batch_size` rows."""
        per = batch_size // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


def world_from_env() -> World:
    """The world torchrun describes in the environment (RANK, WORLD_SIZE, ...), else one process."""
    env = os.environ
    return World(
        rank=int(env.get("RANK", 0)),
        size=int(env.get("WORLD_SIZE", 1)),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_size=int(env.get("LOCAL_WORLD_SIZE", 1)),
        restart=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
    )


def backend_for(device: torch.device) -> str:
    """gloo for CPU tensors, nccl for CUDA; Apple's MPS has no collective backend."""
    if device.type == "cuda":
        return "nccl"
    if device.type == "mps":
        raise UsageError(
            "training on several processes needs a collective backend, and mps has none: "
            "run one process on mps, or use --device cpu"
        )
    return "gloo"


GROUP_TIMEOUT = datetime.timedelta(minutes=10)  # a peer's start; later, every collective
# One try at connecting, once all have started. Generous: a try that fails on a loaded machine
# leaves a half-built gloo context behind, which can abort its process when Python exits.
CONNECT_TIMEOUT = datetime.timedelta(seconds=30)
BACKOFF = (0.5, 1.0, 2.0, 4.0)  # seconds between tries
CONNECT_TRIES = len(BACKOFF) + 1


def connect_budget() -> float:
    """The longest the processes spend connecting before they give up, in seconds: every try
    running into its limit, plus the pauses (157.5 s)."""
    return CONNECT_TRIES * CONNECT_TIMEOUT.total_seconds() + sum(BACKOFF)


def setup(world: World, device: torch.device, batch_size: int) -> str | None:
    """Join the process group (once per process); the backend, or None for one process."""
    if not world.distributed:
        return None
    backend = backend_for(device)
    if batch_size % world.size:
        raise UsageError(
            f"--batch-size {batch_size} is the global batch and must divide evenly among "
            f"{world.size} processes: use a multiple of {world.size}"
        )
    if not dist.is_initialized():
        join(world, backend)
    return backend


def join(world: World, backend: str) -> int:
    """Meet the other processes in torchrun's store and connect the group; how many tries it
    took. Refused with one line if the store cannot be reached or the group cannot connect."""
    try:
        store, rank, size = next(dist.rendezvous("env://", timeout=GROUP_TIMEOUT))
    except ValueError as e:  # RANK/WORLD_SIZE set by hand, MASTER_ADDR/PORT missing
        raise UsageError(
            f"WORLD_SIZE={world.size} asks for several processes, but the environment does not "
            f"say where they meet ({first_line(e)}): start them with torchrun or rnnlab torchrun"
        ) from None
    except RuntimeError as e:  # the store's address does not answer (DistError is one)
        raise RnnlabError(
            f"rank {world.rank} could not reach the rendezvous store ({first_line(e)}): check "
            "that MASTER_ADDR/MASTER_PORT (or --rdzv-endpoint) name a machine every process can "
            "reach"
        ) from None
    # A group torchrun restarted (--max-restarts) may meet in the store of the one that
    # failed: its keys would point the new ranks at dead peers. One prefix per attempt.
    store = dist.PrefixStore(f"rnnlab/attempt-{world.restart}/", store)

    def init(try_store: dist.Store, timeout: datetime.timedelta) -> None:
        dist.init_process_group(
            backend, store=try_store, rank=rank, world_size=size, timeout=timeout
        )

    tries = connect(store, rank, size, init)
    # Connecting had a short limit so that a failed try frees its peers quickly; collectives
    # get the long one back (rank 0 may write a checkpoint while the others wait).
    c10d._set_pg_timeout(GROUP_TIMEOUT)
    return tries


def leave_group() -> None:
    """Forget a group this process joined, or failed to join, before trying again. A failed
    `init_process_group` still counted a group; torch names the next group by that count, and
    every rank must name it alike (a rank whose try succeeded resets it when it leaves)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    c10d._world.group_count = 0


def connect(
    store: dist.Store,
    rank: int,
    size: int,
    init: Callable[[dist.Store, datetime.timedelta], None],
    leave: Callable[[], None] = leave_group,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run `init` (connect the group) on every rank until every rank succeeds in the same try;
    how many tries it took.

    Each try: all ranks meet in `store` (waiting up to `GROUP_TIMEOUT` for one that starts late),
    call `init` with a try-private store and `CONNECT_TIMEOUT`, and post the outcome; if any rank
    failed, every rank leaves the group (or what is left of it) and, after `BACKOFF[k]` seconds,
    tries again. All ranks read the same outcomes, so they retry or give up together: at most
    `connect_budget()` seconds (under three minutes), then one `RnnlabError` line, exit 2.
    """
    failures: list[str] = []
    began = time.monotonic()
    for k in range(CONNECT_TRIES):
        if k:
            leave()
            sleep(BACKOFF[k - 1])
        _meet(store, f"try-{k}/started", rank, size)
        try:
            init(dist.PrefixStore(f"try-{k}/group/", store), CONNECT_TIMEOUT)
            outcome = "ok"
        except RuntimeError as e:  # gloo's connect errors, store timeouts (DistError)
            outcome = first_line(e) or type(e).__name__
        store.set(f"try-{k}/outcome/{rank}", outcome)
        keys = [f"try-{k}/outcome/{r}" for r in range(size)]
        store.wait(keys, GROUP_TIMEOUT)
        outcomes = [store.get(key).decode() for key in keys]
        failed = [(r, why) for r, why in enumerate(outcomes) if why != "ok"]
        if not failed:
            return k + 1
        failures.append(f"rank {failed[0][0]}: {failed[0][1]}")
    leave()
    raise RnnlabError(
        f"the {size} processes could not connect to each other in {CONNECT_TRIES} tries over "
        f"{time.monotonic() - began:.0f} s ({failures[-1]}): check that every machine can reach "
        "the others (firewall, GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME), or relaunch when the "
        "machine is less loaded"
    )


def _meet(store: dist.Store, key: str, rank: int, size: int) -> None:
    """Wait in `store` until all `size` ranks arrived at `key` (up to `GROUP_TIMEOUT`)."""
    if store.add(f"{key}/count", 1) == size:
        store.set(f"{key}/all", "1")
    try:
        store.wait([f"{key}/all"], GROUP_TIMEOUT)
    except RuntimeError:
        arrived = store.add(f"{key}/count", 0)
        raise RnnlabError(
            f"rank {rank}: only {arrived} of {size} processes started within "
            f"{GROUP_TIMEOUT.total_seconds() / 60:.0f} minutes: check that every launcher was "
            "started with the same --nnodes/--nproc-per-node and rendezvous id"
        ) from None


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of a torch error (gloo's and the store's say what failed there), at most
    `limit` characters."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:limit] if lines else ""


def local_device(device: torch.device, world: World) -> torch.device:
    """One GPU per process on a node: `cuda` becomes `cuda:LOCAL_RANK`."""
    if device.type == "cuda" and world.distributed and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device


def default_threads(world: World) -> int:
    """Torch threads per rank when the user set none: the cores shared among local ranks (two
    ranks of two threads on two cores run 60x slower than two ranks of one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // world.local_size)


class DistributedLM(DistributedDataParallel):
    """DDP around an `RNNLM` that still answers what the training step asks of a model."""

    module: RNNLM

    @property
    def vocab_size(self) -> int:
        return self.module.vocab_size

    def begin_state(self, batch_size: int) -> State:
        return self.module.begin_state(batch_size)


def wrap(model: RNNLM, world: World, device: torch.device) -> RNNLM | DistributedLM:
    """The model every rank trains: DDP broadcasts rank 0's initial weights to the others."""
    if not world.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedLM(model, device_ids=ids)


def all_reduce(values: list[float], world: World, op: str = "sum") -> list[float]:
    """Sum (or max) a few numbers over all ranks; the values themselves for one process."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist()


def gather_rows(state: torch.Tensor, world: World) -> torch.Tensor:
    """The global (L, B, H) state from each rank's (L, B/N, H) rows, in rank order."""
    if not world.distributed:
        return state
    parts = [torch.empty_like(state) for _ in range(world.size)]
    dist.all_gather(parts, state.contiguous())
    return torch.cat(parts, dim=1)


def gather_stack(t: torch.Tensor, world: World) -> torch.Tensor:
    """(N, ...) from each rank's tensor of the same shape (an RNG state, say), on the CPU."""
    if not world.distributed:
        return t[None]
    if dist.get_backend() == "nccl":  # nccl moves CUDA tensors only
        t = t.cuda()
    parts = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(parts, t.contiguous())
    return torch.stack(parts).cpu()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_object(obj: object, world: World) -> object:
    """Rank 0's `obj` on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(clean: bool = True) -> None:
    """Leave the process group. After a clean finish the ranks first meet, so none tears its
    connections down while another still uses them; after a failure a peer may be gone."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def on_main(world: World, action: Callable[[], None]) -> None:
    """Run `action` on rank 0 only (claiming the run directory, say); if it refuses with an
    `RnnlabError`, every rank raises the same one-line error, so all stop together."""
    failure: tuple[int, str] | None = None
    if world.is_main:
        try:
            action()
        except RnnlabError as e:
            if not world.distributed:
                raise
            failure = (e.exit_code, str(e))
    failure = broadcast_object(failure, world)  # type: ignore[assignment]
    if failure is not None:
        error = RnnlabError(failure[1])
        error.exit_code = failure[0]
        raise error
