"""Masks on models through torch.nn.utils.parametrize."""

import copy

import pytest
import torch
from torch import nn

from flexhinm import apply_masks, bake_masks, masks_of, nm_mask, remove_masks
from flexhinm.sparsify import revived_by


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))


def test_apply_masks_zeroes_and_trains():
    """Masked weights read as zero and stay zero after optimizer steps with weight decay."""
    model = make_model()
    mask = nm_mask(model[0].weight.detach().abs())
    apply_masks(model, {"0.weight": mask})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(2, 4, 6, 6)).sum().backward()
        optimizer.step()
    assert bool((model[0].weight[~mask] == 0).all())
    assert bool((model[0].weight[mask] != 0).all())


def test_masks_of_and_replace_in_place():
    """masks_of returns the masks; a second apply replaces the mask without nesting."""
    model = make_model()
    first = nm_mask(model[0].weight.detach().abs())
    apply_masks(model, {"0.weight": first})
    second = ~first
    apply_masks(model, {"0.weight": second})
    assert list(masks_of(model)) == ["0.weight"]
    assert torch.equal(masks_of(model)["0.weight"], second)
    assert len(model[0].parametrizations.weight) == 1


def test_bake_masks_keeps_zeros_and_removes_parametrization():
    """Baking leaves a plain Parameter with the zeros written in."""
    model = make_model()
    mask = nm_mask(model[0].weight.detach().abs())
    apply_masks(model, {"0.weight": mask})
    expected = model[0].weight.detach().clone()
    bake_masks(model)
    assert not hasattr(model[0], "parametrizations")
    assert torch.equal(model[0].weight.detach(), expected)
    assert masks_of(model) == {}


def test_remove_masks_without_bake_restores_dense():
    """remove_masks(bake=False) gives back the dense weights."""
    model = make_model()
    dense = model[0].weight.detach().clone()
    apply_masks(model, {"0.weight": nm_mask(dense.abs())})
    remove_masks(model, bake=False)
    assert torch.equal(model[0].weight.detach(), dense)


def test_masks_in_state_dict():
    """The mask is a buffer, so it is part of the module's state_dict."""
    model = make_model()
    apply_masks(model, {"0.weight": nm_mask(model[0].weight.detach().abs())})
    keys = set(model.state_dict())
    assert "0.parametrizations.weight.original" in keys
    assert "0.parametrizations.weight.0.mask" in keys


def test_apply_masks_rejects_bad_input():
    """Unknown names and wrong shapes are rejected with the offending value."""
    model = make_model()
    with pytest.raises(ValueError, match="'nope.weight' does not match any module"):
        apply_masks(model, {"nope.weight": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"has shape \(2, 2\) but the parameter has shape"):
        apply_masks(model, {"0.weight": torch.ones(2, 2, dtype=torch.bool)})


def test_bake_masks_on_deepcopy_leaves_original():
    """Baking a deep copy keeps the original model masked and working."""
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4))
    apply_masks(model, {"0.weight": nm_mask(model[0].weight.abs())})
    copied = copy.deepcopy(model)
    bake_masks(copied)

    x = torch.randn(3, 16)
    assert list(masks_of(model)) == ["0.weight"]
    assert torch.equal(model(x), copied(x))
    bake_masks(model)
    assert torch.equal(model(x), copied(x))


def test_revived_by_names_masks_that_keep_pruned_weights():
    """Only a new mask that keeps a weight the current mask prunes is reported."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    old = torch.zeros(8, 8, dtype=torch.bool)
    old[:, :4] = True
    apply_masks(model, {"0.weight": old, "1.weight": old})
    sparser = old.clone()
    sparser[:, 3] = False
    assert revived_by(model, {"0.weight": sparser, "1.weight": ~old}) == ["1.weight"]
    assert revived_by(model, {"0.weight": old}) == []
