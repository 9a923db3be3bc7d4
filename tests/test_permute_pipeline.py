"""Tests of gyro_permute: layouts, masks in original coordinates, seeding, errors and prune hooks."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from flexhinm import prune_model, to_gemm
from flexhinm.permute import gyro_permute, output_kept_columns
from flexhinm.regions import RegionLayout, allocate_regions

LAYERS = [((32, 48), 8), ((64, 64), 16), ((16, 8, 3, 3), 4), ((32, 16, 1, 1), 8)]
METHODS = ["ovw", "hinm", "flexhinm"]
SMALL = {"schedule": (4, 1, 2, 1, 1)}


def heavy_tailed(shape, seed):
    """Non-negative heavy-tailed importance, like |w|^3 of Gaussian weights."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).abs() ** 3


def planted_hinm(seed, rows=32, columns=32, tile_rows=8):
    """A matrix where some HiNM 75 % layout keeps every large weight, with rows and columns shuffled.

    In hidden coordinates tile ``t`` keeps its own random 16 columns, and every row is large on
    exactly 2 of each group of 4 of them. Shuffling rows and columns hides that structure.
    """
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.rand(rows, columns, generator=generator) * 0.01
    kept = columns // 2
    for tile in range(rows // tile_rows):
        tile_columns = torch.randperm(columns, generator=generator)[:kept].reshape(-1, 4)
        for row in range(tile * tile_rows, (tile + 1) * tile_rows):
            for group in tile_columns:
                chosen = group[torch.randperm(4, generator=generator)[:2]]
                hidden[row, chosen] = 1.0 + torch.rand(2, generator=generator)
    row_shuffle = torch.randperm(rows, generator=generator)
    column_shuffle = torch.randperm(columns, generator=generator)
    return hidden[row_shuffle][:, column_shuffle]


def permuted_mask(layout: RegionLayout) -> torch.Tensor:
    """Return ``(tiles, tile_rows, columns)``: each tile's mask with columns dense | N:M | pruned."""
    tiles, tile_rows = layout.num_tiles, layout.tile_rows
    pruned, _, dense = layout.counts
    ones = torch.ones(tiles, tile_rows, dense, dtype=torch.bool)
    zeros = torch.zeros(tiles, tile_rows, pruned, dtype=torch.bool)
    return torch.cat([ones, layout.nm_keep, zeros], dim=2)


@pytest.mark.parametrize("shape,tile_rows", LAYERS)
@pytest.mark.parametrize("method", METHODS)
def test_gyro_orders_are_bijections(shape, tile_rows, method):
    """The row order and every tile's column order (dense, N:M, pruned) are permutations."""
    layout = gyro_permute(heavy_tailed(shape, 0), 0.75, method, tile_rows, **SMALL)
    rows, columns = layout.rows, layout.columns
    assert torch.equal(layout.row_order.sort().values, torch.arange(rows))
    column_order = torch.cat([layout.dense_cols, layout.nm_cols, layout.pruned_cols], dim=1)
    assert torch.equal(column_order.sort(dim=1).values,
                       torch.arange(columns).expand(layout.num_tiles, -1))


@pytest.mark.parametrize("shape,tile_rows", LAYERS)
@pytest.mark.parametrize("method", METHODS)
def test_gyro_mask_maps_back(shape, tile_rows, method):
    """The mask in original coordinates is the permuted-coordinate mask scattered back."""
    layout = gyro_permute(heavy_tailed(shape, 1), 0.75, method, tile_rows, **SMALL)
    local = permuted_mask(layout)
    rows = layout.tile_row_indices[:, :, None]
    columns = torch.cat([layout.dense_cols, layout.nm_cols, layout.pruned_cols], dim=1)[:, None, :]
    expected = torch.zeros(layout.rows, layout.columns, dtype=torch.bool)
    expected[rows, columns] = local

    assert torch.equal(to_gemm(layout.mask()), expected)
    assert layout.mask().shape == torch.Size(shape)


@pytest.mark.parametrize("shape,tile_rows", LAYERS)
@pytest.mark.parametrize("method", ["hinm", "flexhinm"])
def test_gyro_mask_is_hierarchical_when_permuted(shape, tile_rows, method):
    """In permuted coordinates every row keeps n of each m N:M columns, all dense, no pruned."""
    layout = gyro_permute(heavy_tailed(shape, 2), 0.75, method, tile_rows, **SMALL)
    gemm_mask = to_gemm(layout.mask())
    rows = layout.tile_row_indices[:, :, None]
    pruned, nm, dense = layout.counts

    nm_part = gemm_mask[rows, layout.nm_cols[:, None, :]]
    groups = nm_part.reshape(layout.num_tiles, layout.tile_rows, nm // layout.m, layout.m)
    assert bool((groups.sum(dim=-1) == layout.n).all())
    assert bool(gemm_mask[rows, layout.dense_cols[:, None, :]].all())
    assert not bool(gemm_mask[rows, layout.pruned_cols[:, None, :]].any())
    assert abs(1 - gemm_mask.double().mean().item() - layout.sparsity) < 1e-12


@pytest.mark.parametrize("shape,tile_rows", LAYERS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1])
def test_gyro_never_below_unpermuted(shape, tile_rows, method, seed):
    """Every phase keeps or raises its objective, and the result beats no permutation or ties."""
    scores = heavy_tailed(shape, seed + 10)
    layout, stats = gyro_permute(scores, 0.75, method, tile_rows, seed=seed, return_stats=True,
                                 **SMALL)
    unpermuted = allocate_regions(scores, 0.75, method, tile_rows).retained_importance(scores)
    assert stats.output.retained_after >= stats.output.retained_before
    if stats.input is not None:
        assert stats.input.retained_after >= stats.input.retained_before
    assert layout.retained_importance(scores) >= unpermuted
    assert stats.retained == layout.retained_importance(scores)
    assert stats.retained_unpermuted == unpermuted


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("method", ["hinm", "flexhinm"])
def test_gyro_beats_no_permutation_on_planted(seed, method):
    """When a hidden permutation keeps every large weight, Gyro keeps strictly more than none."""
    scores = planted_hinm(seed)
    unpermuted = allocate_regions(scores, 0.75, method, 8).retained_importance(scores)
    layout = gyro_permute(scores, 0.75, method, 8, seed=seed)
    retained = layout.retained_importance(scores)
    assert retained > unpermuted, f"gyro {retained:.3f} vs unpermuted {unpermuted:.3f}"


def test_gyro_same_seed_same_layout():
    """The same seed gives an identical layout (all tensors equal)."""
    scores = heavy_tailed((64, 64), 3)
    first = gyro_permute(scores, 0.75, "flexhinm", 16, seed=5).state_dict()
    second = gyro_permute(scores, 0.75, "flexhinm", 16, seed=5).state_dict()
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, second[key]), key
        else:
            assert value == second[key], key


