"""Argument checks shared by the public functions.

Every check raises ``ValueError`` (or ``TypeError``) with a message that names the argument,
the value it received, the rule, and what to do instead. Internal invariants use ``assert``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "check_batch_dtype",
    "check_finite",
    "check_nm",
    "check_sparsity",
    "check_tensor",
]


def check_tensor(value: object, name: str, *, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Return ``value`` if it is a tensor with one of ``dims`` dimensions, else raise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dims is not None and value.dim() not in dims:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape "
            f"{tuple(value.shape)}; pass a Linear (2-D), Conv1d (3-D) or Conv2d (4-D) weight"
        )
    return value


def check_finite(scores: torch.Tensor, name: str = "scores") -> None:
    """Raise ``ValueError`` if ``scores`` holds NaN or infinite values."""
    if scores.is_floating_point() or scores.is_complex():
        bad = ~torch.isfinite(scores)
        if bool(bad.any()):
            count = int(bad.sum())
            first = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(
                f"{name} contains {count} NaN or infinite value(s), the first at index {first} "
                f"(value {scores[first].item()}); compute scores from finite weights and "
                f"gradients, or replace them with torch.nan_to_num"
            )


def check_nm(n: int, m: int) -> None:
    """Raise ``ValueError`` unless ``0 < n < m`` are integers."""
    for label, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{label} must be an int, got {value!r}")
    if m < 2:
        raise ValueError(f"m={m} is invalid; a group needs at least 2 weights (use m=4 for 2:4)")
    if not 0 < n < m:
        raise ValueError(
            f"n={n}, m={m} is invalid; N:M keeps n of every m weights, so 0 < n < m is required "
            f"(for 2:4 use n=2, m=4)"
        )


def check_sparsity(sparsity: float, name: str = "sparsity", *, allow_one: bool = False) -> float:
    """Return ``sparsity`` as a float after checking it lies in [0, 1) (or [0, 1])."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"{name} must be a number (the fraction of zeros), got {sparsity!r}")
    sparsity = float(sparsity)
    upper_ok = sparsity <= 1.0 if allow_one else sparsity < 1.0
    if math.isnan(sparsity) or sparsity < 0.0 or not upper_ok:
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(
            f"{name}={sparsity} is outside {interval}; sparsity is the fraction of zeros, "
            f"so 75 % is written 0.75"
        )
    return sparsity


def check_batch_dtype(inputs: object, model: torch.nn.Module) -> None:
    """Raise ``TypeError`` if floating-point ``inputs`` differ in dtype from the model's weights.

    Without this check a float16 or bfloat16 model fed float32 batches fails deep inside the first
    layer with a message about its input and weight types.
    """
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    if parameter is None or not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        return
    if inputs.dtype != parameter.dtype:
        raise TypeError(
            f"the batch inputs are {inputs.dtype} but the model's weights are {parameter.dtype}; "
            f"train and score in float32 (model.float()) and convert to {parameter.dtype} for "
            f"inference, or cast the batches to {parameter.dtype} in the loader"
        )
