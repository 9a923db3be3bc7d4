"""Tiles of a score matrix, column ranking inside a tile, and the N:M choice inside groups of columns.

These helpers work on the GEMM view (see :mod:`flexhinm.gemm`) and are shared by the region
allocation, the boundary search, the monotone stages and the channel permutations that reorder the
N:M columns of a tile.
"""

from __future__ import annotations

import torch

from .._checks import check_finite, check_nm, check_tensor
from ..gemm import to_gemm
from .layout import RegionLayout

__all__ = [
    "check_row_order",
    "check_scores",
    "column_sums",
    "nm_keep_for",
    "rank_columns",
    "tile_view",
    "top_n_sum",
]


def check_scores(scores: object, *, m: int) -> torch.Tensor:
    """Return the GEMM view of ``scores`` after checking it is a finite, non-negative importance.

    Args:
        scores: weight-shaped importance (2-D, 3-D or 4-D), real dtype.
        m: N:M group size; it must divide the row length of the GEMM view.

    Raises:
        TypeError: if ``scores`` is not a tensor.
        ValueError: for a wrong number of dimensions, NaN or infinite values, negative values, or a
            row length that ``m`` does not divide.
    """
    scores = check_tensor(scores, "scores", dims=(2, 3, 4))
    if scores.is_complex() or scores.dtype == torch.bool:
        raise TypeError(f"scores must be a real tensor, got dtype {scores.dtype}")
    check_finite(scores)
    if bool((scores < 0).any()):
        raise ValueError(
            f"scores contains {int((scores < 0).sum())} negative value(s) (minimum "
            f"{float(scores.min()):.4g}); importance must be non-negative, for example "
            f"weight.abs() or a score from flexhinm.importance"
        )

    gemm = to_gemm(scores)
    columns = gemm.shape[1]
    if columns % m:
        raise ValueError(
            f"m={m} does not divide the row length {columns} of the GEMM view of a weight of shape "
            f"{tuple(scores.shape)}; region methods need whole groups of m columns, so leave this "
            f"layer dense (see flexhinm.eligibility_report)"
        )
    return gemm


def check_row_order(row_order: object, rows: int, tile_rows: int, device: torch.device) -> torch.Tensor:
    """Return ``row_order`` as int64 on ``device`` (identity when ``None``) after checking it.

    Raises:
        ValueError: if ``tile_rows`` does not divide ``rows`` or ``row_order`` is not a permutation.
    """
    if isinstance(tile_rows, bool) or not isinstance(tile_rows, int) or tile_rows <= 0:
        raise ValueError(f"tile_rows={tile_rows!r} is invalid; pass a positive int such as 64")
    if rows % tile_rows:
        divisors = [size for size in (64, 32, 16, 8, 4) if rows % size == 0]
        raise ValueError(
            f"tile_rows={tile_rows} does not divide the {rows} output rows; choose a divisor "
            f"such as {divisors or [rows]}"
        )
    if row_order is None:
        return torch.arange(rows, device=device)

    row_order = check_tensor(row_order, "row_order", dims=(1,))
    identity = torch.arange(rows, device=row_order.device)
    if row_order.numel() != rows or not torch.equal(row_order.long().sort().values, identity):
        raise ValueError(
            f"row_order must be a permutation of the {rows} output rows (each index 0..{rows - 1} "
            f"once), got a tensor of shape {tuple(row_order.shape)}"
        )
    return row_order.to(device=device, dtype=torch.int64)


