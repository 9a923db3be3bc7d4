"""Monotone region allocation for gradual pruning: a later, sparser stage only removes weights.

Rules between a stage (``previous``) and the next one, per tile:

* a pruned column stays pruned;
* an N:M column stays N:M or becomes pruned. It leaves the N:M region only with its whole group,
  so every surviving group keeps its columns, their order and its N:M choice (``nm_keep``). A
  hardened learned mask needs exactly that;
* a dense column stays dense, becomes N:M (in new groups, natural column order) or becomes pruned;
* the output row order stays ``previous.row_order``.

For a candidate count triple, the dense columns kept are the highest-ranked previous dense columns.
The N:M region is filled with whole groups, chosen by value from two pools:

* previous groups, valued by the importance their N:M choice keeps;
* new groups built from the next-ranked previous dense columns, valued at ``n/m`` of their summed
  importance. That is a lower bound of what top-n keeps, so near-ties favour existing groups.

Everything else is pruned. Among the candidate count triples that the rules allow, the one with the
most retained importance wins.

Since dense columns can only leave the dense region, a stage with no dense columns (HiNM, or a
FlexHiNM search that chose the HiNM end) forces every later stage to have none either.
"""

from __future__ import annotations

import math

import torch

from .counts import RegionCounts, region_counts, select_vector_sparsity
from .layout import RegionLayout
from .tiles import column_sums, nm_keep_for, tile_view

__all__ = ["allocate_monotone", "check_monotone", "tile_regions"]

PRUNED, NM, DENSE = 0, 1, 2


def tile_regions(layout: RegionLayout) -> torch.Tensor:
    """Return ``(tiles, columns)`` int8 region codes per tile: 0 pruned, 1 N:M, 2 dense."""
    codes = torch.zeros(layout.num_tiles, layout.columns, dtype=torch.int8, device=layout.nm_cols.device)
    codes.scatter_(1, layout.nm_cols, NM)
    codes.scatter_(1, layout.dense_cols, DENSE)
    return codes


def _check_previous(previous: object, shape: tuple[int, ...], n: int, m: int,
                    row_order: torch.Tensor | None, sparsity: float) -> RegionLayout:
    if not isinstance(previous, RegionLayout):
        raise TypeError(f"previous must be a RegionLayout, got {type(previous).__name__}")
    if tuple(previous.shape) != tuple(shape):
        raise ValueError(
            f"previous layout is for a weight of shape {previous.shape}, but scores have shape "
            f"{tuple(shape)}; pass the layout of the same layer"
        )
    if (previous.n, previous.m) != (n, m):
        raise ValueError(f"previous layout uses {previous.n}:{previous.m}, but n={n}, m={m} was given")
    if row_order is not None and not torch.equal(row_order.cpu().long(), previous.row_order.cpu()):
        raise ValueError(
            "row_order differs from previous.row_order; stages keep the output row order of the "
            "first stage, so pass row_order=None (or the same order)"
        )
    earlier = previous.target_sparsity if not math.isnan(previous.target_sparsity) else previous.sparsity
    if sparsity < earlier - 1e-12:
        raise ValueError(
            f"sparsity={sparsity} is lower than the previous stage's target {earlier}; gradual "
            f"stages only add zeros, so pass a sparsity >= {earlier}"
        )
    return previous


