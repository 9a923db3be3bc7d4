"""OVW, HiNM and FlexHiNM masks: split the columns of every tile into pruned, N:M and dense regions.

A tile is ``tile_rows`` consecutive output rows of the GEMM view, taken in ``row_order``. Inside a
tile, columns are ranked by their importance summed over the tile's rows. The lowest ``n_pruned``
columns are pruned, the highest ``n_dense`` stay dense, and the middle ``n_nm`` get N:M along each
row. The N:M columns of a tile are grouped in ascending column order (consecutive groups of ``m`` of
the sorted N:M columns), and each row keeps the ``n`` highest scores of every group. The counts are
the same in every tile of a layer.

* ``"ovw"``: no N:M region, ``v = t``.
* ``"hinm"``: no dense region, ``v = (t - f) / (1 - f)`` with ``f = 1 - n/m`` (``2t - 1`` for 2:4).
* ``"flexhinm"``: any ``v`` between the two; searched (:mod:`flexhinm.regions.search`) or given.
"""

from __future__ import annotations

import torch

from .._checks import check_nm, check_sparsity
from .counts import RegionCounts, check_region_method, region_counts, select_vector_sparsity
from .layout import RegionLayout
from .monotone import allocate_monotone
from .search import retained_curve
from .tiles import check_row_order, check_scores, column_sums, nm_keep_for, rank_columns, tile_view

__all__ = ["allocate_regions", "assign_regions"]


def assign_regions(
    gemm: torch.Tensor,
    counts: RegionCounts,
    *,
    tile_rows: int,
    row_order: torch.Tensor,
    n: int = 2,
    m: int = 4,
    shape: tuple[int, ...] | None = None,
    method: str = "flexhinm",
    target_sparsity: float = float("nan"),
) -> RegionLayout:
    """Build the layout for fixed counts on GEMM-view scores (no search, inputs not checked).

    Args:
        gemm: ``(rows, columns)`` non-negative importance.
        counts: columns per tile in each region; they sum to ``columns``.
        tile_rows: rows per tile, dividing ``rows``.
        row_order: ``(rows,)`` int64 permutation of the output rows.
        n: weights kept per N:M group.
        m: group size.
        shape: the weight's shape (defaults to the GEMM shape).
        method: recorded in the layout.
        target_sparsity: recorded in the layout.

    Returns:
        A :class:`RegionLayout` whose region column lists are sorted ascending within each tile.
    """
    tiles = tile_view(gemm, row_order, tile_rows)
    order = rank_columns(column_sums(tiles))

    dense_end = counts.dense
    nm_end = counts.dense + counts.nm
    dense_cols = order[:, :dense_end].sort(dim=1).values
    nm_cols = order[:, dense_end:nm_end].sort(dim=1).values
    pruned_cols = order[:, nm_end:].sort(dim=1).values

    tile_row_index = row_order.reshape(-1, tile_rows)
    nm_keep = nm_keep_for(gemm, tile_row_index, nm_cols, n=n, m=m)
    return RegionLayout(
        shape=tuple(shape) if shape is not None else tuple(gemm.shape),
        tile_rows=tile_rows,
        row_order=row_order,
        pruned_cols=pruned_cols,
        nm_cols=nm_cols,
        dense_cols=dense_cols,
        nm_keep=nm_keep,
        n=n,
        m=m,
        method=method,
        target_sparsity=float(target_sparsity),
    )


