"""N:M masks: keep the N largest of every M consecutive weights along the reduction dimension.

The groups run along the rows of the GEMM view (see :mod:`flexhinm.gemm`), so for a Conv2d a group
is M input channels at one kernel tap. 2:4 (N=2, M=4) is the pattern of NVIDIA Sparse Tensor Cores.
"""

from __future__ import annotations

import torch

from .._checks import check_finite, check_nm, check_tensor
from ..gemm import from_gemm, to_gemm

__all__ = ["is_nm_sparse", "nm_mask", "nm_mask_2d"]


def _check_divisible(columns: int, m: int, shape: tuple[int, ...]) -> None:
    if columns % m:
        divisors = [d for d in range(2, min(columns, 16) + 1) if columns % d == 0]
        raise ValueError(
            f"m={m} does not divide the reduction dimension {columns} of a weight of shape {shape}; "
            f"choose m from {divisors or 'none below 17'} or leave this layer dense "
            f"(see flexhinm.eligibility_report)"
        )


def nm_mask_2d(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Return the N:M mask of a 2-D score matrix, groups of ``m`` along each row.

    Inputs are not checked; :func:`nm_mask` is the checked entry point. Ties keep the earlier column.
    """
    rows, columns = scores.shape
    groups = scores.reshape(rows, columns // m, m).float()

    # A stable descending sort keeps the lower index first among equal scores, so ties are
    # broken the same way on every device and dtype.
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    return keep.reshape(rows, columns)


def nm_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Return a bool mask that keeps the ``n`` highest scores of every ``m`` along the reduction.

    Args:
        scores: importance of each weight, shaped like the weight: ``(C_out, C_in)`` for Linear,
            ``(C_out, C_in, k)`` for Conv1d or ``(C_out, C_in, kh, kw)`` for Conv2d. Pass
            ``weight.abs()`` for magnitude pruning; any float dtype (fp32, fp16, bf16, fp64).
        n: weights kept per group, ``0 < n < m``.
        m: group size; it must divide the row length ``C_in * kernel size`` of the GEMM view.

    Returns:
        ``torch.bool`` tensor of the same shape and device as ``scores``, ``True`` where a weight is
        kept. Exactly ``n`` of every group of ``m`` are ``True``; among equal scores the lower index
        along the reduction wins. The input is not modified.

    Raises:
        ValueError: if ``n >= m``, ``m`` does not divide the row length, or scores hold NaN or inf.

    Example:
        >>> w = torch.tensor([[0.1, -0.9, 0.3, 0.05, 1.0, 2.0, -3.0, 0.5]])
        >>> nm_mask(w.abs(), n=2, m=4).int().tolist()
        [[0, 1, 1, 0, 0, 1, 1, 0]]
    """
    check_tensor(scores, "scores", dims=(2, 3, 4))
    check_nm(n, m)
    check_finite(scores)
    matrix = to_gemm(scores)
    _check_divisible(matrix.shape[1], m, tuple(scores.shape))

    return from_gemm(nm_mask_2d(matrix, n, m), scores.shape)


def is_nm_sparse(tensor: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Return ``True`` if every group of ``m`` along the reduction has at most ``n`` non-zeros.

    Args:
        tensor: a weight (2-D, 3-D or 4-D, any dtype) or a bool mask of the same shape.
        n: the most non-zeros allowed per group.
        m: group size; a row length that ``m`` does not divide gives ``False``.

    Example:
        >>> is_nm_sparse(torch.tensor([[0.0, 1.5, 0.0, -2.0, 3.0, 0.0, 0.0, 0.0]]))
        True
        >>> is_nm_sparse(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
        False
    """
    check_tensor(tensor, "tensor", dims=(2, 3, 4))
    check_nm(n, m)
    matrix = to_gemm(tensor)
    rows, columns = matrix.shape
    if columns % m:
        return False

    nonzeros = (matrix != 0).reshape(rows, columns // m, m).sum(dim=-1)
    return bool((nonzeros <= n).all())
