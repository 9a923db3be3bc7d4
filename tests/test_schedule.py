"""Tests for the cubic ramp, stage checks and monotone layouts across gradual stages."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flexhinm import allocate_regions, allocate_stages, check_monotone, cubic_sparsity, cubic_stages
from flexhinm.regions import check_stages


def scores_like(*shape: int, seed: int) -> torch.Tensor:
    """Return |normal| float64 scores, seeded."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).abs()


RAMP = dict(initial_sparsity=0.5, final_sparsity=0.9, start_step=10, end_step=20)


# ----------------------------------------------------------------------------- cubic ramp


@pytest.mark.parametrize("step, expected", [
    (0, 0.5),      # before start
    (10, 0.5),     # at start
    (15, 0.9 - 0.4 * 0.5**3),  # half-way: s_f + (s_i - s_f)(1 - 1/2)^3
    (20, 0.9),     # at end
    (35, 0.9),     # past end
])
def test_cubic_sparsity_values(step: int, expected: float) -> None:
    """The ramp equals the Zhu-Gupta formula at and around its ends."""
    assert cubic_sparsity(step, **RAMP) == pytest.approx(expected, abs=1e-15), step


def test_cubic_sparsity_is_non_decreasing() -> None:
    """The ramp never goes down."""
    values = [cubic_sparsity(step, **RAMP) for step in range(0, 30)]
    assert all(b >= a for a, b in zip(values, values[1:])), values


def test_cubic_sparsity_power() -> None:
    """power=1 gives a linear ramp."""
    assert cubic_sparsity(15, **RAMP, power=1) == pytest.approx(0.7, abs=1e-15)


def test_cubic_stages_values() -> None:
    """Stages start at the initial and end at the final sparsity."""
    stages = cubic_stages(0.5, 0.75, 4)
    assert stages[0] == 0.5
    assert stages[-1] == 0.75
    assert stages[1] == pytest.approx(0.75 - 0.25 * (2 / 3) ** 3, abs=1e-15)
    assert cubic_stages(0.5, 0.75, 1) == [0.75]


def test_cubic_rejects_bad_arguments() -> None:
    """Decreasing ramps, empty intervals, bad powers and bad stage counts are rejected."""
    with pytest.raises(ValueError, match="below initial_sparsity"):
        cubic_sparsity(1, initial_sparsity=0.9, final_sparsity=0.5, start_step=0, end_step=5)
    with pytest.raises(ValueError, match="must be greater than start_step"):
        cubic_sparsity(1, initial_sparsity=0.5, final_sparsity=0.9, start_step=5, end_step=5)
    with pytest.raises(ValueError, match="power=0 must be positive"):
        cubic_sparsity(1, **RAMP, power=0)
    with pytest.raises(ValueError, match="outside"):
        cubic_sparsity(1, initial_sparsity=0.5, final_sparsity=1.0, start_step=0, end_step=5)
    with pytest.raises(ValueError, match="num_stages=0 must be a positive int"):
        cubic_stages(0.5, 0.75, 0)


def test_check_stages_rejects_decreasing_and_empty() -> None:
    """Stage lists must be non-empty and non-decreasing."""
    assert check_stages([0.5, 0.5, 0.75]) == [0.5, 0.5, 0.75]
    with pytest.raises(ValueError, match=r"stages\[2\]=0.6 is lower than stages\[1\]=0.75"):
        check_stages([0.5, 0.75, 0.6])
    with pytest.raises(ValueError, match="stages is empty"):
        check_stages([])


# ----------------------------------------------------------------------------- monotone stages


def tile_codes(layout) -> torch.Tensor:
    """Region code per (tile, column), built from the column lists: 0 pruned, 1 N:M, 2 dense."""
    codes = torch.full((layout.num_tiles, layout.columns), -1)
    for tile in range(layout.num_tiles):
        codes[tile, layout.pruned_cols[tile]] = 0
        codes[tile, layout.nm_cols[tile]] = 1
        codes[tile, layout.dense_cols[tile]] = 2
    return codes