def allocate_regions(
    scores: torch.Tensor,
    sparsity: float,
    method: str = "flexhinm",
    tile_rows: int = 64,
    vector_sparsity: float | None = None,
    *,
    n: int = 2,
    m: int = 4,
    row_order: torch.Tensor | None = None,
    previous: RegionLayout | None = None,
) -> RegionLayout:
    """Allocate pruned, N:M and dense columns in every tile of one layer for a target sparsity.

    Args:
        scores: non-negative importance shaped like the weight: ``(C_out, C_in)`` Linear,
            ``(C_out, C_in, k)`` Conv1d or ``(C_out, C_in, kh, kw)`` Conv2d; any real dtype. The
            work happens on the GEMM view ``flexhinm.to_gemm(scores)``.
        sparsity: target fraction of zeros ``t`` in ``[0, 1)``. Counts are multiples of ``m``, so the
            layout's ``sparsity`` is the closest reachable value (within one group of ``m`` per
            tile row; see :mod:`flexhinm.regions.counts`).
        method: ``"ovw"``, ``"hinm"`` or ``"flexhinm"``.
        tile_rows: rows per tile ``V``; it must divide the output rows.
        vector_sparsity: FlexHiNM only: the fraction ``v`` of column vectors to prune, in
            ``[max(0, 2t - 1), t]`` for 2:4. It is rounded to the closest feasible pruned count
            (a tie goes to fewer pruned columns). ``None`` searches ``v`` for the most retained
            importance.
        n: weights kept per N:M group.
        m: N:M group size; it must divide the GEMM row length.
        row_order: optional ``(rows,)`` int64 permutation of the output rows; tile ``k`` is rows
            ``row_order[k*V:(k+1)*V]`` (identity when ``None``).
        previous: the layout of an earlier, less sparse stage of the same layer. The new layout
            keeps every pruned column pruned, moves N:M columns only to the pruned region (in whole
            groups that keep their columns and their N:M choice), lets dense columns move to N:M
            or pruned, and keeps ``previous.row_order``.

    Returns:
        A :class:`RegionLayout` on the device of ``scores``; ``.mask()`` gives the bool mask of the
        weight's shape.

    Raises:
        TypeError: if ``scores`` is not a real tensor.
        ValueError: for an unknown method, a sparsity outside ``[0, 1)`` or HiNM below
            ``1 - n/m``. Also for a tile size that does not divide the rows, NaN, infinite or
            negative scores, and a ``vector_sparsity`` outside the feasible range or given for OVW
            or HiNM. Also for a ``previous`` layout with another ``tile_rows``, or one that does
            not fit in other ways (see
            :func:`flexhinm.regions.monotone.allocate_monotone`).

    Example:
        >>> scores = torch.tensor([[8.0, 1.0, 6.0, 5.0, 0.1, 0.2, 0.3, 0.4]]).repeat(4, 1)
        >>> layout = allocate_regions(scores, 0.5, "flexhinm", tile_rows=4, vector_sparsity=0.0)
        >>> layout.counts, layout.nm_cols.tolist()
        ((0, 8, 0), [[0, 1, 2, 3, 4, 5, 6, 7]])
        >>> allocate_regions(scores, 0.5, "ovw", tile_rows=4).dense_cols.tolist()
        [[0, 1, 2, 3]]
    """
    check_region_method(method)
    check_nm(n, m)
    sparsity = check_sparsity(sparsity)
    gemm = check_scores(scores, m=m)
    rows, columns = gemm.shape
    if vector_sparsity is not None and method != "flexhinm":
        raise ValueError(
            f"vector_sparsity={vector_sparsity} was given with method={method!r}, which fixes v "
            f"(OVW: v = t, HiNM: v = 2t - 1 for 2:4); use method='flexhinm' to choose v"
        )

    if previous is not None:
        if isinstance(previous, RegionLayout) and tile_rows != previous.tile_rows:
            raise ValueError(
                f"tile_rows={tile_rows} differs from previous.tile_rows={previous.tile_rows}; "
                f"gradual stages keep the tile size of the first stage, so pass "
                f"tile_rows={previous.tile_rows}"
            )
        return allocate_monotone(
            gemm, sparsity, previous, method=method, vector_sparsity=vector_sparsity,
            shape=tuple(scores.shape), n=n, m=m, row_order=row_order,
        )

    order = check_row_order(row_order, rows, tile_rows, gemm.device)
    candidates = region_counts(columns, sparsity, method, n=n, m=m)
    if vector_sparsity is not None:
        counts = select_vector_sparsity(candidates, vector_sparsity, sparsity, n=n, m=m)
    elif len(candidates) == 1:
        counts = candidates[0]
    else:
        retained = retained_curve(tile_view(gemm, order, tile_rows), candidates, n=n, m=m)
        counts = candidates[int(torch.argmax(retained))]

    return assign_regions(
        gemm, counts, tile_rows=tile_rows, row_order=order, n=n, m=m,
        shape=tuple(scores.shape), method=method, target_sparsity=sparsity,
    )
