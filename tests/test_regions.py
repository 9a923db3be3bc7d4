"""Tests for region counts, region allocation (OVW, HiNM, FlexHiNM) and the region layout object."""

from __future__ import annotations

import pytest
import torch

from flexhinm import (
    RegionLayout,
    allocate_regions,
    from_gemm,
    nm_keep_for,
    nm_mask,
    sparsity_of,
    to_gemm,
)
from flexhinm.regions import region_counts

METHODS = ("ovw", "hinm", "flexhinm")


def heavy_tailed(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Return |Student-t| scores, seeded."""
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(*shape, generator=generator, dtype=torch.float64)
    chi = torch.randn(3, *shape, generator=generator, dtype=torch.float64).square().sum(0) / 3
    return (normal / chi.sqrt()).abs().to(dtype)


# ----------------------------------------------------------------------------- counts


def test_counts_hand_example() -> None:
    """A 768-column tile at 75 % gives the worked HiNM, OVW and FlexHiNM counts."""
    flex = region_counts(768, 0.75)
    assert (flex[0].pruned, flex[0].nm, flex[0].dense) == (384, 384, 0)
    assert (flex[-1].pruned, flex[-1].nm, flex[-1].dense) == (576, 0, 192)
    assert any((c.pruned, c.nm, c.dense) == (480, 192, 96) for c in flex)
    assert region_counts(768, 0.75, "ovw")[0].pruned == 576
    assert region_counts(768, 0.75, "hinm")[0].nm == 384


def test_counts_rounding_unreachable_target() -> None:
    """At 90 % of 144 columns the closest reachable zero count is 130 for FlexHiNM, 128 for OVW."""
    flex = region_counts(144, 0.9)
    assert {c.pruned + c.nm // 2 for c in flex} == {130}
    assert [c.pruned for c in flex] == [116, 120, 124, 128]
    assert region_counts(144, 0.9, "ovw")[0].pruned == 128
    assert region_counts(144, 0.9, "hinm")[0].pruned == 116


@pytest.mark.parametrize("method, columns, sparsity, expected", [
    ("hinm", 8, 0.875, (4, 4, 0)),      # a tie between 75 % and 100 %
    ("ovw", 8, 0.9, (4, 0, 4)),         # 100 % is closest
    ("ovw", 4, 0.9, (0, 0, 4)),         # one group: it stays dense
    ("flexhinm", 8, 0.95, (4, 4, 0)),   # 7 of 8 zeros per row
])
def test_counts_never_prune_whole_layer(method: str, columns: int, sparsity: float, expected: tuple) -> None:
    """A zero count that would prune every column gives way to the closest one that keeps a weight."""
    candidates = region_counts(columns, sparsity, method)
    assert all(c.sparsity() < 1 for c in candidates)
    assert (candidates[-1].pruned, candidates[-1].nm, candidates[-1].dense) == expected


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.5, 0.6, 0.75, 0.8, 0.875, 0.9, 0.93])
@pytest.mark.parametrize("columns", [16, 36, 144, 576])
def test_counts_properties(method: str, sparsity: float, columns: int) -> None:
    """Counts are multiples of 4, sum to the columns, and miss the target by at most one group."""
    candidates = region_counts(columns, sparsity, method)
    for counts in candidates:
        assert counts.pruned % 4 == 0, counts
        assert counts.nm % 4 == 0, counts
        assert counts.dense % 4 == 0, counts
        assert counts.columns == columns
        assert abs(counts.sparsity() - sparsity) <= 4 / columns + 1e-12
    assert len({c.sparsity() for c in candidates}) == 1, "candidates differ in sparsity"
    if method == "ovw":
        assert candidates[0].nm == 0
    if method == "hinm":
        assert candidates[0].dense == 0


@pytest.mark.parametrize("n, m", [(1, 4), (2, 8), (4, 8)])
def test_counts_general_nm(n: int, m: int) -> None:
    """Other N:M patterns keep the zero count of every candidate within one group of the target."""
    for counts in region_counts(64, 0.8, n=n, m=m):
        assert counts.pruned % m == 0, counts
        assert counts.nm % m == 0, counts
        assert abs(counts.sparsity(n, m) - 0.8) <= m / 64


# ----------------------------------------------------------------------------- allocation


def test_allocate_hand_example_hinm() -> None:
    """One 2x8 tile with HiNM at 75 %: the exact expected regions and mask."""
    scores = torch.tensor([[9.0, 0.1, 5.0, 0.2, 4.0, 6.0, 0.3, 7.0],
                           [8.0, 0.1, 1.0, 0.2, 3.0, 5.0, 0.3, 2.0]])
    # Column sums 17, .2, 6, .4, 7, 11, .6, 9: the top four form one 2:4 group, the rest is pruned.
    layout = allocate_regions(scores, 0.75, "hinm", tile_rows=2)
    assert layout.counts == (4, 4, 0)
    assert layout.pruned_cols.tolist() == [[1, 2, 3, 6]]
    assert layout.nm_cols.tolist() == [[0, 4, 5, 7]]
    expected = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 1],
                             [1, 0, 0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(layout.mask(), expected)


def test_allocate_hand_example_ovw() -> None:
    """One 1x8 tile with OVW at 50 % keeps the four largest columns."""
    scores = torch.tensor([[9.0, 0.1, 5.0, 0.2, 4.0, 6.0, 0.3, 7.0]])
    layout = allocate_regions(scores, 0.5, "ovw", tile_rows=1)
    assert layout.dense_cols.tolist() == [[0, 2, 5, 7]]
    assert layout.pruned_cols.tolist() == [[1, 3, 4, 6]]


def test_allocate_hand_example_flexhinm() -> None:
    """One 1x16 tile with FlexHiNM at 50 %, v = 0.25: 4 dense, 8 in 2:4 (natural groups), 4 pruned."""
    scores = torch.tensor([[10.0, 9.0, 0.1, 0.2, 8.0, 0.3, 1.0, 2.0,
                            3.0, 0.4, 4.0, 5.0, 6.0, 7.0, 0.5, 0.6]])
    layout = allocate_regions(scores, 0.5, "flexhinm", tile_rows=1, vector_sparsity=0.25)
    assert layout.counts == (4, 8, 4)
    assert layout.dense_cols.tolist() == [[0, 1, 4, 13]]
    assert layout.nm_cols.tolist() == [[6, 7, 8, 10, 11, 12, 14, 15]]
    assert layout.pruned_cols.tolist() == [[2, 3, 5, 9]]
    kept_columns = sorted(torch.nonzero(layout.mask()[0]).flatten().tolist())
    assert kept_columns == [0, 1, 4, 8, 10, 11, 12, 13]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875, 0.9])
@pytest.mark.parametrize("shape, tile_rows", [((32, 64), 8), ((24, 144), 4), ((16, 8, 3, 3), 8)])
def test_allocate_exact_counts_per_tile(method: str, sparsity: float, shape: tuple, tile_rows: int) -> None:
    """Every tile has the layout's counts, zeros per row match them, and 2 of every 4 N:M are kept."""
    scores = heavy_tailed(*shape, seed=1)
    layout = allocate_regions(scores, sparsity, method, tile_rows)
    pruned, nm, dense = layout.counts
    mask = to_gemm(layout.mask())
    columns = mask.shape[1]

    assert layout.pruned_cols.shape == (layout.num_tiles, pruned)
    assert layout.nm_cols.shape == (layout.num_tiles, nm)
    assert layout.dense_cols.shape == (layout.num_tiles, dense)
    assert pruned % 4 == 0
    assert nm % 4 == 0
    assert dense % 4 == 0
    kept_per_row = mask.sum(dim=1)
    assert bool((kept_per_row == dense + nm // 2).all()), kept_per_row.unique()
    assert bool((layout.nm_keep.reshape(layout.num_tiles, tile_rows, -1, 4).sum(-1) == 2).all())
    assert sparsity_of(layout.mask()) == pytest.approx(layout.sparsity, abs=0)
    assert abs(layout.sparsity - sparsity) <= 4 / columns + 1e-12


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875])
def test_allocate_pruned_columns_whole_in_tile(sparsity: float) -> None:
    """A pruned column vector is zero in every row of its tile; a dense one is kept in every row."""
    layout = allocate_regions(heavy_tailed(32, 64, seed=2), sparsity, "flexhinm", 8)
    mask = layout.mask_gemm()
    for tile in range(layout.num_tiles):
        rows = layout.tile_row_indices[tile]
        block = mask[rows]
        assert not bool(block[:, layout.pruned_cols[tile]].any())
        assert bool(block[:, layout.dense_cols[tile]].all())


def test_allocate_ranks_by_summed_importance() -> None:
    """Every dense column of a tile outranks every N:M column, which outranks every pruned one."""
    scores = heavy_tailed(16, 64, seed=3)
    layout = allocate_regions(scores, 0.75, "flexhinm", 8, vector_sparsity=0.625)
    sums = scores.reshape(2, 8, 64).sum(1)
    for tile in range(2):
        pruned, nm, dense = (sums[tile, cols] for cols in
                             (layout.pruned_cols[tile], layout.nm_cols[tile], layout.dense_cols[tile]))
        assert float(dense.min()) >= float(nm.max())
        assert float(nm.min()) >= float(pruned.max())


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875, 0.9])
def test_flexhinm_low_end_equals_hinm(sparsity: float) -> None:
    """FlexHiNM with v = 2t - 1 gives exactly the HiNM mask."""
    scores = heavy_tailed(32, 144, seed=4)
    flex = allocate_regions(scores, sparsity, "flexhinm", 8, vector_sparsity=2 * sparsity - 1)
    hinm = allocate_regions(scores, sparsity, "hinm", 8)
    assert torch.equal(flex.mask(), hinm.mask())
    assert flex.counts == hinm.counts


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.875])
def test_flexhinm_high_end_equals_ovw(sparsity: float) -> None:
    """FlexHiNM with v = t gives exactly the OVW mask when t * columns is a multiple of 4."""
    scores = heavy_tailed(32, 64, seed=5)
    flex = allocate_regions(scores, sparsity, "flexhinm", 8, vector_sparsity=sparsity)
    ovw = allocate_regions(scores, sparsity, "ovw", 8)
    assert torch.equal(flex.mask(), ovw.mask())
    assert flex.counts == ovw.counts