def assert_monotone(before, after) -> None:
    """Check the monotone rules directly on the two layouts."""
    old, new = tile_codes(before), tile_codes(after)
    assert not bool(((old == 0) & (new != 0)).any()), "a pruned column came back"
    assert not bool(((old == 1) & (new == 2)).any()), "an N:M column became dense"
    assert bool((after.mask() <= before.mask()).all()), "a later stage kept a weight the earlier one removed"
    assert torch.equal(after.row_order, before.row_order)
    for tile in range(before.num_tiles):
        new_groups = {tuple(group) for group in after.nm_cols[tile].reshape(-1, 4).tolist()}
        for index, group in enumerate(before.nm_cols[tile].reshape(-1, 4).tolist()):
            states = {int(new[tile, column]) for column in group}
            assert states in ({0}, {1}), f"tile {tile} group {group} split into regions {states}"
            if states == {1}:
                assert tuple(group) in new_groups, f"group {group} was regrouped"
                position = after.nm_cols[tile].tolist().index(group[0])
                old_keep = before.nm_keep[tile, :, 4 * index : 4 * index + 4]
                assert torch.equal(after.nm_keep[tile, :, position : position + 4], old_keep)


@pytest.mark.parametrize("method", ["flexhinm", "hinm"])
@pytest.mark.parametrize("stages", [[0.5, 0.625, 0.75, 0.875], [0.6, 0.8, 0.9], [0.75, 0.75, 0.9]])
def test_stages_are_monotone(method: str, stages: list) -> None:
    """Consecutive stages follow the rules, also when the scores change between stages."""
    per_stage = [scores_like(32, 8, 3, 3, seed=seed) for seed in range(len(stages))]
    layouts = allocate_stages(per_stage, stages, method, 8)
    for before, after in zip(layouts, layouts[1:]):
        assert_monotone(before, after)
        check_monotone(before, after)
    for layout, target in zip(layouts, stages):
        assert abs(layout.sparsity - target) <= 4 / layout.columns + 1e-12


def test_stages_ovw_monotone() -> None:
    """OVW stages only prune more column vectors."""
    layouts = allocate_stages(scores_like(16, 64, seed=1), [0.5, 0.75, 0.875], "ovw", 8)
    for before, after in zip(layouts, layouts[1:]):
        assert_monotone(before, after)


def test_stages_keep_hardened_choice_when_scores_change() -> None:
    """A surviving group keeps its N:M choice even where new scores would choose differently."""
    first_scores = scores_like(8, 64, seed=2)
    first = allocate_regions(first_scores, 0.5, "flexhinm", 8, vector_sparsity=0.0)
    flipped = first_scores.max() + 1 - first_scores  # reverses every ranking inside groups
    second = allocate_regions(flipped, 0.75, "flexhinm", 8, previous=first)
    assert_monotone(first, second)
    assert second.counts[1] > 0, "no group survived, so the test checks nothing"


def test_stages_row_order_carried() -> None:
    """The row order of the first stage is kept by later stages."""
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    layouts = allocate_stages(scores_like(16, 32, seed=3), [0.5, 0.75], "flexhinm", 8, row_order=order)
    assert torch.equal(layouts[1].row_order, order)


def test_stages_same_target_keeps_layout() -> None:
    """Repeating a target with the same scores gives the same mask."""
    scores = scores_like(16, 64, seed=4)
    first = allocate_regions(scores, 0.75, "flexhinm", 8)
    again = allocate_regions(scores, 0.75, "flexhinm", 8, previous=first)
    assert torch.equal(first.mask(), again.mask())


def test_stages_vector_sparsity_with_previous() -> None:
    """A fixed v is honoured when the monotone rules allow it."""
    scores = scores_like(16, 64, seed=5)
    first = allocate_regions(scores, 0.5, "flexhinm", 8, vector_sparsity=0.0)
    second = allocate_regions(scores, 0.75, "flexhinm", 8, vector_sparsity=0.5, previous=first)
    assert second.counts == (32, 32, 0)


def test_stages_reject_lower_target() -> None:
    """A target below the previous stage's is rejected."""
    first = allocate_regions(scores_like(8, 32, seed=6), 0.75, "flexhinm", 8)
    with pytest.raises(ValueError, match="lower than the previous stage's target 0.75"):
        allocate_regions(scores_like(8, 32, seed=6), 0.6, "flexhinm", 8, previous=first)


