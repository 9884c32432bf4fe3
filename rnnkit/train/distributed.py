"""Multi-process data-parallel training (``torchrun ... -m rnnkit train``).

torchrun starts one process per rank and tells it where it stands through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR/PORT``).
:func:`setup` reads it, joins the process group (gloo on CPU, NCCL on CUDA) and sets the
torch threads of each process to its share of the node's cores. The model is wrapped in
:class:`torch.nn.parallel.DistributedDataParallel`, which averages the gradients of the
ranks after each backward pass.

The B truncated-BPTT streams of the single-process run are split into N contiguous
shards: rank r trains on streams [r·B/N, (r+1)·B/N) of the *same* stream layout. Each rank's
loss is the mean over its B/N streams, so the mean of the N rank losses (and of their
gradients, which is what DDP computes) is the loss of the whole batch, and the run follows
the trajectory of the single-process run with batch B up to floating-point rounding.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import CheckpointError, DataError, TrainingError

log = logging.getLogger(__name__)
T = TypeVar("T")

_ERRORS: dict[str, type[Exception]] = {e.__name__: e for e in (
    ValueError, TypeError, CheckpointError, DataError, TrainingError, FileNotFoundError, OSError)}


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a torchrun job (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items: [⌊r·n/N⌋, ⌊(r+1)·n/N⌋)."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DistEnv:
        """Read torchrun's variables; without ``WORLD_SIZE`` this is a single process."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            world = int(env["WORLD_SIZE"])
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        except ValueError as e:
            raise ValueError(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}") from None
        if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < local_world):
            raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
                             f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}")
        return cls(rank, world, local_rank, local_world)


_current = DistEnv()
_joined = False  # whether this process has ever joined a process group


def joined_process_group() -> bool:
    """Whether :func:`setup` joined a torchrun process group in this process (even if it
    has left it since)."""
    return _joined


def current() -> DistEnv:
    """The environment set up by :func:`setup` (rank 0 of 1 outside torchrun)."""
    return _current


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def setup(device: str | torch.device = "cpu", env: DistEnv | None = None) -> tuple[DistEnv, torch.device]:
    """Join the torchrun process group if there is one; returns the env and this rank's device.

    The backend is NCCL when ``device`` is CUDA (each rank takes ``cuda:LOCAL_RANK``) and gloo
    otherwise. On CPU each process gets ⌊cores / LOCAL_WORLD_SIZE⌋ torch threads (torchrun's
    default of ``OMP_NUM_THREADS=1`` would leave most cores of a large node idle), or
    ``RNNKIT_THREADS`` when that is set.
    """
    global _current, _joined
    env = env or DistEnv.from_env()
    device = torch.device(device)
    if not env.enabled:
        _current = env
        return env, device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was given but CUDA is not available")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
        threads = os.environ.get("RNNKIT_THREADS")
        if threads is not None and not (threads.isdigit() and int(threads) > 0):
            raise ValueError(f"RNNKIT_THREADS must be a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads) if threads else max(1, _cpu_count() // env.local_world_size))
    else:
        raise ValueError(f"distributed training runs on cpu or cuda devices, got {device}")
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
        _joined = True
    _current = env
    log.info("rank %d of %d (local %d of %d), backend %s, device %s, %d threads", env.rank, env.world_size,
             env.local_rank, env.local_world_size, backend, device, torch.get_num_threads())
    return env, device


def shutdown() -> None:
    """Leave the process group (safe to call when none was joined)."""
    global _current
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _current = DistEnv()


def barrier() -> None:
    if _current.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over the ranks (returned unchanged in a single process)."""
    if not _current.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank."""
    if not _current.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def all_gather_batch(t: Tensor, dim: int = 1) -> Tensor:
    """Concatenate every rank's ``t`` along ``dim`` in rank order (the ranks' shards must have
    equal size along ``dim``)."""
    if not _current.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(_current.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim)


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` (picklable; small) on every rank."""
    if not _current.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; if it raises, every rank raises the same error, so no rank
    is left waiting at the next collective. Other ranks get None."""
    if not _current.enabled:
        return fn()
    result, message = None, [None]
    if _current.is_main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 -- re-raised below after telling the others
            message = [(type(e).__name__, str(e))]
            dist.broadcast_object_list(message, 0)
            raise
    dist.broadcast_object_list(message, 0)
    if message[0] is not None and not _current.is_main:
        name, text = message[0]
        raise _ERRORS.get(name, RuntimeError)(f"(on rank 0) {text}")
    return result


@contextlib.contextmanager
def session(device: str | torch.device = "cpu") -> Iterator[tuple[DistEnv, torch.device]]:
    """:func:`setup` for the length of a run: joins the torchrun process group (if there is
    one and it is not joined yet) and leaves it afterwards; a single process is rank 0 of 1."""
    joined = DistEnv.from_env().enabled and not (dist.is_available() and dist.is_initialized())
    env, device = setup(device)
    try:
        yield env, device
    finally:
        if joined:
            shutdown()


@contextlib.contextmanager
def run_directory(out, resume: bool, overwrite: bool) -> Iterator[Path]:
    """:func:`rnnkit.train.rundir.run_directory` on rank 0, which writes the run; the other
    ranks get the same directory on ``resume`` (the trainer's restore reads it) and otherwise
    an empty temporary one of their own that nothing is written to. An error of rank 0 (an
    ``--out`` already taken...) is every rank's (:func:`on_main`)."""
    from . import rundir

    if not _current.enabled:
        with rundir.run_directory(out, resume, overwrite) as run:
            yield run
        return
    with contextlib.ExitStack() as stack:
        run = on_main(lambda: stack.enter_context(rundir.run_directory(out, resume, overwrite)))
        if not _current.is_main:
            run = Path(out) if resume else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rnnkit-rank-")))
        yield run


def broadcast_module(module: torch.nn.Module) -> None:
    """Overwrite every rank's parameters and buffers with rank 0's (in place)."""
    if not _current.enabled:
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, 0)
