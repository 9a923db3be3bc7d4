"""2:4 pattern checks and packing of weights for Sparse Tensor Cores.

NVIDIA Sparse Tensor Cores (compute capability 8.0 and newer) multiply a weight that keeps at most
2 of every 4 consecutive values along each row of its GEMM view. ``torch.sparse`` packs such a
weight with ``to_sparse_semi_structured`` (CUDA only, no CPU kernels in torch 2.13 and 2.14.1).
That function does not check the pattern, so a weight that breaks 2:4 is packed into wrong values
without an error. For fp32 the CUTLASS kernels need 1:2 rather than 2:4. :func:`to_semi_structured`
therefore checks the dtype, the shape and the pattern before it calls torch.

Shape rules in torch 2.14.1 (rows and columns must be positive multiples of these):

=============  ==================  ============  =======
backend        dtype               rows, cols    pattern
=============  ==================  ============  =======
cuSPARSELt     fp16, bf16          16, 16        2:4
cuSPARSELt     int8, fp8 e4m3      32, 32        2:4
CUTLASS        fp16, bf16          32, 64        2:4
CUTLASS        int8                16, 128       2:4
CUTLASS        fp32                32, 32        1:2
=============  ==================  ============  =======

When torch exposes its own table (the private ``_DTYPE_SHAPE_CONSTRAINTS`` class attribute), its
values are used instead, so a newer torch with other rules is followed.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from .._checks import check_nm, check_tensor
from .capability import SEMI_STRUCTURED_BACKENDS, cached_capability

__all__ = [
    "SemiStructuredRule",
    "check_nm_pattern",
    "count_nm_violations",
    "semi_structured_rule",
    "semi_structured_support",
    "to_semi_structured",
]


class SemiStructuredRule(NamedTuple):
    """Shape and pattern rule of one semi-structured backend and dtype.

    Attributes:
        row_multiple: rows of the sparse weight must be a positive multiple of this.
        column_multiple: columns of the sparse weight must be a positive multiple of this.
        n: at most ``n`` non-zeros are allowed in each group.
        m: group size along each row.
    """

    row_multiple: int
    column_multiple: int
    n: int
    m: int


# (backend, dtype) -> rule, as read in the torch 2.14.1 source; used when torch has no table.
_RULES = {
    ("cusparselt", torch.float16): SemiStructuredRule(16, 16, 2, 4),
    ("cusparselt", torch.bfloat16): SemiStructuredRule(16, 16, 2, 4),
    ("cusparselt", torch.int8): SemiStructuredRule(32, 32, 2, 4),
    ("cusparselt", torch.float8_e4m3fn): SemiStructuredRule(32, 32, 2, 4),
    ("cutlass", torch.float16): SemiStructuredRule(32, 64, 2, 4),
    ("cutlass", torch.bfloat16): SemiStructuredRule(32, 64, 2, 4),
    ("cutlass", torch.int8): SemiStructuredRule(16, 128, 2, 4),
    ("cutlass", torch.float32): SemiStructuredRule(32, 32, 1, 2),
}

_TORCH_CLASSES = {
    "cusparselt": "SparseSemiStructuredTensorCUSPARSELT",
    "cutlass": "SparseSemiStructuredTensorCUTLASS",
}


def count_nm_violations(weight: torch.Tensor, *, n: int = 2, m: int = 4) -> int:
    """Count the groups of ``m`` consecutive values along a row that hold more than ``n`` non-zeros.

    Args:
        weight: ``(rows, columns)`` matrix of any dtype; ``columns`` must be a multiple of ``m``.
            NaN counts as a non-zero.
        n: maximum non-zeros allowed per group.
        m: group size.

    Returns:
        The number of groups that break the pattern (0 for a valid N:M matrix).

    Example:
        >>> count_nm_violations(torch.tensor([[1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]]))
        1
    """
    return int(_violating_groups(weight, n, m).sum())


def check_nm_pattern(weight: torch.Tensor, *, n: int = 2, m: int = 4, name: str = "weight") -> None:
    """Raise ``ValueError`` unless every group of ``m`` along each row has at most ``n`` non-zeros.

    Args:
        weight: ``(rows, columns)`` matrix of any dtype.
        n: maximum non-zeros allowed per group.
        m: group size; it must divide ``columns``.
        name: argument name used in the error message.

    Raises:
        ValueError: if ``weight`` is not 2-D, ``m`` does not divide its columns, or groups break
            the pattern. The message gives how many groups break it and where the first one is.

    Example:
        >>> check_nm_pattern(torch.tensor([[0.0, 1.0, 0.0, 2.0]]))   # valid: returns None
        >>> check_nm_pattern(torch.ones(2, 8))
        Traceback (most recent call last):
        ...
        ValueError: weight is not 2:4 sparse: 4 of 4 groups of 4 consecutive values ...
    """
    bad = _violating_groups(weight, n, m, name=name)
    count = int(bad.sum())
    if count == 0:
        return

    row, group = (int(i) for i in torch.nonzero(bad)[0])
    first = weight[row, group * m:(group + 1) * m]
    raise ValueError(
        f"{name} is not {n}:{m} sparse: {count} of {bad.numel()} groups of {m} consecutive values "
        f"along a row hold more than {n} non-zero values. The first is row {row}, columns "
        f"{group * m}..{group * m + m - 1}, with {int((first != 0).sum())} non-zero values. Prune "
        f"the weight first, for example weight * flexhinm.nm_mask(weight.abs(), n={n}, m={m})"
    )


def _violating_groups(weight: torch.Tensor, n: int, m: int, name: str = "weight") -> torch.Tensor:
    """Return a ``(rows, columns // m)`` bool tensor, True where a group has more than ``n`` non-zeros."""
    check_tensor(weight, name)
    check_nm(n, m)
    if weight.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D (rows, columns) matrix, got shape {tuple(weight.shape)}; pass the "
            f"GEMM view (flexhinm.to_gemm(weight))"
        )
    if weight.shape[1] % m:
        raise ValueError(
            f"{name} has {weight.shape[1]} columns, which is not a multiple of m={m}; N:M groups "
            f"need whole groups of {m} along each row"
        )

    nonzero = (weight != 0).reshape(weight.shape[0], -1, m)
    return nonzero.sum(dim=-1) > n