def test_stages_reject_mismatched_previous() -> None:
    """Wrong shape, wrong type, another row order or an impossible method are rejected."""
    first = allocate_regions(scores_like(8, 32, seed=7), 0.5, "flexhinm", 8)
    with pytest.raises(ValueError, match="previous layout is for a weight of shape"):
        allocate_regions(scores_like(8, 64, seed=7), 0.75, "flexhinm", 8, previous=first)
    with pytest.raises(TypeError, match="previous must be a RegionLayout"):
        allocate_regions(scores_like(8, 32, seed=7), 0.75, "flexhinm", 8, previous={"counts": 1})
    with pytest.raises(ValueError, match="row_order differs"):
        allocate_regions(scores_like(8, 32, seed=7), 0.75, "flexhinm", 8, previous=first,
                         row_order=torch.arange(7, -1, -1))
    with pytest.raises(ValueError, match="tile_rows=4 differs from previous.tile_rows=8"):
        allocate_regions(scores_like(8, 32, seed=7), 0.75, "flexhinm", 4, previous=first)
    hinm = allocate_regions(scores_like(8, 32, seed=7), 0.75, "hinm", 8)
    with pytest.raises(ValueError, match="allows no split that only removes weights"):
        allocate_regions(scores_like(8, 32, seed=7), 0.8, "ovw", 8, previous=hinm)
    with pytest.raises(ValueError, match="got 1 score tensors for 2 stages"):
        allocate_stages([scores_like(8, 32, seed=7)], [0.5, 0.75], "flexhinm", 8)


def test_check_monotone_detects_violations() -> None:
    """check_monotone rejects a revived column, a dense N:M column and a changed N:M choice."""
    scores = scores_like(8, 32, seed=8)
    first = allocate_regions(scores, 0.75, "flexhinm", 8, vector_sparsity=0.625)
    revived = allocate_regions(scores.max() + 1 - scores, 0.875, "flexhinm", 8)
    with pytest.raises(ValueError, match="pruned column came back"):
        check_monotone(first, revived)

    dense_first = allocate_regions(scores, 0.5, "ovw", 8)
    nm_first = allocate_regions(scores, 0.5, "hinm", 8)
    with pytest.raises(ValueError, match="N:M column became dense"):
        check_monotone(nm_first, dense_first)

    changed = dataclasses.replace(first, nm_keep=~first.nm_keep)
    with pytest.raises(ValueError, match=r"changed its N:M choice \(nm_keep\)"):
        check_monotone(first, changed)

    other_order = dataclasses.replace(first, row_order=first.row_order.flip(0))
    with pytest.raises(ValueError, match="row_order changed"):
        check_monotone(first, other_order)


def test_check_monotone_detects_split_and_regrouped_groups() -> None:
    """check_monotone rejects a group split between regions and a group whose order changed."""
    scores = scores_like(8, 32, seed=9)
    first = allocate_regions(scores, 0.5, "flexhinm", 8, vector_sparsity=0.25)
    assert first.counts == (8, 16, 8)

    # One tile: the first column of group 0 is pruned together with three dense columns, and a
    # fourth dense column takes its place in the group.
    moved = int(first.nm_cols[0, 0])
    dense = first.dense_cols[0].tolist()
    nm_cols = first.nm_cols.clone()
    nm_cols[0, 0] = dense[0]
    split = dataclasses.replace(
        first,
        nm_cols=nm_cols,
        pruned_cols=torch.cat([first.pruned_cols, torch.tensor([[moved] + dense[1:4]])], dim=1),
        dense_cols=torch.tensor([dense[4:]]),
    )
    with pytest.raises(ValueError, match="N:M group was split"):
        check_monotone(first, split)

    swap = torch.tensor([1, 0] + list(range(2, 16)))
    regrouped = dataclasses.replace(first, nm_cols=first.nm_cols[:, swap], nm_keep=first.nm_keep[:, :, swap])
    with pytest.raises(ValueError, match="changed its columns' order or group boundaries"):
        check_monotone(first, regrouped)


def test_stages_all_groups_pruned() -> None:
    """A stage that prunes every N:M group (FlexHiNM followed by OVW) passes the checks."""
    scores = scores_like(8, 32, seed=10)
    first = allocate_regions(scores, 0.5, "flexhinm", 8, vector_sparsity=0.25)
    second = allocate_regions(scores, 0.75, "ovw", 8, previous=first)
    assert second.counts == (24, 0, 8)
    assert_monotone(first, second)
    check_monotone(first, second)
