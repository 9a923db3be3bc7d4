"""The GEMM view of a weight: rows are output channels, columns the reduction dimension.

Sparse Tensor Cores apply 2:4 along the reduction dimension K of a GEMM whose sparse operand is the
weight, stored as ``(M, K) = (output channels, reduction)``. A Linear weight already has that layout.
A convolution lowered to an implicit GEMM over channels-last (NHWC) input reduces over
``(kernel tap, input channel)`` with the input channel varying fastest, so its GEMM view is::

    weight.permute(0, 2, 3, 1).reshape(C_out, kh * kw * C_in)     # Conv2d
    weight.permute(0, 2, 1).reshape(C_out, k * C_in)               # Conv1d

Four consecutive columns of that view are four input channels at one kernel tap. This is the
layout NVIDIA's ASP uses for convolutions, and it is the one every mask in this package follows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import check_tensor

__all__ = ["from_gemm", "gemm_shape", "to_gemm"]


def gemm_shape(shape: Sequence[int]) -> tuple[int, int]:
    """Return ``(rows, columns)`` of the GEMM view of a weight of the given shape.

    Example:
        >>> gemm_shape((64, 16, 3, 3))
        (64, 144)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3, 4):
        raise ValueError(
            f"weight shape {shape} has {len(shape)} dimensions; only Linear (2-D), Conv1d (3-D) "
            f"and Conv2d (4-D) weights have a GEMM view"
        )
    columns = 1
    for size in shape[1:]:
        columns *= size
    return shape[0], columns


def to_gemm(weight: torch.Tensor) -> torch.Tensor:
    """Return the 2-D GEMM view of a Linear, Conv1d or Conv2d weight.

    Args:
        weight: ``(C_out, C_in)``, ``(C_out, C_in, k)`` or ``(C_out, C_in, kh, kw)``, any dtype.

    Returns:
        ``(C_out, K)`` with ``K = C_in * kernel size`` ordered tap-major, channel-minor. A 2-D input
        is returned as is (the same tensor); other inputs are copied into a new contiguous tensor.

    Example:
        >>> w = torch.arange(2 * 3 * 1 * 2).reshape(2, 3, 1, 2)   # C_out=2, C_in=3, 1x2 kernel
        >>> to_gemm(w)[0].tolist()   # tap 0 for channels 0..2, then tap 1
        [0, 2, 4, 1, 3, 5]
    """
    check_tensor(weight, "weight", dims=(2, 3, 4))

    if weight.dim() == 2:
        return weight
    if weight.dim() == 3:
        return weight.permute(0, 2, 1).reshape(weight.shape[0], -1)
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def from_gemm(matrix: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Map a GEMM-view matrix back to a weight of ``shape``; the inverse of :func:`to_gemm`.

    Args:
        matrix: ``gemm_shape(shape)``, any dtype (masks, scores and weights alike).
        shape: the original weight shape, 2-D, 3-D or 4-D.

    Returns:
        A contiguous tensor of ``shape`` with ``from_gemm(to_gemm(w), w.shape)`` equal to ``w``.
    """
    check_tensor(matrix, "matrix", dims=(2,))
    shape = tuple(int(s) for s in shape)
    expected = gemm_shape(shape)
    if tuple(matrix.shape) != expected:
        raise ValueError(
            f"matrix has shape {tuple(matrix.shape)} but a weight of shape {shape} has a GEMM view "
            f"of shape {expected}; pass the shape of the weight the matrix came from"
        )

    if len(shape) == 2:
        return matrix.contiguous()
    if len(shape) == 3:
        c_out, c_in, k = shape
        return matrix.reshape(c_out, k, c_in).permute(0, 2, 1).contiguous()
    c_out, c_in, kh, kw = shape
    return matrix.reshape(c_out, kh, kw, c_in).permute(0, 3, 1, 2).contiguous()