def semi_structured_rule(dtype: torch.dtype, backend: str) -> SemiStructuredRule | None:
    """Return the shape and pattern rule of ``backend`` for ``dtype``, or None if it is unsupported.

    Args:
        dtype: weight dtype.
        backend: ``"cusparselt"`` or ``"cutlass"``.

    Example:
        >>> semi_structured_rule(torch.float16, "cutlass")
        SemiStructuredRule(row_multiple=32, column_multiple=64, n=2, m=4)
        >>> semi_structured_rule(torch.float32, "cusparselt") is None
        True
    """
    if backend not in SEMI_STRUCTURED_BACKENDS:
        raise ValueError(
            f"backend={backend!r} is not a semi-structured backend; choose one of "
            f"{list(SEMI_STRUCTURED_BACKENDS)}"
        )

    torch_class = getattr(torch.sparse, _TORCH_CLASSES[backend], None)
    table = getattr(torch_class, "_DTYPE_SHAPE_CONSTRAINTS", None)
    if not isinstance(table, dict):
        return _RULES.get((backend, dtype))
    if dtype not in table:
        return None

    entry = table[dtype]
    n, m = (1, 2) if dtype == torch.float32 else (2, 4)
    return SemiStructuredRule(int(entry.sparse_min_rows), int(entry.sparse_min_cols), n, m)