@pytest.mark.parametrize("tile_rows", [4, 16])
def test_flexhinm_half_equals_nm_mask(tile_rows: int) -> None:
    """At t = 0.5 with v = 0 every column is 2:4 in natural order, which is plain nm_mask."""
    scores = heavy_tailed(16, 64, seed=6, dtype=torch.float32)
    layout = allocate_regions(scores, 0.5, "flexhinm", tile_rows, vector_sparsity=0.0)
    assert torch.equal(layout.mask(), nm_mask(scores))
    hinm = allocate_regions(scores, 0.5, "hinm", tile_rows)
    assert torch.equal(hinm.mask(), nm_mask(scores))


def test_allocate_conv2d_matches_gemm_view() -> None:
    """The mask of a 4-D weight is from_gemm of the mask computed on its GEMM view."""
    scores = heavy_tailed(16, 8, 3, 3, seed=7)
    conv = allocate_regions(scores, 0.75, "flexhinm", 8)
    flat = allocate_regions(to_gemm(scores), 0.75, "flexhinm", 8)
    assert torch.equal(conv.mask(), from_gemm(flat.mask_gemm(), scores.shape))
    assert conv.shape == (16, 8, 3, 3)


def test_allocate_conv2d_column_vectors() -> None:
    """A pruned column vector is one (input channel, tap) pair across the tile's output channels."""
    scores = heavy_tailed(16, 8, 3, 3, seed=8)
    layout = allocate_regions(scores, 0.75, "ovw", 8)
    mask = layout.mask()
    for tile in range(2):
        for column in layout.pruned_cols[tile].tolist():
            tap, channel = divmod(column, 8)
            assert not bool(mask[tile * 8 : (tile + 1) * 8, channel, tap // 3, tap % 3].any())


def test_allocate_conv2d_groups_are_channels_at_one_tap() -> None:
    """With every column in 2:4 (natural order), each group is 4 input channels at one tap."""
    scores = heavy_tailed(16, 8, 3, 3, seed=9, dtype=torch.float32)
    layout = allocate_regions(scores, 0.5, "hinm", 8)
    groups = layout.nm_cols.reshape(2, -1, 4)
    taps, channels = groups // 8, groups % 8
    assert bool((taps == taps[..., :1]).all())
    assert bool((channels == channels[..., :1] + torch.arange(4)).all())
    assert torch.equal(layout.mask(), nm_mask(scores))


def test_allocate_row_order() -> None:
    """Tiles follow row_order: the result equals allocating the permuted rows, mapped back."""
    scores = heavy_tailed(32, 64, seed=10)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    layout = allocate_regions(scores, 0.75, "flexhinm", 8, row_order=order)
    reference = allocate_regions(scores[order], 0.75, "flexhinm", 8)
    assert torch.equal(layout.mask_gemm()[order], reference.mask_gemm())
    assert torch.equal(layout.row_order, order)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_allocate_dtypes_and_purity(dtype: torch.dtype) -> None:
    """Any float dtype gives a bool mask of the input's shape; the input is not modified."""
    scores = heavy_tailed(16, 32, seed=11, dtype=dtype)
    before = scores.clone()
    mask = allocate_regions(scores, 0.75, "flexhinm", 8).mask()
    assert mask.dtype == torch.bool
    assert mask.shape == scores.shape
    assert torch.equal(scores, before)


def test_allocate_retained_importance_matches_mask() -> None:
    """retained_importance equals the summed scores of the kept weights."""
    scores = heavy_tailed(16, 32, seed=12)
    layout = allocate_regions(scores, 0.75, "flexhinm", 8)
    assert layout.retained_importance(scores) == pytest.approx(float((scores * layout.mask()).sum()), rel=1e-12)


def test_allocate_vector_sparsity_rounds_to_nearest() -> None:
    """A vector sparsity between two feasible counts goes to the nearest (64 columns: steps of 1/16)."""
    scores = heavy_tailed(8, 64, seed=13)
    layout = allocate_regions(scores, 0.75, "flexhinm", 8, vector_sparsity=0.60)
    assert layout.counts[0] == 40  # 0.60 * 64 = 38.4 -> 40 (36 and 40 are the neighbours)


# ----------------------------------------------------------------------------- nm_keep_for


def test_nm_keep_for_ties_keep_lower_column() -> None:
    """Equal scores keep the lower column index, whatever the order inside the group."""
    scores = torch.ones(1, 8)
    keep = nm_keep_for(scores, torch.tensor([[0]]), torch.tensor([[7, 5, 6, 4, 3, 2, 1, 0]]))
    assert keep.tolist() == [[[False, True, False, True, False, False, True, True]]]


def test_nm_keep_for_follows_permuted_groups() -> None:
    """Regrouping the N:M columns of a tile keeps the top 2 of each new group."""
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0, 8.0, 7.0, 6.0, 5.0]])
    nm_cols = torch.tensor([[0, 4, 1, 5, 2, 6, 3, 7]])
    keep = nm_keep_for(scores, torch.tensor([[0]]), nm_cols)
    assert keep.tolist() == [[[False, True, False, True, False, True, False, True]]]
    assert sorted(nm_cols[0][keep[0, 0]].tolist()) == [4, 5, 6, 7]


