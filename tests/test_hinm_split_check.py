"""The FlexHiNM split is checked against the HiNM split after Gyro-Permutation's input phase.

The boundary search runs before the input phase. On scores whose important columns crowd into the
same groups of 4, the search keeps them dense, but the input phase would have spread them over
different groups where 2:4 keeps them anyway. The pipeline and the gradual driver then fall back to
the HiNM split.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexhinm import from_gemm, gemm_shape
from flexhinm.gradual import GradualConfig
from flexhinm.gradual.allocate import first_stage_layouts
from flexhinm.permute import gyro_permute

SMALL = {"schedule": (4, 1, 2, 1, 1)}


def crowded_outliers(seed: int = 0, rows: int = 64, columns: int = 256, first: int = 40) -> torch.Tensor:
    """Return |N(0, 1)| GEMM scores whose columns ``first`` to ``first + 7`` are ten times larger.

    With ``first`` a multiple of 4, the 8 outlier columns fill two whole groups of 4.
    """
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, columns, generator=generator).abs()
    scores[:, first:first + 8] *= 10.0
    return scores


@pytest.mark.parametrize("sparsity", [0.75, 0.875])
def test_crowded_outliers_fall_back_to_hinm_split(sparsity):
    """Without the check FlexHiNM-GP keeps less than HiNM-GP, and with it exactly as much."""
    scores = crowded_outliers()
    hinm = gyro_permute(scores, sparsity, "hinm", 16, seed=3, **SMALL)
    unchecked = gyro_permute(scores, sparsity, "flexhinm", 16, seed=3, try_hinm_split=False, **SMALL)
    checked, stats = gyro_permute(scores, sparsity, "flexhinm", 16, seed=3, return_stats=True, **SMALL)

    assert unchecked.counts[2] > 0
    assert unchecked.retained_importance(scores) < hinm.retained_importance(scores)
    assert stats.hinm_split_used
    assert checked.counts == hinm.counts
    assert torch.equal(checked.mask(), hinm.mask())
    assert stats.retained == pytest.approx(hinm.retained_importance(scores))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape,tile_rows", [((32, 64), 8), ((64, 128), 16), ((16, 16, 3, 3), 4)])
def test_flexhinm_gyro_never_below_hinm_gyro(shape, tile_rows, seed):
    """With the same seed and arguments, FlexHiNM-GP retains at least what HiNM-GP retains."""
    rows, columns = gemm_shape(shape)
    scores = from_gemm(crowded_outliers(seed, rows, columns, first=4 * seed), shape)
    hinm = gyro_permute(scores, 0.75, "hinm", tile_rows, seed=seed, **SMALL)
    searched = gyro_permute(scores, 0.75, "flexhinm", tile_rows, seed=seed, try_hinm_split=False,
                            **SMALL)
    flex, stats = gyro_permute(scores, 0.75, "flexhinm", tile_rows, seed=seed, return_stats=True,
                               **SMALL)

    assert searched.counts[2] > 0
    assert flex.retained_importance(scores) >= hinm.retained_importance(scores) * (1 - 1e-12)
    assert flex.retained_importance(scores) >= searched.retained_importance(scores) * (1 - 1e-12)
    if stats.hinm_split_used:
        assert flex.counts[2] == 0


def test_fixed_vector_sparsity_is_not_rechecked():
    """A caller's vector_sparsity is kept, whatever the HiNM split would retain."""
    scores = crowded_outliers()
    layout, stats = gyro_permute(scores, 0.75, "flexhinm", 16, vector_sparsity=0.53125,
                                 return_stats=True, **SMALL)
    assert layout.counts == (136, 112, 8)
    assert not stats.hinm_split_used


@pytest.mark.parametrize("boundary", ["final", "stage"])
def test_gradual_first_stage_checks_the_split(boundary):
    """The gradual driver's first stage falls back to the HiNM split on crowded outliers."""
    model = nn.Sequential(nn.Linear(256, 64, bias=False))
    scores = {"0.weight": crowded_outliers()}
    settings = {"method": "flexhinm", "tile_rows": 16, "boundary": boundary, "include_head": True}

    with_gyro = first_stage_layouts(model, 0.75, 0.875, config=GradualConfig(**settings),
                                    scores=scores)
    without = first_stage_layouts(model, 0.75, 0.875, config=GradualConfig(**settings,
                                  permutation=None), scores=scores)

    assert without[1]["0.weight"].counts[2] > 0
    assert with_gyro[1]["0.weight"].counts[2] == 0
    if boundary == "final":
        assert without[2]["0.weight"] > 0.0
        assert with_gyro[2]["0.weight"] == 0.0