def tile_view(gemm: torch.Tensor, row_order: torch.Tensor, tile_rows: int) -> torch.Tensor:
    """Return ``(tiles, tile_rows, columns)``: the rows of ``gemm`` in ``row_order``, cut into tiles."""
    rows, columns = gemm.shape
    return gemm[row_order].reshape(rows // tile_rows, tile_rows, columns)


def column_sums(tiles: torch.Tensor) -> torch.Tensor:
    """Return ``(tiles, columns)`` float64 summed importance of every column vector."""
    return tiles.sum(dim=1, dtype=torch.float64)


def rank_columns(sums: torch.Tensor) -> torch.Tensor:
    """Return ``(tiles, columns)`` column indices of each tile from the highest summed score down.

    The sort is stable, so among equal sums the lower column index ranks higher (it becomes dense
    first and pruned last).
    """
    return torch.sort(sums, dim=1, descending=True, stable=True).indices


def top_n_sum(groups: torch.Tensor, n: int) -> torch.Tensor:
    """Return the sum of the ``n`` largest entries along the last dimension of ``groups``.

    For 2:4 this uses a compare network (max of the pair maxima, plus the larger of the smaller pair
    maximum and the larger pair minimum), which is several times faster on CPU than ``topk``.
    """
    m = groups.shape[-1]
    if n == m:
        return groups.sum(dim=-1)
    if n == 2 and m == 4:
        first_low = torch.minimum(groups[..., 0], groups[..., 1])
        first_high = torch.maximum(groups[..., 0], groups[..., 1])
        second_low = torch.minimum(groups[..., 2], groups[..., 3])
        second_high = torch.maximum(groups[..., 2], groups[..., 3])
        largest = torch.maximum(first_high, second_high)
        runner_up = torch.maximum(
            torch.minimum(first_high, second_high), torch.maximum(first_low, second_low)
        )
        return largest + runner_up
    return groups.topk(n, dim=-1).values.sum(dim=-1)


def nm_keep_for(
    scores: torch.Tensor,
    rows: RegionLayout | torch.Tensor,
    nm_cols: torch.Tensor,
    *,
    n: int = 2,
    m: int = 4,
) -> torch.Tensor:
    """Return the N:M choice for given N:M columns: the ``n`` highest scores of each group per row.

    Entries ``m*g .. m*g+m-1`` of ``nm_cols[t]`` form group ``g`` of tile ``t``, whatever their
    column indices, so a channel permutation can reorder ``nm_cols`` and call this again.

    Args:
        scores: ``(rows, columns)`` importance on the GEMM view (use :func:`flexhinm.to_gemm`).
        rows: a :class:`RegionLayout` (its ``tile_row_indices`` are used) or a ``(tiles,
            tile_rows)`` int64 tensor of GEMM row indices.
        nm_cols: ``(tiles, n_nm)`` int64 column indices in group order; ``m`` divides ``n_nm``.
        n: weights kept per group.
        m: group size.

    Returns:
        ``(tiles, tile_rows, n_nm)`` bool, exactly ``n`` True in every group of ``m``. Among equal
        scores the lower column index is kept, as in :func:`flexhinm.nm_mask`.

    Raises:
        ValueError: if the shapes do not fit together or ``m`` does not divide ``n_nm``.

    Example:
        >>> scores = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
        >>> nm_keep_for(scores, torch.tensor([[0]]), torch.tensor([[3, 2, 1, 0]])).tolist()
        [[[False, True, False, True]]]
    """
    check_nm(n, m)
    check_tensor(scores, "scores", dims=(2,))
    row_index = rows.tile_row_indices if isinstance(rows, RegionLayout) else rows
    check_tensor(row_index, "rows", dims=(2,))
    check_tensor(nm_cols, "nm_cols", dims=(2,))
    tiles, width = nm_cols.shape
    if row_index.shape[0] != tiles or width % m:
        raise ValueError(
            f"nm_cols has shape {tuple(nm_cols.shape)} but rows describes {row_index.shape[0]} "
            f"tiles; pass one row of column indices per tile, a multiple of m={m} long"
        )
    tile_rows = row_index.shape[1]
    groups = width // m

    values = scores[row_index[:, :, None], nm_cols[:, None, :]]
    if values.dtype != torch.float64:
        values = values.float()

    # Order each group by column index first, so the stable sort by score that follows breaks
    # ties in favour of the lower column index even when a permutation shuffled the group.
    by_index = nm_cols.reshape(tiles, 1, groups, m).argsort(dim=-1).expand(tiles, tile_rows, groups, m)
    grouped = values.reshape(tiles, tile_rows, groups, m).gather(-1, by_index)
    order = torch.sort(grouped, dim=-1, descending=True, stable=True).indices

    keep_by_index = torch.zeros_like(grouped, dtype=torch.bool)
    keep_by_index.scatter_(-1, order[..., :n], True)
    keep = torch.zeros_like(keep_by_index)
    keep.scatter_(-1, by_index, keep_by_index)
    return keep.reshape(tiles, tile_rows, width)
