"""Tests for the FlexHiNM boundary search against brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from flexhinm import allocate_regions, search_boundary, to_gemm
from flexhinm.regions import region_counts


def heavy_tailed(*shape: int, seed: int = 0) -> torch.Tensor:
    """Return |Laplace| float64 scores, seeded."""
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(*shape, generator=generator, dtype=torch.float64)
    return (-torch.log1p(-uniform)).abs()


def reference_retained(gemm: torch.Tensor, tile_rows: int, pruned: int, nm: int) -> float:
    """Retained importance of one candidate, computed with plain Python loops."""
    rows, columns = gemm.shape
    total = 0.0
    for start in range(0, rows, tile_rows):
        tile = gemm[start : start + tile_rows].tolist()
        sums = [sum(row[c] for row in tile) for c in range(columns)]
        ranked = sorted(range(columns), key=lambda c: (-sums[c], c))
        dense_count = columns - pruned - nm
        dense = ranked[:dense_count]
        band = sorted(ranked[dense_count : dense_count + nm])
        for row in tile:
            total += sum(row[c] for c in dense)
            for g in range(0, nm, 4):
                total += sum(sorted((row[c] for c in band[g : g + 4]), reverse=True)[:2])
    return total


@pytest.mark.parametrize("shape, tile_rows, sparsity", [
    ((8, 32), 4, 0.75),
    ((12, 48), 4, 0.875),
    ((16, 36), 8, 0.8),
    ((8, 64), 8, 0.6),
])
def test_search_curve_matches_reference(shape: tuple, tile_rows: int, sparsity: float) -> None:
    """Each point of the curve equals a loop-based computation of retained importance."""
    scores = heavy_tailed(*shape, seed=sum(shape))
    result = search_boundary(scores, sparsity, tile_rows=tile_rows)
    for counts, value in zip(result.candidates, result.retained.tolist()):
        expected = reference_retained(scores, tile_rows, counts.pruned, counts.nm)
        assert value == pytest.approx(expected, rel=1e-12), counts


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.75, 0.875, 0.9])
def test_search_finds_best_by_brute_force(seed: int, sparsity: float) -> None:
    """The chosen v keeps the most importance of all feasible pruned counts, measured on masks."""
    scores = heavy_tailed(16, 4, 2, 2, seed=seed)  # Conv2d-shaped, GEMM view 16 x 16
    columns = to_gemm(scores).shape[1]
    brute = {}
    for counts in region_counts(columns, sparsity):
        layout = allocate_regions(scores, sparsity, "flexhinm", 4, vector_sparsity=counts.pruned / columns)
        assert layout.counts == (counts.pruned, counts.nm, counts.dense)
        brute[counts.pruned] = float((scores * layout.mask()).sum())

    best_value = max(brute.values())
    chosen = allocate_regions(scores, sparsity, "flexhinm", 4)
    assert float((scores * chosen.mask()).sum()) == pytest.approx(best_value, rel=1e-12)
    first_best = min(p for p, value in brute.items() if value >= best_value - 1e-12 * best_value)
    assert chosen.counts[0] == first_best


def test_search_agrees_with_allocation() -> None:
    """search_boundary's best split and value are those of allocate_regions."""
    scores = heavy_tailed(32, 144, seed=3)
    result = search_boundary(scores, 0.8, tile_rows=8)
    layout = allocate_regions(scores, 0.8, "flexhinm", 8)
    best = result.best_counts
    assert layout.counts == (best.pruned, best.nm, best.dense)
    assert float(result.retained[result.best]) == pytest.approx(layout.retained_importance(scores), rel=1e-12)
    assert bool(result.retained.max() == result.retained[result.best])


def test_search_beats_hinm_and_ovw() -> None:
    """FlexHiNM keeps at least as much as HiNM, and as OVW when the OVW count is reachable."""
    scores = heavy_tailed(64, 256, seed=4)
    for sparsity in (0.75, 0.875):
        flex = allocate_regions(scores, sparsity, "flexhinm", 16).retained_importance(scores)
        hinm = allocate_regions(scores, sparsity, "hinm", 16).retained_importance(scores)
        ovw = allocate_regions(scores, sparsity, "ovw", 16).retained_importance(scores)
        assert flex >= hinm - 1e-9, (sparsity, flex, hinm)
        assert flex >= ovw - 1e-9, (sparsity, flex, ovw)


def test_search_curve_covers_range() -> None:
    """The curve runs from v = 2t - 1 (HiNM) to v = t (OVW) in steps of 4 columns."""
    result = search_boundary(heavy_tailed(8, 64, seed=5), 0.75, tile_rows=8)
    assert result.vector_sparsity.tolist() == [0.5, 0.5625, 0.625, 0.6875, 0.75]
    assert len(result.retained) == len(result.candidates)
    fractions = result.retained_fraction
    assert bool(((fractions > 0) & (fractions <= 1)).all())
    assert result.total == pytest.approx(float(heavy_tailed(8, 64, seed=5).sum()), rel=1e-12)


def test_search_single_candidate_methods() -> None:
    """HiNM and OVW have one candidate each."""
    scores = heavy_tailed(8, 64, seed=6)
    for method in ("hinm", "ovw"):
        result = search_boundary(scores, 0.75, tile_rows=8, method=method)
        assert len(result.candidates) == 1, method
        assert result.best == 0, method


def test_search_ties_choose_fewer_pruned() -> None:
    """With all scores equal, every split keeps the same, and the first (HiNM end) is chosen."""
    result = search_boundary(torch.ones(8, 32), 0.75, tile_rows=8)
    assert len(set(result.retained.tolist())) == 1
    assert result.best == 0


def test_search_general_nm() -> None:
    """For 1:4 the curve also matches masks computed by allocate_regions."""
    scores = heavy_tailed(8, 32, seed=7)
    result = search_boundary(scores, 0.8, tile_rows=4, n=1, m=4)
    for counts, value in itertools.islice(zip(result.candidates, result.retained.tolist()), 4):
        layout = allocate_regions(scores, 0.8, "flexhinm", 4, vector_sparsity=counts.pruned / 32, n=1, m=4)
        assert float((scores * layout.mask()).sum()) == pytest.approx(value, rel=1e-12)


def test_search_rejects_bad_input() -> None:
    """Bad method and NaN scores raise ValueError."""
    with pytest.raises(ValueError, match="unknown region method"):
        search_boundary(torch.rand(8, 32), 0.75, tile_rows=8, method="dense")
    scores = torch.rand(8, 32)
    scores[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        search_boundary(scores, 0.75, tile_rows=8)


def test_search_interior_for_column_structure() -> None:
    """When whole columns differ strongly in importance, the best v lies strictly inside (2t - 1, t)."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(64, 256, generator=generator, dtype=torch.float64).abs()
    column_scale = torch.exp(2.0 * torch.randn(1, 256, generator=generator, dtype=torch.float64))
    result = search_boundary(rows * column_scale, 0.75, tile_rows=64)
    best_v = float(result.vector_sparsity[result.best])
    assert 0.5 < best_v < 0.75, f"best v = {best_v}"
    assert float(result.retained[result.best]) > float(result.retained[0]), "no gain over HiNM"
    assert float(result.retained[result.best]) > float(result.retained[-1]), "no gain over OVW"
