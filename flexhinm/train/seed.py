"""Seeds and random-number-generator state for reproducible and resumable training.

:func:`seed_everything` seeds Python's :mod:`random`, NumPy's global generator and torch (CPU and
every CUDA device). :func:`get_rng_state` captures all of those generators as plain Python and
tensor values, so a checkpoint that stores it still loads with
``torch.load(..., weights_only=True)``. :func:`set_rng_state` puts them back, which is what an
exact resume of training needs.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "seed_everything", "set_rng_state"]

_logger = logging.getLogger(__name__)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all CUDA devices).

    Args:
        seed: a non-negative integer below ``2**32``.
        deterministic: if ``True``, also ask torch for deterministic kernels
            (``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic and
            not benchmarking) and set ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless it is already set.
            These switches are process-wide and slow some GPU kernels down. The cuBLAS setting
            only takes effect if CUDA has not been initialised yet.

    Raises:
        TypeError: if ``seed`` is not an int.
        ValueError: if ``seed`` is negative or not below ``2**32`` (NumPy's limit).

    Example:
        >>> seed_everything(0)
        >>> first = torch.rand(2)
        >>> seed_everything(0)
        >>> torch.equal(first, torch.rand(2))
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed} is outside [0, 2**32); NumPy accepts only such seeds")

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    _logger.debug("seeded random, numpy and torch with %d (deterministic=%s)", seed, deterministic)


def get_rng_state() -> dict[str, Any]:
    """Capture the state of every global random number generator used in training.

    Returns:
        A dict of plain values with four entries. ``"torch"`` is a uint8 CPU tensor. ``"cuda"`` is
        a list of uint8 tensors, one per CUDA device, or ``None`` when CUDA is unavailable or not
        yet initialised. ``"python"`` has the version, a list of 625 ints and the Gaussian cache.
        ``"numpy"`` has the MT19937 key as a list of 624 ints, the position and the Gaussian
        cache. The dict contains no NumPy arrays and no custom
        classes, so ``torch.save`` of it loads with ``weights_only=True``.

    Example:
        >>> state = get_rng_state()
        >>> first = torch.rand(3)
        >>> set_rng_state(state)
        >>> torch.equal(first, torch.rand(3))
        True
    """
    version, internal, gauss_next = random.getstate()
    bit_generator, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)

    # Only read CUDA generators that exist already; reading them would otherwise initialise CUDA
    # in a run that never uses the GPU.
    cuda_states = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [state.clone() for state in torch.cuda.get_rng_state_all()]

    return {
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda_states,
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(bit_generator),
            "keys": [int(key) for key in keys],
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators captured by :func:`get_rng_state`.

    Args:
        state: a dict returned by :func:`get_rng_state`, possibly after a round trip through
            ``torch.save`` / ``torch.load``.

    Raises:
        TypeError: if ``state`` is not a dict.
        ValueError: if a key of :func:`get_rng_state` is missing.

    A CUDA state is restored only where CUDA is available. If the saved run had a different number
    of GPUs, the common devices are restored and a ``UserWarning`` is issued.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from get_rng_state(), got {type(state).__name__}")
    missing = sorted({"torch", "cuda", "python", "numpy"} - set(state))
    if missing:
        raise ValueError(
            f"random state is missing the key(s) {missing}; pass a dict returned by get_rng_state()"
        )

    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
    )

    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            np.asarray(numpy_state["keys"], dtype=np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )

    torch.set_rng_state(state["torch"].cpu())

    cuda_states = state["cuda"]
    if cuda_states is not None and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(cuda_states) != count:
            warnings.warn(
                f"the random state contains {len(cuda_states)} CUDA generator(s) but this machine has "
                f"{count} CUDA device(s); restoring the first {min(count, len(cuda_states))}",
                UserWarning,
                stacklevel=2,
            )
        for index, cuda_state in enumerate(cuda_states[:count]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device=index)
