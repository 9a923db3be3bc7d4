"""Tests of the single-level 2:4 channel permutation baseline and its mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexhinm import nm_mask, prune_model, to_gemm
from flexhinm.permute import channel_permutation_24, permuted_nm_mask

SHAPES = [(16, 32), (48, 64), (8, 16, 3, 3), (12, 8, 1, 1), (4, 24, 5)]


def heavy_tailed(shape, seed):
    """Non-negative heavy-tailed importance, like |w|^3 of Gaussian weights."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).abs() ** 3


def retained(scores, mask):
    return float((scores.double() * mask).sum())


def channel_view(tensor, channels):
    """Rows of (output channel, tap), one column per input channel."""
    return to_gemm(tensor).reshape(-1, channels)


@pytest.mark.parametrize("shape", SHAPES)
def test_channel24_order_is_bijection(shape):
    """The channel order is a permutation of the input channels."""
    order, _ = channel_permutation_24(heavy_tailed(shape, 0))
    assert torch.equal(order.sort().values, torch.arange(shape[1]))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_channel24_never_lowers_importance(shape, seed):
    """The permuted 2:4 mask keeps at least as much as the plain one, and stats match it."""
    scores = heavy_tailed(shape, seed)
    order, stats = channel_permutation_24(scores, seed=seed)
    plain = retained(scores, nm_mask(scores))
    permuted = retained(scores, permuted_nm_mask(scores, order))
    assert permuted >= plain
    assert abs(stats.retained_before - plain) <= 1e-9 * plain
    assert abs(stats.retained_after - permuted) <= 1e-9 * permuted


@pytest.mark.parametrize("shape", SHAPES)
def test_permuted_mask_is_nm_in_channel_order(shape):
    """Reordered by the channel order at every tap, the mask is exactly 2:4."""
    scores = heavy_tailed(shape, 3)
    order, _ = channel_permutation_24(scores)
    mask = permuted_nm_mask(scores, order)
    reordered = channel_view(mask, shape[1])[:, order]
    assert mask.shape == scores.shape
    assert mask.dtype == torch.bool
    assert bool((reordered.reshape(reordered.shape[0], -1, 4).sum(dim=-1) == 2).all())


def test_permuted_mask_identity_order_is_nm_mask():
    """With the identity order the mask equals the plain N:M mask."""
    scores = heavy_tailed((8, 16, 3, 3), 4)
    assert torch.equal(permuted_nm_mask(scores, torch.arange(16)), nm_mask(scores))


def test_channel24_finds_planted_grouping():
    """Channels whose large weights collide in the natural groups get split apart."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(16, 32, generator=generator) * 0.01
    scores[:, ::8] += 1.0       # channels 0, 8, 16, 24 large in every row
    scores[:, 1::8] += 1.0      # channels 1, 9, 17, 25: pairs share a natural group of 4
    scores[:, 2::8] += 1.0      # channels 2, 10, 18, 26: three large ones per natural group
    order, stats = channel_permutation_24(scores)
    mask = permuted_nm_mask(scores, order)
    large = scores >= 1.0
    assert stats.retained_after > stats.retained_before
    assert bool(mask[large].all()), "some large weight was pruned"


def test_channel24_same_seed_same_order():
    """The same seed gives the same order."""
    scores = heavy_tailed((32, 64), 5)
    first, _ = channel_permutation_24(scores, seed=2)
    second, _ = channel_permutation_24(scores, seed=2)
    assert torch.equal(first, second)


def test_channel24_single_group_is_identity():
    """With one group of 4 there is nothing to exchange."""
    order, stats = channel_permutation_24(heavy_tailed((8, 4), 0))
    assert torch.equal(order, torch.arange(4))
    assert stats.rounds == 0


@pytest.mark.parametrize("kwargs,match", [
    ({"max_rounds": 0}, "max_rounds=0 must be at least 1"),
    ({"patience": 0}, "patience=0 must be at least 1"),
    ({"tol": 1.0}, r"tol=1.0 is outside \[0, 1\)"),
    ({"n": 4, "m": 4}, "n=4, m=4 is invalid"),
])
def test_channel24_rejects_bad_arguments(kwargs, match):
    """Invalid limits and N:M patterns raise with the value in the message."""
    with pytest.raises(ValueError, match=match):
        channel_permutation_24(heavy_tailed((8, 16), 0), **kwargs)


def test_channel24_rejects_large_groups():
    """Groups of more than 4 are not supported by the exhaustive split."""
    with pytest.raises(NotImplementedError, match="m=8 is not supported yet"):
        channel_permutation_24(heavy_tailed((8, 16), 0), n=2, m=8)


def test_channel24_rejects_channels_not_divisible():
    """A convolution whose input channels m does not divide raises."""
    with pytest.raises(ValueError, match="m=4 does not divide the 6 input channels"):
        channel_permutation_24(heavy_tailed((8, 6, 2, 2), 0))


def test_channel24_rejects_nan_scores():
    """NaN scores raise."""
    scores = heavy_tailed((8, 16), 0)
    scores[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        channel_permutation_24(scores)


def test_permuted_mask_rejects_bad_order():
    """An order that is not a permutation of the channels raises."""
    with pytest.raises(ValueError, match="channel_order must be a permutation of the 16"):
        permuted_nm_mask(heavy_tailed((8, 16), 0), torch.zeros(16, dtype=torch.int64))


def test_prune_model_channel24_hook_falls_back():
    """With groups of 8 the hook returns the plain N:M mask and warns."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.Linear(16, 4))
    with pytest.warns(UserWarning, match="using the unpermuted N:M mask"):
        report = prune_model(model, "nm", n=2, m=8, permutation="channel24", apply=False)
    scores = model[0].weight.detach().abs()
    assert torch.equal(report.masks["0.weight"], nm_mask(scores, 2, 8))


def test_prune_model_channel24_hook():
    """prune_model(method="nm", permutation="channel24") keeps at least the plain 2:4 importance."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32), nn.Linear(32, 4))
    plain = prune_model(model, "nm", apply=False)
    permuted = prune_model(model, "nm", permutation="channel24", apply=False)
    for name, mask in permuted.masks.items():
        scores = dict(model.named_parameters())[name].detach().abs()
        assert retained(scores, mask) >= retained(scores, plain.masks[name])
