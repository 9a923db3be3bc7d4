"""Gyro-Permutation: output-channel and per-tile input-channel permutation for hierarchical N:M.

Yu et al. (2024, arXiv 2407.20496) permute the channels of a layer so that column-vector pruning
and 2:4 keep more of the important weights. The search has two phases, and each repeats the same
three steps until it stops improving:

1. **Output-channel phase** (rows of the GEMM view). Sample ``s`` rows from every tile and split
   the sampled rows into one cluster per tile with balanced k-means (``s > 1``). A linear
   assignment then gives each tile the cluster that makes column-vector pruning remove the least
   importance. See :func:`gyro_output_permutation`.
2. **Input-channel phase** (the N:M columns of each tile). Sample one column from every group of
   ``m`` and give each group one sampled column by a linear assignment on the importance that N:M
   would remove. See :func:`gyro_input_permutation`.

A move is kept only if it strictly lowers the pruned importance, so neither phase can lose
importance. Both phases only choose which original weights survive. The result is a
:class:`~flexhinm.regions.RegionLayout` whose ``row_order`` and ``nm_cols`` record the orders, and
its masks are in the weight's original coordinates, so training never needs permuted weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import torch

from ..regions.layout import RegionLayout
from ..regions.tiles import nm_keep_for, top_n_sum
from ._args import (
    available_cpus,
    single_torch_thread,
    check_count,
    check_schedule,
    check_tile_rows,
    gemm_importance,
    make_generator,
    progress_bar,
)
from .cost import linear_assignment, replacement_retained, top_k_sum, vector_assignment_cost
from .kmeans import balanced_kmeans
from .stats import PhaseStats

__all__ = ["DEFAULT_SCHEDULE", "gyro_input_permutation", "gyro_output_permutation"]

_logger = logging.getLogger(__name__)

DEFAULT_SCHEDULE = (8, 1, 4, 1, 2, 1, 1)

# Largest (tiles x groups x groups) block of replacement costs built at once in the input phase.
_INPUT_BATCH_ELEMENTS = 8_000_000


def _vector_retained(matrix: torch.Tensor, order: torch.Tensor, tile_rows: int,
                     kept_columns: int) -> tuple[torch.Tensor, float]:
    """Return per-tile column sums ``(tiles, columns)`` and the importance vector pruning keeps."""
    sums = matrix[order].reshape(-1, tile_rows, matrix.shape[1]).sum(dim=1)
    return sums, float(top_k_sum(sums, kept_columns).sum())


@single_torch_thread
def gyro_output_permutation(
    scores: torch.Tensor,
    tile_rows: int = 64,
    *,
    kept_columns: int,
    schedule: Sequence[int] = DEFAULT_SCHEDULE,
    max_failures: int = 1,
    max_rounds: int = 1000,
    seed: int | torch.Generator = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, PhaseStats]:
    """Find an output-row order whose tiles lose less importance to column-vector pruning.

    The objective is the importance that column-vector pruning keeps: every tile of ``tile_rows``
    consecutive rows of ``row_order`` keeps its ``kept_columns`` columns with the largest summed
    importance. For each entry ``s`` of ``schedule`` the search repeats the following round until
    ``max_failures`` rounds of that entry have been rejected:

    * sample ``s`` distinct rows from every tile;
    * for ``s > 1``, split the ``tiles * s`` sampled rows into ``tiles`` clusters of ``s`` rows
      with :func:`~flexhinm.permute.balanced_kmeans` on their importance rows. For ``s == 1``
      every sampled row is its own cluster;
    * build the ``(tiles, tiles)`` matrix of the importance tile ``p`` prunes when its unsampled
      rows are joined by cluster ``j``, solve the linear assignment, and keep the new order only if
      the total pruned importance strictly drops.

    Failures are counted per schedule entry, and a success does not reset them. ``max_rounds``
    bounds the rounds of one entry.

    Args:
        scores: non-negative importance shaped like the weight (2-D, 3-D or 4-D), any float dtype.
        tile_rows: rows per tile ``V``; it must divide the output rows.
        kept_columns: columns each tile keeps, in ``[0, columns]``; for HiNM at sparsity ``t``
            these are the columns kept at vector sparsity ``2t - 1`` (see
            :func:`~flexhinm.permute.output_kept_columns`).
        schedule: rows sampled per tile in each step, each in ``[1, tile_rows]``.
        max_failures: rejected rounds after which a schedule entry ends, ``>= 1``.
        max_rounds: rounds per schedule entry at most, ``>= 1``.
        seed: int seed or a CPU ``torch.Generator``; the same seed gives the same order.
        progress: show a tqdm bar over the schedule.

    Returns:
        ``(row_order, stats)``: ``row_order`` is a ``(rows,)`` int64 permutation (rows inside each
        tile sorted ascending), and ``stats`` a :class:`PhaseStats` whose retained values are the
        importance column-vector pruning keeps.

    Raises:
        ValueError: for a ``tile_rows`` that does not divide the rows, an invalid
            ``kept_columns``, ``schedule``, ``max_failures`` or ``max_rounds``, or NaN, infinite
            or negative scores.

    Example:
        Rows 0 and 2 use column 0, rows 1 and 3 use column 1. Sampling both rows of each tile lets
        k-means pair the alike rows, and each tile then keeps all of its importance:

        >>> scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        >>> order, stats = gyro_output_permutation(scores, 2, kept_columns=1, schedule=(2,))
        >>> sorted(order.reshape(2, 2).tolist()), stats.retained_before, stats.retained_after
        ([[0, 2], [1, 3]], 2.0, 4.0)
    """
    started = time.perf_counter()
    matrix = gemm_importance(scores)
    rows, columns = matrix.shape
    check_tile_rows(tile_rows, rows, tuple(scores.shape))
    check_count(kept_columns, "kept_columns", 0)
    if kept_columns > columns:
        raise ValueError(f"kept_columns={kept_columns} exceeds the {columns} columns of the layer")
    schedule = check_schedule(schedule, tile_rows)
    check_count(max_failures, "max_failures", 1)
    check_count(max_rounds, "max_rounds", 1)
    generator = make_generator(seed)

    tiles = rows // tile_rows
    order = torch.arange(rows)
    start_sums, start_retained = _vector_retained(matrix, order, tile_rows, kept_columns)
    stats = PhaseStats("output", start_retained, start_retained)
    if tiles == 1 or kept_columns in (0, columns):
        stats.seconds = time.perf_counter() - started
        return order, stats

    # Candidate costs are built in float32, and every move is checked on float64 column sums.
    features = matrix.float()
    sums, retained = start_sums, start_retained
    for samples in progress_bar(schedule, progress, "output-channel phase"):
        failures = 0
        rounds = 0
        while failures < max_failures and rounds < max_rounds:
            rounds += 1
            grid = order.reshape(tiles, tile_rows)

            # Sample `samples` distinct slots of every tile.
            slots = torch.rand(tiles, tile_rows, generator=generator).argsort(dim=1)[:, :samples]
            sampled = grid.gather(1, slots)
            if samples == 1:
                clusters = sampled
            else:
                labels = balanced_kmeans(features[sampled.reshape(-1)], tiles, generator=generator)
                by_cluster = torch.sort(labels, stable=True).indices
                clusters = sampled.reshape(-1)[by_cluster].reshape(tiles, samples)

            # Cost of every (tile, cluster) pairing, then the cheapest one-to-one pairing.
            rest_sums = sums - matrix[sampled].sum(dim=1)
            cluster_sums = matrix[clusters].sum(dim=1)
            cost = vector_assignment_cost(rest_sums.float(), cluster_sums.float(), kept_columns)
            chosen = linear_assignment(cost)
            new_sums = rest_sums + cluster_sums[chosen]
            new_retained = float(top_k_sum(new_sums, kept_columns).sum())

            if new_retained > retained:
                candidate = grid.clone()
                candidate.scatter_(1, slots, clusters[chosen])
                order, sums, retained = candidate.reshape(-1), new_sums, new_retained
                stats.accepted += 1
            else:
                failures += 1
                stats.failures += 1
        stats.rounds += rounds
        _logger.debug("output phase: %d samples per tile, %d rounds, retained %.6g",
                      samples, rounds, retained)

    # The running sums were updated move by move. Recomputing them from scratch makes sure that
    # rounding can never return an order worse than the identity.
    _, retained = _vector_retained(matrix, order, tile_rows, kept_columns)
    if retained < start_retained:
        order, retained = torch.arange(rows), start_retained
    stats.retained_after = retained
    stats.seconds = time.perf_counter() - started
    order = order.reshape(tiles, tile_rows).sort(dim=1).values.reshape(-1)
    return order, stats


def _nm_retained_per_tile(tile_scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Return the N:M importance ``(tiles,)`` of ``(tiles, rows, columns)`` in group order."""
    tiles, rows, columns = tile_scores.shape
    groups = tile_scores.reshape(tiles, rows, columns // m, m)
    return top_n_sum(groups, n).sum(dim=(1, 2))


def _propose_exchange(tile_scores: torch.Tensor, slots: torch.Tensor, n: int, m: int):
    """Return ``(tiles, columns)`` gather indices that give each group its assigned sampled column.

    ``slots[b, p]`` is the position inside group ``p`` of tile ``b`` of the sampled column.
    """
    tiles, rows, columns = tile_scores.shape
    groups = columns // m
    grouped = tile_scores.reshape(tiles, rows, groups, m)

    # The m - 1 columns that stay in each group, and the sampled column of each group.
    others = torch.tensor([[i for i in range(m) if i != r] for r in range(m)])[slots]
    fixed = grouped.gather(3, others[:, None].expand(tiles, rows, groups, m - 1))
    incoming = grouped.gather(3, slots[:, None, :, None].expand(tiles, rows, groups, 1))[..., 0]
    retained = replacement_retained(fixed.float(), incoming.float(), n)   # (tiles, groups, groups)

    # scipy releases the GIL while it solves, so large assignments of several tiles run in
    # parallel threads, one per CPU. Small ones finish faster than a thread pool starts.
    def solve(tile: int) -> torch.Tensor:
        return linear_assignment(retained[tile], maximize=True)

    workers = min(available_cpus(), tiles) if groups >= 64 else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            chosen = list(pool.map(solve, range(tiles)))
    else:
        chosen = [solve(tile) for tile in range(tiles)]

    index = torch.arange(columns).repeat(tiles, 1)
    targets = torch.arange(groups) * m + slots                            # (tiles, groups)
    for tile in range(tiles):
        index[tile, targets[tile]] = targets[tile, chosen[tile]]
    return index


@single_torch_thread
def gyro_input_permutation(
    scores: torch.Tensor,
    layout: RegionLayout,
    *,
    max_failures: int = 3,
    max_rounds: int = 1000,
    seed: int | torch.Generator = 0,
    progress: bool = False,
) -> tuple[RegionLayout, PhaseStats]:
    """Regroup the N:M columns of every tile so that N:M keeps more importance.

    Each tile searches on its own, but all tiles still searching take one round together. In a
    round, every tile samples one column from each group of ``m`` of its N:M region. It builds the
    ``(groups, groups)`` matrix of the importance group ``p`` keeps with its ``m - 1`` other
    columns plus sampled column ``j``, and solves the linear assignment. The tile keeps the new
    grouping only if its N:M importance strictly rises. A tile stops after ``max_failures``
    rejected rounds (failures are never reset) or ``max_rounds`` rounds.

    Only ``nm_cols`` (the group order) and ``nm_keep`` change. ``nm_keep`` is recomputed as the
    top ``n`` of every group, so a learned ``nm_keep`` in ``layout`` is replaced.

    Args:
        scores: non-negative importance shaped like the weight ``layout.shape``.
        layout: the region layout to regroup; its N:M region must not be empty.
        max_failures: rejected rounds after which a tile stops, ``>= 1``.
        max_rounds: rounds per tile at most, ``>= 1``.
        seed: int seed or a CPU ``torch.Generator``; the same seed gives the same grouping.
        progress: show a tqdm bar that advances once per round.

    Returns:
        ``(new_layout, stats)``; the stats' retained values are ``layout.retained_importance``
        before and after.

    Raises:
        ValueError: if the N:M region is empty, ``scores`` does not match ``layout.shape``, or
            the scores are NaN, infinite or negative.
    """
    started = time.perf_counter()
    if not isinstance(layout, RegionLayout):
        raise TypeError(f"layout must be a RegionLayout, got {type(layout).__name__}")
    if tuple(scores.shape) != layout.shape:
        raise ValueError(f"scores has shape {tuple(scores.shape)} but the layout is for a weight "
                         f"of shape {layout.shape}; pass the scores the layout was built from")
    matrix = gemm_importance(scores)
    tiles, columns = layout.nm_cols.shape
    if columns == 0:
        raise ValueError(
            f"the layout (method={layout.method!r}, columns per tile pruned/N:M/dense = "
            f"{layout.counts}) has an empty N:M region, so there is nothing to regroup; "
            f"skip the input-channel phase for this layer"
        )
    check_count(max_failures, "max_failures", 1)
    check_count(max_rounds, "max_rounds", 1)
    generator = make_generator(seed)
    n, m = layout.n, layout.m
    groups = columns // m

    nm_cols = layout.nm_cols.detach().cpu().clone()
    rows_index = layout.tile_row_indices.cpu()
    tile_scores = matrix[rows_index[:, :, None], nm_cols[:, None, :]]     # (tiles, V, columns)
    retained = _nm_retained_per_tile(tile_scores, n, m)
    stats = PhaseStats("input", layout.retained_importance(scores), float("nan"))

    failures = torch.zeros(tiles, dtype=torch.int64)
    rounds = torch.zeros(tiles, dtype=torch.int64)
    batch = max(1, _INPUT_BATCH_ELEMENTS // (groups * groups))
    bar = progress_bar(None, progress, "input-channel phase")
    while True:
        active = torch.nonzero((failures < max_failures) & (rounds < max_rounds))[:, 0]
        if len(active) == 0 or groups == 1:
            break
        # Drawn for every tile so that a tile's draws do not depend on which tiles are active.
        slots_all = torch.randint(0, m, (tiles, groups), generator=generator)

        for start in range(0, len(active), batch):
            chunk = active[start:start + batch]
            index = _propose_exchange(tile_scores[chunk], slots_all[chunk], n, m)
            proposal = tile_scores[chunk].gather(2, index[:, None, :].expand(-1, layout.tile_rows,
                                                                             -1))
            proposal_retained = _nm_retained_per_tile(proposal, n, m)

            better = proposal_retained > retained[chunk]
            improved = chunk[better]
            tile_scores[improved] = proposal[better]
            nm_cols[improved] = nm_cols[improved].gather(1, index[better])
            retained[improved] = proposal_retained[better]
            failures[chunk[~better]] += 1
        rounds[active] += 1
        bar.update(1)
    bar.close()

    keep = nm_keep_for(matrix, rows_index, nm_cols, n=n, m=m)
    device = layout.nm_cols.device
    new_layout = replace(layout, nm_cols=nm_cols.to(device), nm_keep=keep.to(device))

    stats.rounds = int(rounds.sum())
    stats.failures = int(failures.sum())
    stats.accepted = stats.rounds - stats.failures
    stats.retained_after = new_layout.retained_importance(scores)
    stats.seconds = time.perf_counter() - started
    _logger.debug("input phase: %d tiles, %d rounds, %d accepted, retained %.6g -> %.6g",
                  tiles, stats.rounds, stats.accepted, stats.retained_before, stats.retained_after)
    return new_layout, stats