def test_gyro_layout_saves_weights_only():
    """The permuted layout saves and loads with torch.load(weights_only=True)."""
    layout = gyro_permute(heavy_tailed((32, 48), 4), 0.75, "hinm", 8, **SMALL)
    buffer = io.BytesIO()
    layout.save(buffer)
    buffer.seek(0)
    loaded = RegionLayout.load(buffer)
    assert torch.equal(loaded.mask(), layout.mask())
    assert torch.equal(loaded.row_order, layout.row_order)
    assert torch.equal(loaded.nm_cols, layout.nm_cols)


def test_gyro_without_fallback_reports_nan():
    """With fallback=False the unpermuted allocation is not computed."""
    _, stats = gyro_permute(heavy_tailed((32, 48), 4), 0.75, "hinm", 8, fallback=False,
                            return_stats=True, **SMALL)
    assert stats.retained_unpermuted != stats.retained_unpermuted
    assert stats.output_order_used


def test_gyro_ovw_skips_input_phase():
    """OVW has no N:M region, so only the output phase runs."""
    _, stats = gyro_permute(heavy_tailed((32, 48), 4), 0.75, "ovw", 8, return_stats=True, **SMALL)
    assert stats.input is None


def test_output_kept_columns_per_method():
    """The output objective keeps the HiNM-end columns, OVW's dense columns or a given split."""
    assert output_kept_columns(768, 0.75, "hinm") == 384
    assert output_kept_columns(768, 0.75, "flexhinm") == 384
    assert output_kept_columns(768, 0.75, "ovw") == 192
    assert output_kept_columns(768, 0.75, "flexhinm", 0.625) == 288
    assert output_kept_columns(768, 0.25, "flexhinm") == 768


