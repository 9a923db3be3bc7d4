"""Boundary search: the FlexHiNM split between pruned, 2:4 and dense columns with the most importance kept.

For every feasible pruned-column count ``n_p`` (see :mod:`flexhinm.regions.counts`) the search builds
the layout each tile would get (columns ranked by summed importance: the lowest ``n_p`` pruned, the
highest ``n_d`` dense, the middle ``n_q`` N:M) and measures the retained importance

    R(n_p) = sum over tiles of [ importance of the dense columns
                                 + the top n of every group of m in the N:M columns, per row ],

with the N:M columns grouped in ascending column order (no input permutation). The scan is
exhaustive, so it does not rely on ``R`` being concave in ``v = n_p / C``. The whole curve is
returned, so that concavity can be checked on real layers.

Cost: one column sort per tile, then for each candidate a gather of its N:M band and a top-n per
group, ``O(rows * n_q)`` work per candidate with no Python loop over rows or columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_nm, check_sparsity
from .counts import RegionCounts, check_region_method, region_counts
from .tiles import check_row_order, check_scores, column_sums, rank_columns, tile_view, top_n_sum

__all__ = ["BoundarySearch", "retained_curve", "search_boundary"]


@dataclass(frozen=True)
class BoundarySearch:
    """Retained importance of every candidate split of one layer, and the best one.

    Attributes:
        candidates: the count triples tried, by increasing ``pruned``.
        retained: ``(len(candidates),)`` float64 retained importance of each candidate.
        total: summed importance of the whole layer (the retained value of a dense layer).
        best: index of the candidate with the largest retained importance (the first on a tie, so
            the one with the fewest pruned columns).
    """

    candidates: tuple[RegionCounts, ...]
    retained: torch.Tensor
    total: float
    best: int

    @property
    def best_counts(self) -> RegionCounts:
        """The winning count triple."""
        return self.candidates[self.best]

    @property
    def vector_sparsity(self) -> torch.Tensor:
        """``(len(candidates),)`` float64 fraction of column vectors pruned, ``v``."""
        columns = self.candidates[0].columns
        return torch.tensor([c.pruned / columns for c in self.candidates], dtype=torch.float64)

    @property
    def retained_fraction(self) -> torch.Tensor:
        """``retained / total``; NaN for a layer whose importance sums to zero."""
        return self.retained / self.total if self.total > 0 else torch.full_like(self.retained, float("nan"))


def retained_curve(
    tiles: torch.Tensor, candidates: list[RegionCounts], *, n: int = 2, m: int = 4
) -> torch.Tensor:
    """Return the float64 retained importance of each candidate on ``(tiles, tile_rows, columns)`` scores.

    Inputs are not checked; :func:`search_boundary` is the checked entry point.
    """
    num_tiles, tile_rows, columns = tiles.shape
    work = tiles if tiles.dtype == torch.float64 else tiles.float()
    sums = column_sums(work)
    order = rank_columns(sums)

    # dense_prefix[t, k] = summed importance of the k highest-ranked columns of tile t.
    dense_prefix = torch.zeros(num_tiles, columns + 1, dtype=torch.float64, device=tiles.device)
    dense_prefix[:, 1:] = sums.gather(1, order).cumsum(dim=1)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(columns, device=tiles.device).expand(num_tiles, -1))

    retained = torch.zeros(len(candidates), dtype=torch.float64)
    for index, counts in enumerate(candidates):
        value = dense_prefix[:, counts.dense].sum()
        if counts.nm:
            # The N:M band is ranks dense .. dense + nm - 1; nonzero lists it in ascending column
            # order, which is the natural grouping.
            band = (rank >= counts.dense) & (rank < counts.dense + counts.nm)
            cols = band.nonzero()[:, 1].reshape(num_tiles, counts.nm)
            values = work.gather(2, cols[:, None, :].expand(num_tiles, tile_rows, counts.nm))
            groups = values.reshape(num_tiles, tile_rows, counts.nm // m, m)
            value = value + top_n_sum(groups, n).sum(dtype=torch.float64)
        retained[index] = value
    return retained


def search_boundary(
    scores: torch.Tensor,
    sparsity: float,
    *,
    tile_rows: int = 64,
    n: int = 2,
    m: int = 4,
    row_order: torch.Tensor | None = None,
    method: str = "flexhinm",
) -> BoundarySearch:
    """Scan every feasible pruned-column count of one layer and return the retained-importance curve.

    Args:
        scores: weight-shaped non-negative importance (2-D, 3-D or 4-D; e.g. ``weight.abs()``).
        sparsity: target fraction of zeros ``t`` in ``[0, 1)``.
        tile_rows: rows per tile ``V``; it must divide the output rows.
        n: weights kept per N:M group.
        m: N:M group size; it must divide the GEMM row length.
        row_order: optional ``(rows,)`` permutation of the output rows; tiles are consecutive blocks
            of ``tile_rows`` rows in this order (identity when ``None``).
        method: ``"flexhinm"`` scans all splits; ``"hinm"`` and ``"ovw"`` have a single candidate.

    Returns:
        A :class:`BoundarySearch`; ``best_counts`` is the split :func:`allocate_regions` uses.

    Raises:
        ValueError: for bad scores, sparsity, tile size, row order or method.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> result = search_boundary(torch.randn(16, 64).abs(), 0.75, tile_rows=8)
        >>> [c.pruned for c in result.candidates]
        [32, 36, 40, 44, 48]
        >>> bool(result.retained[result.best] == result.retained.max())
        True
    """
    check_nm(n, m)
    sparsity = check_sparsity(sparsity)
    check_region_method(method)
    gemm = check_scores(scores, m=m)
    order = check_row_order(row_order, gemm.shape[0], tile_rows, gemm.device)

    tiles = tile_view(gemm, order, tile_rows)
    candidates = region_counts(gemm.shape[1], sparsity, method, n=n, m=m)
    retained = retained_curve(tiles, candidates, n=n, m=m)
    return BoundarySearch(
        candidates=tuple(candidates),
        retained=retained,
        total=float(gemm.sum(dtype=torch.float64)),
        best=int(torch.argmax(retained)),
    )
