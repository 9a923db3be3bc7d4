"""The first stage's N:M grouping is chosen by the final layout it leads to.

Later stages remove whole N:M groups, so a grouping made for the first target alone can cost the
final layout its important columns. These tests rebuild that case and check the choice.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flexhinm import allocate_regions, default_stage_plan, gradual_prune, masks_of
from flexhinm.gradual.lookahead import choose_first_grouping, lead_with_groups
from flexhinm.permute import gyro_input_permutation


def salient_scores(rows: int = 64, columns: int = 64, salient: int = 8, seed: int = 0) -> torch.Tensor:
    """|N(0, 1)| scores with ``salient`` random columns six times larger."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, columns, generator=generator).abs()
    scores[:, torch.randperm(columns, generator=generator)[:salient]] *= 6.0
    return scores


def test_lead_with_groups_places_planned_groups_first():
    """Planned groups inside the N:M columns come first; the rest keep their order."""
    scores = salient_scores()
    first = allocate_regions(scores, 0.5, "hinm", 16)
    final = allocate_regions(scores, 0.875, "hinm", 16)
    final, _ = gyro_input_permutation(scores, final, seed=0)

    led = lead_with_groups(scores, first, final)
    led.validate()
    assert led.counts == first.counts
    for tile in range(first.num_tiles):
        planned = final.nm_cols[tile]
        assert torch.equal(led.nm_cols[tile, :len(planned)], planned)
        rest = [c for c in first.nm_cols[tile].tolist() if c not in set(planned.tolist())]
        assert led.nm_cols[tile, len(planned):].tolist() == rest
        assert sorted(led.nm_cols[tile].tolist()) == sorted(first.nm_cols[tile].tolist())


def test_choose_first_grouping_single_stage_keeps_regrouping():
    """When the first target is the final one, the regrouping for that target is kept."""
    scores = salient_scores()
    layout = allocate_regions(scores, 0.875, "hinm", 16)
    generator = torch.Generator().manual_seed(0)
    regrouped, _ = gyro_input_permutation(scores, layout, seed=0)
    chosen = choose_first_grouping(scores, layout, regrouped, 0.875, None, generator)
    assert chosen is regrouped


def test_choose_first_grouping_restores_generator():
    """The generator's state is the same before and after the choice."""
    scores = salient_scores()
    layout = allocate_regions(scores, 0.5, "hinm", 16)
    regrouped, _ = gyro_input_permutation(scores, layout, seed=0)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    choose_first_grouping(scores, layout, regrouped, 0.875, None, generator)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("method", ["hinm", "flexhinm"])
def test_gradual_gyro_keeps_salient_columns(method):
    """In four stages, Gyro-Permutation keeps at least the magnitude that no permutation keeps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        net[0].weight[:, torch.randperm(64)[:8]] *= 6
    start = net[0].weight.detach().abs().clone()
    data = [(torch.randn(16, 64), torch.randint(0, 10, (16,))) for _ in range(4)]

    kept_fraction = {}
    for permutation in (None, "gyro"):
        model = copy.deepcopy(net)
        gradual_prune(model, default_stage_plan(0.875, 4, num_stages=4), data, lr=1e-9, method=method,
                      tile_rows=16, permutation=permutation, progress=False)
        kept_fraction[permutation] = float((start * masks_of(model)["0.weight"]).sum() / start.sum())
    assert kept_fraction["gyro"] >= kept_fraction[None]