@pytest.mark.parametrize("kwargs,error,match", [
    ({"tile_rows": 12}, ValueError, "tile_rows=12 does not divide the 32 output rows"),
    ({"method": "venom"}, ValueError, "unknown region method 'venom'"),
    ({"sparsity": 0.25, "method": "hinm"}, ValueError, "method='hinm' needs sparsity >= 0.5"),
    ({"sparsity": 1.5}, ValueError, "sparsity=1.5 is outside"),
    ({"vector_sparsity": 0.6, "method": "hinm"}, ValueError, "vector_sparsity=0.6 was given"),
    ({"vector_sparsity": 0.9}, ValueError, "vector_sparsity=0.9 is outside the feasible range"),
    ({"in_failures": 0}, ValueError, "max_failures=0 must be at least 1"),
    ({"schedule": (9,)}, ValueError, r"schedule=\(9,\) is invalid"),
])
def test_gyro_rejects_bad_arguments(kwargs, error, match):
    """Bad methods, sparsities, tile sizes and limits raise with the value in the message."""
    arguments = {"sparsity": 0.75, "method": "flexhinm", "tile_rows": 8, **kwargs}
    with pytest.raises(error, match=match):
        gyro_permute(heavy_tailed((32, 48), 0), arguments.pop("sparsity"), arguments.pop("method"),
                     arguments.pop("tile_rows"), **arguments)


def test_gyro_rejects_nan_scores():
    """NaN scores raise before any search."""
    scores = heavy_tailed((32, 48), 0)
    scores[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        gyro_permute(scores, 0.75, "hinm", 8)


def test_gyro_progress_bars_run():
    """progress=True shows bars and gives the same layout as without them."""
    scores = heavy_tailed((32, 48), 6)
    quiet = gyro_permute(scores, 0.75, "hinm", 8, **SMALL)
    shown = gyro_permute(scores, 0.75, "hinm", 8, progress=True, **SMALL)
    assert torch.equal(shown.mask(), quiet.mask())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gyro_cuda_scores_match_cpu():
    """Scores on a GPU give a layout on that GPU with the same mask as on the CPU."""
    scores = heavy_tailed((64, 64), 7)
    on_cpu = gyro_permute(scores, 0.75, "flexhinm", 16, **SMALL)
    on_gpu = gyro_permute(scores.cuda(), 0.75, "flexhinm", 16, **SMALL)
    assert on_gpu.nm_cols.device.type == "cuda"
    assert torch.equal(on_gpu.mask().cpu(), on_cpu.mask())


def test_prune_model_gyro_hook():
    """prune_model(permutation="gyro") builds permuted layouts that keep at least as much."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32), nn.Linear(32, 4))
    plain = prune_model(model, "hinm", 0.75, tile_rows=16, apply=False)
    permuted = prune_model(model, "hinm", 0.75, tile_rows=16, permutation="gyro", apply=False)
    assert permuted.permutation == "gyro"
    for name, layout in permuted.layouts.items():
        scores = dict(model.named_parameters())[name].detach().abs()
        assert layout.retained_importance(scores) >= plain.layouts[name].retained_importance(scores)


def test_prune_model_hooks_check_method():
    """Each hook rejects the methods it does not serve."""
    model = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 4))
    with pytest.raises(ValueError, match="permutation='gyro' needs a region method"):
        prune_model(model, "nm", permutation="gyro", apply=False)
    with pytest.raises(ValueError, match="permutation='channel24' applies to method='nm' only"):
        prune_model(model, "hinm", 0.75, tile_rows=16, permutation="channel24", apply=False)
