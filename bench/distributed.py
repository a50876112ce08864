"""Running the harness on several processes: ``torchrun --nproc-per-node N -m bench ...``.

PyTorch's own machinery only: ``torchrun`` (torch.distributed.run) starts the processes and
sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_from_env` calls ``torch.distributed.init_process_group`` from them (NCCL for CUDA,
gloo for the CPU) when ``WORLD_SIZE > 1``. Without torchrun everything here is a no-op on a
single process (rank 0 of 1), so the same code path serves both.

- Training (:mod:`bench.train.loop`): :func:`wrap_model` (SyncBatchNorm on request, then
  ``DistributedDataParallel``); every rank takes its micro-batches of each global batch
  (:mod:`bench.data.stream`); loss values and the "save now" votes are summed across ranks
  in one :func:`all_reduce_sum` per step; rank 0 writes checkpoints while the others wait
  at a :func:`barrier`.
- Evaluation (:mod:`bench.measure.detector`): :func:`shard` gives rank ``r`` the items ``r::W`` of
  a list (the evaluation batches); :func:`gather_to_main` collects the detections on rank 0,
  which evaluates once.
- :func:`on_main` runs setup work (data generation, output folders) on rank 0 and hands its
  outcome (or its error) to every rank, so that a bad option stops all ranks instead of
  leaving them waiting at a collective.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from bench.errors import UsageError

__all__ = [
    "DistContext",
    "all_reduce_sum",
    "barrier",
    "broadcast_from_main",
    "context",
    "gather_outcomes",
    "gather_to_main",
    "init_from_env",
    "local_device",
    "on_main",
    "shard",
    "shutdown",
    "wrap_model",
]

T = TypeVar("T")
ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# rank 0 alone may take long between two collectives (a checkpoint of Hourglass-104 with
# Adam's moments is 2.4 GB; latency of a suite runs minutes): wait up to an hour
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def context() -> DistContext:
    """The current process group's rank and size, or rank 0 of 1 when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistContext(dist.get_rank(), dist.get_world_size(), local)


def init_from_env(device_type: str) -> DistContext:
    """Join the process group described by torchrun's variables when ``WORLD_SIZE > 1``.

    ``device_type`` "cuda" selects NCCL and ``torch.cuda.set_device(LOCAL_RANK)``; "cpu"
    selects gloo. Already initialised: returns :func:`context`. UsageError naming the variable
    when torchrun's variables are missing or malformed, or a rank has no GPU.
    """
    if dist.is_available() and dist.is_initialized():
        return context()
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise UsageError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}: expected an int") from exc
    if world <= 1:
        return DistContext()
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise UsageError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with "
            "`torchrun --nproc-per-node N -m bench ...`"
        )
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if not dist.is_available():
        raise UsageError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise UsageError(
                f"LOCAL_RANK={local} but torch sees {torch.cuda.device_count()} GPU(s): use "
                "--nproc-per-node <= the GPU count"
            )
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    return DistContext(rank, world, local)


def shutdown() -> None:
    """Leave the process group, if any (called once the command is done)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: str | torch.device, ctx: DistContext | None = None) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK`` in a process group; anything else unchanged."""
    device = torch.device(device)
    ctx = ctx or context()
    if device.type == "cuda" and device.index is None and ctx.is_distributed:
        return torch.device("cuda", ctx.local_rank)
    return device


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if context().is_distributed:
        dist.barrier()


def _collective_device() -> torch.device:
    """Tensors in collectives live where the backend wants them (CUDA for NCCL)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64); the values themselves on one."""
    if not context().is_distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.tolist()


def broadcast_from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not context().is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Rank 0 gets ``[obj of rank 0, obj of rank 1, ...]``, the other ranks None.

    ``obj`` is pickled: keep tensors in it on the CPU.
    """
    ctx = context()
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only; its result there, None elsewhere.

    An exception on rank 0 is re-raised there, and every other rank raises UsageError (or
    RuntimeError) with its message, so no rank is left waiting at a collective.
    """
    ctx = context()
    if not ctx.is_distributed:
        return fn()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except BaseException as exc:  # handed to every rank, then re-raised below
            error = exc
    status = broadcast_from_main(
        None if error is None else (isinstance(error, UsageError), f"{error}")
    )
    if error is not None:
        raise error
    if status is not None:
        usage, message = status
        raise (UsageError if usage else RuntimeError)(f"on rank 0: {message}")
    return result


def gather_outcomes(fn: Callable[[], T]) -> list[T] | None:
    """Run ``fn`` on every rank; rank 0 gets ``[result of rank 0, result of rank 1, ...]``.

    The other ranks get None. If ``fn`` raises on any rank, every rank raises once all have
    finished: a failed rank its own exception, the others RuntimeError naming the failed
    ranks, so that they all leave together and meet again at the next collective. Results
    are pickled: keep tensors in them on the CPU.
    """
    if not context().is_distributed:
        return [fn()]
    error, payload = None, None
    try:
        payload = (True, fn())
    except Exception as exc:  # reported to every rank and re-raised below
        error, payload = exc, (False, f"{type(exc).__name__}: {exc}")
    gathered = gather_to_main(payload)
    failed = None
    if gathered is not None:
        failed = [f"rank {r}: {value}" for r, (ok, value) in enumerate(gathered) if not ok]
    failed = broadcast_from_main(failed)
    if error is not None:
        raise error
    if failed:
        raise RuntimeError("; ".join(failed))
    return None if gathered is None else [value for _, value in gathered]


def shard(items: Sequence[T], ctx: DistContext | None = None) -> list[T]:
    """This rank's share of ``items``: ``items[rank::world_size]`` (all of them on one)."""
    ctx = ctx or context()
    return list(items)[ctx.rank :: ctx.world_size]


def wrap_model(
    model: torch.nn.Module,
    device: torch.device,
    *,
    sync_bn: bool = False,
    find_unused_parameters: bool = True,
) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` in a process group of several ranks, else ``model``.

    ``sync_bn`` converts BatchNorm layers to SyncBatchNorm first (in place: parameters and
    buffers keep their names and tensors; CUDA only, as PyTorch's SyncBatchNorm).
    ``find_unused_parameters``: most registry detectors leave part of the shared hourglass
    unused (their heads read fewer levels), which DDP must be told about; CornerNet uses
    every parameter and may turn it off to save a graph traversal per step.
    """
    ctx = context()
    if not ctx.is_distributed:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise UsageError("--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only")
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:  # only when the model itself is a BatchNorm layer
            raise ValueError("wrap_model: the model itself is a BatchNorm layer")
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=find_unused_parameters
    )
