"""Tests of the Gyro-Permutation phases, their cost matrices and balanced k-means."""

from __future__ import annotations

import itertools

import pytest
import torch

from flexhinm.gemm import to_gemm
from flexhinm.permute import (
    balanced_kmeans,
    gyro_input_permutation,
    gyro_output_permutation,
    linear_assignment,
    replacement_retained,
    top_k_sum,
    vector_assignment_cost,
)
from flexhinm.regions import allocate_regions, nm_keep_for

# (weight shape, tile_rows): Linear and Conv2d shapes, tiles of 4 to 16 rows.
LAYERS = [((32, 48), 8), ((64, 64), 16), ((16, 8, 3, 3), 4), ((32, 16, 1, 1), 8), ((24, 40), 4)]


def heavy_tailed(shape, seed):
    """Non-negative heavy-tailed importance, like |w|^3 of Gaussian weights."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).abs() ** 3


def vector_retained(scores, order, tile_rows, kept):
    """Importance kept by column-vector pruning of the tiles of ``order`` (brute force per tile)."""
    matrix = to_gemm(scores).double()
    total = 0.0
    for tile in order.reshape(-1, tile_rows):
        sums = matrix[tile].sum(dim=0)
        total += float(sums.sort(descending=True).values[:kept].sum())
    return total


def planted_rows(seed, rows=32, columns=32, tile_rows=8):
    """Rows of 4 types, each important on its own 8 columns, scattered so every tile mixes types."""
    generator = torch.Generator().manual_seed(seed)
    types = torch.arange(rows) % (rows // tile_rows)
    scores = torch.rand(rows, columns, generator=generator) * 0.01
    for row, kind in enumerate(types.tolist()):
        scores[row, 8 * kind:8 * kind + 8] += 1.0
    return scores


def planted_groups(seed, rows=8, columns=32):
    """One tile whose rows are important on 2 of every 4 columns of a hidden grouping, shuffled."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(rows, columns, generator=generator) * 0.01
    scores[:, : columns // 2] += 1.0                      # hidden groups: (0, 1, 16, 17), ...
    hidden = torch.arange(columns).reshape(2, -1, 2).permute(1, 0, 2).reshape(-1)
    return scores[:, torch.argsort(hidden)]


# ----------------------------------------------------------------------------- cost matrices
@pytest.mark.parametrize("k", [0, 1, 3, 5, 7, 8])
def test_top_k_sum_matches_sort(k):
    """top_k_sum equals the sum of the k largest entries, on both sides of length / 2."""
    values = heavy_tailed((5, 8), seed=k).double()
    expected = values.sort(dim=-1, descending=True).values[:, :k].sum(dim=-1)
    torch.testing.assert_close(top_k_sum(values, k), expected, rtol=1e-12, atol=1e-12)


def test_vector_cost_matches_brute_force():
    """Each entry is the importance a tile prunes with one cluster joined to its kept rows."""
    rest = heavy_tailed((3, 12), seed=1).double()
    clusters = heavy_tailed((3, 12), seed=2).double()
    cost = vector_assignment_cost(rest, clusters, kept_columns=5)
    for p, j in itertools.product(range(3), range(3)):
        joined = rest[p] + clusters[j]
        expected = float(joined.sort().values[:7].sum())
        assert abs(float(cost[p, j]) - expected) < 1e-9, (p, j, float(cost[p, j]), expected)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 4), (2, 8)])
def test_replacement_retained_matches_brute_force(n, m):
    """Each entry is the top-n sum per row of a group completed by one incoming column."""
    fixed = heavy_tailed((2, 5, 3, m - 1), seed=m + n).double()
    incoming = heavy_tailed((2, 5, 4), seed=7).double()
    retained = replacement_retained(fixed, incoming, n)
    for b, p, j in itertools.product(range(2), range(3), range(4)):
        group = torch.cat([fixed[b, :, p], incoming[b, :, j, None]], dim=1)
        expected = float(group.sort(dim=1, descending=True).values[:, :n].sum())
        assert abs(float(retained[b, p, j]) - expected) < 1e-9, (b, p, j)