class _Stage:
    """Per-tile tensors of the previous layout, ranked by the current scores."""

    def __init__(self, gemm: torch.Tensor, previous: RegionLayout, n: int, m: int) -> None:
        device = gemm.device
        self.gemm, self.n, self.m = gemm, n, m
        self.rows = previous.tile_row_indices.to(device)
        self.pruned = previous.pruned_cols.to(device)
        self.nm = previous.nm_cols.to(device)
        self.keep = previous.nm_keep.to(device)
        dense = previous.dense_cols.to(device)

        tiles = tile_view(gemm, previous.row_order.to(device), previous.tile_rows)
        self.tiles = tiles if tiles.dtype == torch.float64 else tiles.float()
        self.sums = column_sums(self.tiles)
        num_tiles, tile_rows, _ = self.tiles.shape

        order = torch.sort(self.sums.gather(1, dense), dim=1, descending=True, stable=True).indices
        self.dense_ranked = dense.gather(1, order)

        nm_values = self.tiles.gather(2, self.nm[:, None, :].expand(num_tiles, tile_rows, -1))
        kept_importance = (nm_values * self.keep).sum(dim=1, dtype=torch.float64)
        self.group_values = kept_importance.reshape(num_tiles, -1, m).sum(dim=-1)

    def build(self, counts: RegionCounts) -> tuple[torch.Tensor, ...]:
        """Return ``(pruned_cols, nm_cols, dense_cols, nm_keep, retained)`` for ``counts``."""
        m, columns = self.m, self.sums.shape[1]
        num_tiles, tile_rows, _ = self.tiles.shape
        old_width = self.nm.shape[1]
        dense = self.dense_ranked[:, : counts.dense]
        leftover = self.dense_ranked[:, counts.dense :]
        spare = leftover.shape[1]

        # Choose whole groups: previous groups by kept importance, new groups from the
        # highest-ranked leftover dense columns by n/m of their summed importance.
        new_values = self.sums.gather(1, leftover).reshape(num_tiles, -1, m).sum(dim=-1) * (self.n / m)
        values = torch.cat([self.group_values, new_values], dim=1)
        chosen_index = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : counts.nm // m]
        chosen = torch.zeros_like(values, dtype=torch.bool).scatter_(1, chosen_index, True)
        old_chosen = chosen[:, : self.group_values.shape[1]].repeat_interleave(m, dim=1)
        new_count = chosen[:, self.group_values.shape[1] :].sum(dim=1, keepdim=True) * m

        # New N:M columns in ascending column order, unchosen leftovers after them.
        positions = torch.arange(spare, device=leftover.device)
        new_chosen = positions < new_count
        natural = torch.sort(torch.where(new_chosen, leftover, columns + leftover), dim=1, stable=True)
        leftover = leftover.gather(1, natural.indices)
        new_chosen = new_chosen.gather(1, natural.indices)

        # N:M columns: surviving previous groups in their previous order, then the new groups.
        candidates = torch.cat([self.nm, leftover], dim=1)
        selected = torch.cat([old_chosen, new_chosen], dim=1)
        slots = torch.arange(candidates.shape[1], device=candidates.device)
        pick = torch.sort(torch.where(selected, slots, candidates.shape[1] + slots), dim=1).values
        pick = pick[:, : counts.nm]
        nm_cols = candidates.gather(1, pick)

        fresh = nm_keep_for(self.gemm, self.rows, nm_cols, n=self.n, m=m)
        padding = torch.zeros(num_tiles, tile_rows, spare, dtype=torch.bool, device=fresh.device)
        carried = torch.cat([self.keep, padding], dim=2).gather(2, pick[:, None, :].expand_as(fresh))
        nm_keep = torch.where((pick < old_width)[:, None, :], carried, fresh)

        everything = torch.cat([self.pruned, self.nm, leftover], dim=1)
        prune_flag = torch.cat([torch.ones_like(self.pruned, dtype=torch.bool), ~old_chosen, ~new_chosen], dim=1)
        pruned_cols = torch.sort(torch.where(prune_flag, everything, columns + everything), dim=1).values
        pruned_cols = pruned_cols[:, : counts.pruned]

        nm_values = self.tiles.gather(2, nm_cols[:, None, :].expand(num_tiles, tile_rows, counts.nm))
        retained = self.sums.gather(1, dense).sum() + (nm_values * nm_keep).sum(dtype=torch.float64)
        return pruned_cols, nm_cols, dense.sort(dim=1).values, nm_keep, float(retained)


