"""Argument checks, seeding and progress bars shared by the permutation searches."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch
from tqdm import tqdm

from .._checks import check_finite, check_tensor
from ..gemm import to_gemm

__all__ = [
    "available_cpus",
    "check_count",
    "check_schedule",
    "check_tile_rows",
    "gemm_importance",
    "make_generator",
    "progress_bar",
    "single_torch_thread",
]

Function = TypeVar("Function", bound=Callable)


def available_cpus() -> int:
    """Return the number of CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def single_torch_thread(function: Function) -> Function:
    """Run ``function`` with one torch CPU thread and restore the previous count afterwards.

    The searches issue thousands of small tensor operations. With several intra-op threads, every
    one of them waits for all threads to arrive, and on a machine whose other cores are busy that
    wait dominates: on a shared 2-core VM, Gyro-Permutation of ResNet-20 took 12 to 17 s of CPU
    with 2 threads against 0.3 to 0.5 s with 1. The thread count is process-wide, so another
    thread of the same process running torch meanwhile also runs with one thread.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        previous = torch.get_num_threads()
        if previous == 1:
            return function(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper  # type: ignore[return-value]


def make_generator(seed: int | torch.Generator) -> torch.Generator:
    """Return ``seed`` if it is a generator, else a new CPU generator seeded with it."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def gemm_importance(scores: torch.Tensor) -> torch.Tensor:
    """Check weight-shaped importance scores and return their float64 GEMM view on the CPU."""
    check_tensor(scores, "scores", dims=(2, 3, 4))
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got dtype {scores.dtype}")
    check_finite(scores)
    matrix = to_gemm(scores.detach()).double().cpu()
    if bool((matrix < 0).any()):
        raise ValueError(
            f"scores contains {int((matrix < 0).sum())} negative value(s), the smallest "
            f"{float(matrix.min())}; pass non-negative importance such as weight.abs()"
        )
    return matrix


def check_tile_rows(tile_rows: int, rows: int, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``tile_rows`` is a positive divisor of ``rows``."""
    if isinstance(tile_rows, bool) or not isinstance(tile_rows, int):
        raise TypeError(f"tile_rows must be an int, got {tile_rows!r}")
    if tile_rows <= 0 or rows % tile_rows:
        divisors = [d for d in (128, 64, 32, 16, 8, 4) if rows % d == 0]
        raise ValueError(
            f"tile_rows={tile_rows} does not divide the {rows} output rows of a weight of shape "
            f"{shape}; choose a divisor such as {divisors or [1]}"
        )


def check_count(value: int, name: str, minimum: int) -> int:
    """Return ``value`` after checking it is an int of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def check_schedule(schedule: Sequence[int], tile_rows: int) -> tuple[int, ...]:
    """Return the schedule as a tuple after checking every entry lies in ``[1, tile_rows]``."""
    entries = tuple(schedule)
    bad = [s for s in entries if isinstance(s, bool) or not isinstance(s, int) or
           not 1 <= s <= tile_rows]
    if not entries or bad:
        raise ValueError(
            f"schedule={entries} is invalid: it needs at least one entry and every entry is the "
            f"number of rows sampled per tile, an int in [1, tile_rows={tile_rows}]; "
            f"for small tiles pass e.g. schedule=(2, 1, 1)"
        )
    return entries


class _NoBar:
    """Stand-in for a tqdm bar when progress is off."""

    def update(self, count: int = 1) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


def progress_bar(iterable: Iterable | None, enabled: bool, description: str):
    """Wrap ``iterable`` in a tqdm bar when ``enabled``; without an iterable, return a manual bar."""
    if not enabled:
        return _NoBar() if iterable is None else iterable
    return tqdm(iterable, desc=description, leave=False)