@pytest.mark.parametrize("maximize", [False, True])
def test_linear_assignment_matches_brute_force(maximize):
    """The chosen columns give the optimal total over all 5! assignments."""
    cost = heavy_tailed((5, 5), seed=3).double()
    chosen = linear_assignment(cost, maximize=maximize)
    totals = [float(cost[torch.arange(5), torch.tensor(p)].sum())
              for p in itertools.permutations(range(5))]
    best = max(totals) if maximize else min(totals)
    assert sorted(chosen.tolist()) == list(range(5))
    assert abs(float(cost[torch.arange(5), chosen].sum()) - best) < 1e-12


# ----------------------------------------------------------------------------- balanced k-means
@pytest.mark.parametrize("count,clusters", [(12, 3), (16, 4), (8, 8), (6, 1)])
def test_kmeans_clusters_equal_size(count, clusters):
    """Every label occurs exactly count / clusters times."""
    points = heavy_tailed((count, 5), seed=count)
    labels = balanced_kmeans(points, clusters, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.bincount(labels, minlength=clusters),
                       torch.full((clusters,), count // clusters))


def test_kmeans_separates_blobs():
    """Four well-separated blobs of three points each come back as the four clusters."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = centers.repeat_interleave(3, dim=0) + 0.1 * torch.randn(12, 2, generator=generator)
    labels = balanced_kmeans(points, 4, generator=generator)
    for blob in labels.reshape(4, 3):
        assert len(set(blob.tolist())) == 1, labels.tolist()
    assert len(set(labels.tolist())) == 4


def test_kmeans_rejects_uneven_clusters():
    """A cluster count that does not divide the points raises."""
    with pytest.raises(ValueError, match="clusters=5 does not divide the 12 points"):
        balanced_kmeans(torch.rand(12, 3), 5, generator=torch.Generator())


# ----------------------------------------------------------------------------- output phase
@pytest.mark.parametrize("shape,tile_rows", LAYERS)
def test_output_order_is_bijection(shape, tile_rows):
    """The row order is a permutation of the output rows."""
    scores = heavy_tailed(shape, seed=0)
    order, _ = gyro_output_permutation(scores, tile_rows, kept_columns=to_gemm(scores).shape[1] // 2,
                                       schedule=(4, 1, 2, 1))
    assert torch.equal(order.sort().values, torch.arange(shape[0]))


@pytest.mark.parametrize("shape,tile_rows", LAYERS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_output_never_loses_importance(shape, tile_rows, seed):
    """Column-vector pruning keeps at least as much after the phase, and stats match a recount."""
    scores = heavy_tailed(shape, seed=seed)
    kept = to_gemm(scores).shape[1] // 4 * 2
    order, stats = gyro_output_permutation(scores, tile_rows, kept_columns=kept,
                                           schedule=(4, 1, 2, 1), seed=seed)
    before = vector_retained(scores, torch.arange(shape[0]), tile_rows, kept)
    after = vector_retained(scores, order, tile_rows, kept)
    assert after >= before, (before, after)
    assert abs(stats.retained_before - before) < 1e-9 * before
    assert abs(stats.retained_after - after) < 1e-9 * after


@pytest.mark.parametrize("seed", range(5))
def test_output_groups_planted_rows(seed):
    """Rows that share important columns end up in the same tile more often: strictly better."""
    scores = planted_rows(seed)
    order, stats = gyro_output_permutation(scores, 8, kept_columns=8, seed=seed)
    assert stats.retained_after > stats.retained_before, stats
    assert stats.accepted >= 1


def test_output_keeps_optimal_order():
    """Tiles that already hold one row type each accept no move: ties are not improvements."""
    scores = planted_rows(0)
    grouped = torch.argsort(torch.arange(32) % 4, stable=True)
    order, stats = gyro_output_permutation(scores[grouped], 8, kept_columns=8)
    assert torch.equal(order, torch.arange(32))
    assert stats.accepted == 0
    assert stats.retained_after == stats.retained_before


def test_output_same_seed_same_order():
    """The same seed gives the same order; a generator seeded alike gives it too."""
    scores = heavy_tailed((64, 32), seed=5)
    first, _ = gyro_output_permutation(scores, 8, kept_columns=16, seed=3)
    second, _ = gyro_output_permutation(scores, 8, kept_columns=16, seed=3)
    third, _ = gyro_output_permutation(scores, 8, kept_columns=16,
                                       seed=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    assert torch.equal(first, third)


def test_output_single_tile_is_identity():
    """With one tile there is nothing to move."""
    order, stats = gyro_output_permutation(heavy_tailed((8, 16), 0), 8, kept_columns=8)
    assert torch.equal(order, torch.arange(8))
    assert stats.rounds == 0


def test_output_does_not_mutate_scores():
    """The scores tensor is left unchanged."""
    scores = heavy_tailed((32, 16), seed=1)
    copy = scores.clone()
    gyro_output_permutation(scores, 8, kept_columns=8)
    assert torch.equal(scores, copy)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"tile_rows": 12}, ValueError, "tile_rows=12 does not divide the 32 output rows"),
    ({"kept_columns": 17}, ValueError, "kept_columns=17 exceeds the 16 columns"),
    ({"kept_columns": -1}, ValueError, "kept_columns=-1 must be at least 0"),
    ({"schedule": (16,)}, ValueError, r"schedule=\(16,\) is invalid"),
    ({"schedule": ()}, ValueError, r"schedule=\(\) is invalid"),
    ({"max_failures": 0}, ValueError, "max_failures=0 must be at least 1"),
    ({"seed": 1.5}, TypeError, "seed must be an int or a torch.Generator"),
])
def test_output_rejects_bad_arguments(kwargs, error, match):
    """Invalid tile sizes, counts, schedules and seeds raise with the value in the message."""
    arguments = {"tile_rows": 8, "kept_columns": 8, **kwargs}
    tile_rows = arguments.pop("tile_rows")
    with pytest.raises(error, match=match):
        gyro_output_permutation(heavy_tailed((32, 16), 0), tile_rows, **arguments)


@pytest.mark.parametrize("value,match", [(float("nan"), "NaN or infinite"),
                                         (float("inf"), "NaN or infinite"),
                                         (-1.0, "negative value")])
def test_output_rejects_bad_scores(value, match):
    """NaN, infinite and negative scores raise."""
    scores = heavy_tailed((32, 16), 0)
    scores[3, 5] = value
    with pytest.raises(ValueError, match=match):
        gyro_output_permutation(scores, 8, kept_columns=8)


# ----------------------------------------------------------------------------- input phase
def hinm_layout(scores, tile_rows, row_order=None):
    return allocate_regions(scores, 0.75, "hinm", tile_rows, row_order=row_order)


@pytest.mark.parametrize("shape,tile_rows", LAYERS)
@pytest.mark.parametrize("seed", [0, 1])
def test_input_never_loses_importance(shape, tile_rows, seed):
    """The layout keeps at least as much importance after regrouping, on every layer tried."""
    scores = heavy_tailed(shape, seed=seed)
    layout = hinm_layout(scores, tile_rows)
    regrouped, stats = gyro_input_permutation(scores, layout, seed=seed)
    assert regrouped.retained_importance(scores) >= layout.retained_importance(scores)
    assert stats.retained_before == layout.retained_importance(scores)
    assert stats.retained_after == regrouped.retained_importance(scores)


@pytest.mark.parametrize("shape,tile_rows", LAYERS)
def test_input_only_reorders_nm_columns(shape, tile_rows):
    """Rows, pruned and dense columns stay; each tile's N:M columns are a reordering of the old."""
    scores = heavy_tailed(shape, seed=2)
    layout = allocate_regions(scores, 0.75, "flexhinm", tile_rows, vector_sparsity=0.625)
    regrouped, _ = gyro_input_permutation(scores, layout)
    assert torch.equal(regrouped.row_order, layout.row_order)
    assert torch.equal(regrouped.pruned_cols, layout.pruned_cols)
    assert torch.equal(regrouped.dense_cols, layout.dense_cols)
    assert torch.equal(regrouped.nm_cols.sort(dim=1).values, layout.nm_cols.sort(dim=1).values)


def test_input_keeps_top_n_of_each_group():
    """nm_keep is the top n of every new group, as the region helper computes it."""
    scores = heavy_tailed((32, 48), seed=4)
    regrouped, _ = gyro_input_permutation(scores, hinm_layout(scores, 8))
    expected = nm_keep_for(scores, regrouped, regrouped.nm_cols)
    assert torch.equal(regrouped.nm_keep, expected)


@pytest.mark.parametrize("seed", range(5))
def test_input_regroups_planted_columns(seed):
    """A shuffled grouping that could keep every large weight gets strictly better."""
    scores = planted_groups(seed)
    layout = allocate_regions(scores, 0.5, "hinm", 8)
    regrouped, stats = gyro_input_permutation(scores, layout, seed=seed)
    assert regrouped.retained_importance(scores) > layout.retained_importance(scores), stats


def test_input_keeps_optimal_grouping():
    """A grouping that already keeps every large weight accepts no move."""
    scores = planted_groups(0)
    layout = allocate_regions(scores, 0.5, "hinm", 8)
    best, _ = gyro_input_permutation(scores, layout)
    again, stats = gyro_input_permutation(scores, best)
    large = float(scores[scores >= 1].sum())
    assert abs(best.retained_importance(scores) - large) < 0.05, "the planted grouping was missed"
    assert stats.accepted == 0
    assert torch.equal(again.nm_cols, best.nm_cols)


def test_input_same_seed_same_layout():
    """The same seed gives the same grouping."""
    scores = heavy_tailed((32, 64), seed=6)
    layout = hinm_layout(scores, 8)
    first, _ = gyro_input_permutation(scores, layout, seed=11)
    second, _ = gyro_input_permutation(scores, layout, seed=11)
    assert torch.equal(first.nm_cols, second.nm_cols)
    assert torch.equal(first.nm_keep, second.nm_keep)


def test_input_does_not_mutate_layout():
    """The layout passed in keeps its N:M columns and choices."""
    scores = heavy_tailed((32, 64), seed=7)
    layout = hinm_layout(scores, 8)
    nm_cols, nm_keep = layout.nm_cols.clone(), layout.nm_keep.clone()
    gyro_input_permutation(scores, layout)
    assert torch.equal(layout.nm_cols, nm_cols)
    assert torch.equal(layout.nm_keep, nm_keep)


def test_input_rejects_empty_nm_region():
    """An OVW layout has no N:M columns to regroup."""
    scores = heavy_tailed((32, 64), seed=0)
    layout = allocate_regions(scores, 0.75, "ovw", 8)
    with pytest.raises(ValueError, match="empty N:M region"):
        gyro_input_permutation(scores, layout)


def test_input_rejects_mismatched_scores():
    """Scores of another shape than the layout's weight raise."""
    scores = heavy_tailed((32, 64), seed=0)
    with pytest.raises(ValueError, match=r"scores has shape \(32, 32\)"):
        gyro_input_permutation(scores[:, :32], hinm_layout(scores, 8))


def test_input_rejects_nan_scores():
    """NaN scores raise."""
    scores = heavy_tailed((32, 64), seed=0)
    layout = hinm_layout(scores, 8)
    scores[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        gyro_input_permutation(scores, layout)


def test_input_rejects_non_layout():
    """Anything but a RegionLayout raises TypeError."""
    with pytest.raises(TypeError, match="layout must be a RegionLayout"):
        gyro_input_permutation(torch.rand(8, 8), "hinm")
