"""Data-parallel training under ``torchrun``: process group, ranks, DDP wrapping and reductions.

``torchrun --nproc_per_node K script.py`` starts K processes and gives each the environment
variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`init_distributed` reads them and creates the default process group (NCCL when CUDA is
available, else gloo). Without those variables everything here behaves as a single process:
``rank() == 0``, ``world_size() == 1`` and the reductions return their input, so the same training
code runs in a notebook, in a script and under ``torchrun``.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "cleanup_distributed",
    "default_device",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_rank",
    "rank",
    "unwrap_model",
    "world_size",
    "wrap_ddp",
]

_logger = logging.getLogger(__name__)
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_cleanup_registered = False


def is_distributed() -> bool:
    """Return ``True`` when a default process group exists (after :func:`init_distributed`)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group, 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank of this process on its machine: ``LOCAL_RANK`` from torchrun, else 0."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Return ``True`` on rank 0, the process that writes checkpoints, logs and progress bars."""
    return rank() == 0


def default_device() -> torch.device:
    """Return ``cuda:<local rank>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: str | None = None, *, timeout_s: float = 1800.0) -> bool:
    """Create the default process group from torchrun's environment variables, if they are set.

    Calling it again, or calling it in a process that torchrun did not start, does nothing.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (NCCL when CUDA is available, else gloo).
        timeout_s: seconds a collective operation may wait for the other processes.

    Returns:
        ``True`` if this process is part of a process group with more than one member.

    Raises:
        ValueError: if only some torchrun variables are set, or ``backend`` is unknown.
    """
    if is_distributed():
        return world_size() > 1

    present = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    if not present:
        return False
    if len(present) != len(_TORCHRUN_VARIABLES):
        missing = sorted(set(_TORCHRUN_VARIABLES) - set(present))
        raise ValueError(
            f"distributed environment is incomplete: {missing} missing while {present} are set; "
            f"start the script with torchrun or unset these variables"
        )
    if int(os.environ["WORLD_SIZE"]) <= 1:
        return False

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend={backend!r} is unknown; use 'gloo' (CPU) or 'nccl' (CUDA)")

    device_id = None
    if backend == "nccl":
        device_id = default_device()
        torch.cuda.set_device(device_id)

    dist.init_process_group(
        backend=backend,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=device_id,
    )
    _logger.info(
        "process group ready: backend %s, rank %d of %d (local rank %d)",
        backend,
        rank(),
        world_size(),
        local_rank(),
    )

    global _cleanup_registered
    if not _cleanup_registered:
        atexit.register(cleanup_distributed)
        _cleanup_registered = True
    return True


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists; safe to call more than once."""
    if is_distributed():
        dist.destroy_process_group()
        _logger.debug("process group destroyed")


def barrier() -> None:
    """Wait until every process reaches this point; does nothing without a process group."""
    if is_distributed() and world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Return the element-wise sum of ``tensor`` over all processes (a new tensor).

    Without a process group this returns a copy of ``tensor``. With gloo the tensor may live on
    the CPU, with NCCL it must be on this process's GPU.
    """
    total = tensor.detach().clone()
    if is_distributed() and world_size() > 1:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def all_gather_objects(value: object) -> list:
    """Return ``[value of rank 0, value of rank 1, ...]``; ``[value]`` without a process group.

    ``value`` must be picklable; every process must call this function.
    """
    if not (is_distributed() and world_size() > 1):
        return [value]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def wrap_ddp(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Wrap ``model`` (already on ``device``) in DistributedDataParallel when running distributed.

    DDP copies rank 0's parameters and buffers to every process when it wraps the model, and then
    averages gradients in every backward pass, so the replicas stay identical. Without a process
    group of more than one process, ``model`` is returned unchanged.
    """
    if not (is_distributed() and world_size() > 1):
        return model
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model

    device = torch.device(device)
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device])
    return nn.parallel.DistributedDataParallel(model)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the plain module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