def test_nm_keep_for_accepts_layout() -> None:
    """Passing the layout gives its own nm_keep back."""
    scores = heavy_tailed(16, 64, seed=14)
    layout = allocate_regions(scores, 0.75, "hinm", 8)
    assert torch.equal(nm_keep_for(scores, layout, layout.nm_cols), layout.nm_keep)


def test_nm_keep_for_bad_shapes() -> None:
    """nm_cols whose width m does not divide is rejected."""
    with pytest.raises(ValueError, match="multiple of m=4"):
        nm_keep_for(torch.ones(4, 8), torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 2]]))


# ----------------------------------------------------------------------------- saving


def test_layout_save_load_round_trip(tmp_path) -> None:
    """save/load keeps every field, and the file loads with weights_only=True."""
    layout = allocate_regions(heavy_tailed(16, 4, 3, 3, seed=15), 0.8, "flexhinm", 8)
    path = tmp_path / "layout.pt"
    layout.save(path)
    loaded = RegionLayout.load(path)
    state = torch.load(path, weights_only=True)
    assert state["method"] == "flexhinm"
    for name in ("row_order", "pruned_cols", "nm_cols", "dense_cols", "nm_keep"):
        assert torch.equal(getattr(loaded, name), getattr(layout, name)), name
    assert (loaded.shape, loaded.tile_rows, loaded.n, loaded.m) == (layout.shape, 8, 2, 4)
    assert loaded.target_sparsity == 0.8
    assert torch.equal(loaded.mask(), layout.mask())


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, float("nan")])
def test_allocate_rejects_sparsity(sparsity: float) -> None:
    """Sparsity outside [0, 1) is rejected."""
    with pytest.raises(ValueError, match="outside"):
        allocate_regions(torch.rand(8, 16), sparsity, tile_rows=8)