def allocate_monotone(
    gemm: torch.Tensor,
    sparsity: float,
    previous: RegionLayout,
    *,
    method: str = "flexhinm",
    vector_sparsity: float | None = None,
    shape: tuple[int, ...] | None = None,
    n: int = 2,
    m: int = 4,
    row_order: torch.Tensor | None = None,
) -> RegionLayout:
    """Allocate the next stage of a layer so that it only removes weights from ``previous``.

    Called by :func:`flexhinm.allocate_regions` when it receives ``previous``; ``gemm`` is the
    checked GEMM view of the current scores.

    Raises:
        TypeError: if ``previous`` is not a :class:`RegionLayout`.
        ValueError: if ``previous`` is for another shape or N:M pattern, if ``row_order`` differs
            from ``previous.row_order``, or if ``sparsity`` is below the previous target. Also when
            no count triple of ``method`` at ``sparsity`` has at least the previous pruned count
            and at most the previous dense count.
    """
    shape = tuple(shape) if shape is not None else tuple(gemm.shape)
    previous = _check_previous(previous, shape, n, m, row_order, sparsity)
    old_pruned, _, old_dense = previous.counts

    candidates = region_counts(gemm.shape[1], sparsity, method, n=n, m=m)
    allowed = [c for c in candidates if c.pruned >= old_pruned and c.dense <= old_dense]
    if not allowed:
        raise ValueError(
            f"method={method!r} at sparsity={sparsity} allows no split that only removes weights "
            f"from the previous layout (pruned={old_pruned}, dense={old_dense} per tile); "
            f"its splits are {[(c.pruned, c.nm, c.dense) for c in candidates]} as (pruned, N:M, "
            f"dense). Use method='flexhinm' or a higher sparsity"
        )
    if vector_sparsity is not None:
        select_vector_sparsity(candidates, vector_sparsity, sparsity, n=n, m=m)
        allowed = [select_vector_sparsity(allowed, vector_sparsity, sparsity, n=n, m=m)]

    stage = _Stage(gemm, previous, n, m)
    results = [stage.build(counts) for counts in allowed]
    best = max(range(len(results)), key=lambda index: (results[index][4], -index))
    pruned_cols, nm_cols, dense_cols, nm_keep, _ = results[best]
    return RegionLayout(
        shape=shape,
        tile_rows=previous.tile_rows,
        row_order=previous.row_order.to(gemm.device),
        pruned_cols=pruned_cols,
        nm_cols=nm_cols,
        dense_cols=dense_cols,
        nm_keep=nm_keep,
        n=n,
        m=m,
        method=method,
        target_sparsity=sparsity,
    )


def check_monotone(previous: RegionLayout, layout: RegionLayout) -> None:
    """Raise ``ValueError`` unless ``layout`` follows ``previous`` by the monotone rules.

    The checks, per tile:

    * pruned columns stay pruned, and no N:M column becomes dense;
    * each previous N:M group is either pruned entirely or kept as one aligned group with the same
      column order and the same ``nm_keep``;
    * the row order, shape, tile size and N:M pattern are unchanged.

    Example:
        >>> scores = torch.rand(8, 32, generator=torch.Generator().manual_seed(0))
        >>> from flexhinm.regions.allocation import allocate_regions
        >>> first = allocate_regions(scores, 0.5, tile_rows=4)
        >>> check_monotone(first, allocate_regions(scores, 0.75, tile_rows=4, previous=first))
    """
    fixed = ("shape", "tile_rows", "n", "m")
    for name in fixed:
        if getattr(previous, name) != getattr(layout, name):
            raise ValueError(f"{name} changed from {getattr(previous, name)} to {getattr(layout, name)}")
    if not torch.equal(previous.row_order.cpu(), layout.row_order.cpu()):
        raise ValueError("row_order changed between stages")

    before = tile_regions(previous).cpu()
    after = tile_regions(layout).cpu()
    if bool(((before == PRUNED) & (after != PRUNED)).any()):
        raise ValueError("a pruned column came back in a later stage")
    if bool(((before == NM) & (after == DENSE)).any()):
        raise ValueError("an N:M column became dense in a later stage")

    m = previous.m
    old_cols = previous.nm_cols.cpu()
    num_tiles, old_width = old_cols.shape
    position = torch.full((num_tiles, layout.columns), -1, dtype=torch.int64)
    new_cols = layout.nm_cols.cpu()
    position.scatter_(1, new_cols, torch.arange(new_cols.shape[1]).expand(num_tiles, -1))
    moved = position.gather(1, old_cols).reshape(num_tiles, old_width // m, m)

    still_nm = moved >= 0
    if bool((still_nm.any(dim=-1) & ~still_nm.all(dim=-1)).any()):
        raise ValueError("an N:M group was split: some of its columns were pruned and others kept")
    survived = still_nm.all(dim=-1)
    expected = moved[..., :1] + torch.arange(m)
    aligned = (moved == expected).all(dim=-1) & (moved[..., 0] % m == 0)
    if bool((survived & ~aligned).any()):
        raise ValueError("a surviving N:M group changed its columns' order or group boundaries")

    if not bool(survived.any()):
        return
    old_keep = previous.nm_keep.cpu()
    new_keep = layout.nm_keep.cpu()
    flat = moved.reshape(num_tiles, old_width).clamp(min=0)
    carried = new_keep.gather(2, flat[:, None, :].expand(-1, old_keep.shape[1], -1))
    same = (carried == old_keep).all(dim=1).reshape(num_tiles, -1, m).all(dim=-1)
    if bool((survived & ~same).any()):
        raise ValueError("a surviving N:M group changed its N:M choice (nm_keep)")