def semi_structured_support(
    shape: tuple[int, int],
    dtype: torch.dtype,
    device: torch.device | str,
    *,
    backend: str = "auto",
    pattern: tuple[int, int] | None = None,
) -> str | None:
    """Return why a weight cannot be packed for Sparse Tensor Cores, or None if it can.

    Checks the device, the backend, the dtype, the shape and, if given, the weight's N:M pattern.
    The values themselves are checked later, by :func:`to_semi_structured`.

    Args:
        shape: ``(rows, columns)`` of the weight to pack.
        dtype: its dtype.
        device: the device it lives on.
        backend: ``"auto"`` (the backend :func:`~flexhinm.inference.detect_capability` prefers),
            ``"cusparselt"`` or ``"cutlass"``.
        pattern: ``(n, m)`` of the weight, e.g. ``(2, 4)``, or None to skip this check. The
            backend must run ``dtype`` with this pattern. CUTLASS runs fp32 as 1:2, so it
            rejects a 2:4 weight in fp32.

    Returns:
        None when packing is possible, else one sentence in plain words.

    Example:
        >>> semi_structured_support((64, 64), torch.float16, "cpu")
        'the weight is on cpu; semi-structured kernels need a CUDA device'
    """
    device = torch.device(device)
    if device.type != "cuda":
        return f"the weight is on {device}; semi-structured kernels need a CUDA device"

    capability = cached_capability(device.index)
    if backend == "auto":
        if capability.backend == "none":
            return capability.reason
        backend = capability.backend
    elif backend not in SEMI_STRUCTURED_BACKENDS:
        raise ValueError(
            f"backend={backend!r} is invalid; choose 'auto' or one of {list(SEMI_STRUCTURED_BACKENDS)}"
        )
    elif backend not in capability.backends:
        return f"the {backend} backend is not available here: {capability.reason}"

    rule = semi_structured_rule(dtype, backend)
    if rule is None:
        return f"the {backend} backend does not support dtype {dtype}"
    if pattern is not None and tuple(pattern) != (rule.n, rule.m):
        return (
            f"the {backend} backend runs {dtype} as {rule.n}:{rule.m}, not "
            f"{pattern[0]}:{pattern[1]}; use float16 or bfloat16 for 2:4"
        )
    rows, columns = (int(s) for s in shape)
    if rows <= 0 or columns <= 0 or rows % rule.row_multiple or columns % rule.column_multiple:
        return (
            f"shape ({rows}, {columns}) is not supported by {backend} in {dtype}: rows must be a "
            f"positive multiple of {rule.row_multiple} and columns of {rule.column_multiple}"
        )
    return None


def to_semi_structured(weight: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Pack a 2:4 weight for Sparse Tensor Cores after checking the device, shape and pattern.

    Args:
        weight: ``(rows, columns)`` CUDA tensor whose rows keep at most 2 of every 4 values, or
            1 of every 2 for fp32 on CUTLASS. cuSPARSELt takes fp16 or bf16, CUTLASS fp16, bf16
            or fp32.
        backend: ``"auto"`` (cuSPARSELt where available, the torch default), ``"cusparselt"`` or
            ``"cutlass"``.

    Returns:
        A ``torch.sparse.SparseSemiStructuredTensor`` of the same shape; use it with
        ``torch.nn.functional.linear(x, packed)`` or ``torch.mm``. torch's once-per-process
        prototype warning is silenced here.

    Raises:
        ValueError: if packing is not possible here (see :func:`semi_structured_support`) or the
            weight breaks the pattern (see :func:`check_nm_pattern`).
    """
    check_tensor(weight, "weight", dims=(2,))
    reason = semi_structured_support(tuple(weight.shape), weight.dtype, weight.device, backend=backend)
    if reason is not None:
        raise ValueError(
            f"cannot pack weight of shape {tuple(weight.shape)} for Sparse Tensor Cores: {reason}; "
            f"use the masked dense GEMM instead"
        )

    if backend == "auto":
        backend = cached_capability(weight.device.index).backend
    rule = semi_structured_rule(weight.dtype, backend)
    assert rule is not None  # semi_structured_support accepted this dtype
    check_nm_pattern(weight, n=rule.n, m=rule.m)

    torch_class = getattr(torch.sparse, _TORCH_CLASSES[backend])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*SparseSemiStructuredTensor is in prototype")
        return torch_class.from_dense(weight.detach().contiguous())