def test_allocate_rejects_hinm_below_half() -> None:
    """HiNM cannot be less sparse than 2:4."""
    with pytest.raises(ValueError, match="method='hinm' needs sparsity >= 0.5"):
        allocate_regions(torch.rand(8, 16), 0.4, "hinm", tile_rows=8)


def test_allocate_rejects_tile_rows() -> None:
    """A tile size that does not divide the rows is rejected with divisors."""
    with pytest.raises(ValueError, match="tile_rows=48 does not divide the 64 output rows"):
        allocate_regions(torch.rand(64, 16), 0.75, tile_rows=48)
    with pytest.raises(ValueError, match="positive int"):
        allocate_regions(torch.rand(64, 16), 0.75, tile_rows=0)


def test_allocate_rejects_nan_and_negative_scores() -> None:
    """NaN, infinite and negative scores are rejected."""
    scores = torch.rand(8, 16)
    scores[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        allocate_regions(scores, 0.75, tile_rows=8)
    with pytest.raises(ValueError, match="negative"):
        allocate_regions(-torch.rand(8, 16), 0.75, tile_rows=8)


def test_allocate_rejects_unknown_method() -> None:
    """An unknown method lists the valid ones."""
    with pytest.raises(ValueError, match="unknown region method 'venom'; choose one of 'ovw'"):
        allocate_regions(torch.rand(8, 16), 0.75, "venom", tile_rows=8)


def test_allocate_rejects_vector_sparsity() -> None:
    """v outside [2t - 1, t], or v given for OVW or HiNM, is rejected."""
    with pytest.raises(ValueError, match="outside the feasible range"):
        allocate_regions(torch.rand(8, 64), 0.75, "flexhinm", 8, vector_sparsity=0.3)
    with pytest.raises(ValueError, match="use method='flexhinm' to choose v"):
        allocate_regions(torch.rand(8, 64), 0.75, "hinm", 8, vector_sparsity=0.5)
    with pytest.raises(TypeError, match="vector_sparsity must be a number"):
        allocate_regions(torch.rand(8, 64), 0.75, "flexhinm", 8, vector_sparsity="0.5")


def test_allocate_rejects_bad_shapes() -> None:
    """A 1-D tensor, a row length not divisible by 4 and a bad row_order are rejected."""
    with pytest.raises(ValueError, match="dimensions"):
        allocate_regions(torch.rand(16), 0.75, tile_rows=8)
    with pytest.raises(ValueError, match="m=4 does not divide the row length 18"):
        allocate_regions(torch.rand(8, 18), 0.75, tile_rows=8)
    with pytest.raises(ValueError, match="row_order must be a permutation"):
        allocate_regions(torch.rand(8, 16), 0.75, tile_rows=8, row_order=torch.zeros(8, dtype=torch.long))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        allocate_regions([[1.0] * 16] * 8, 0.75, tile_rows=8)
