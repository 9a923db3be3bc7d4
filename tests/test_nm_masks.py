"""Invariants of N:M and unstructured masks."""

import pytest
import torch
from torch import nn

from flexhinm import (
    gemm_shape,
    global_unstructured_masks,
    is_nm_sparse,
    nm_mask,
    sparsity_of,
    to_gemm,
    unstructured_mask,
)

SHAPES = [(8, 16), (13, 8), (16, 8, 3), (16, 8, 3, 3), (4, 12, 1, 1)]
NM = [(2, 4), (1, 4), (3, 4), (1, 2), (4, 8), (2, 8)]


def test_nm_mask_hand_computed():
    """A 1x8 weight gives the exact expected 2:4 mask."""
    weight = torch.tensor([[0.1, -0.9, 0.3, 0.05, 1.0, 2.0, -3.0, 0.5]])
    expected = torch.tensor([[False, True, True, False, False, True, True, False]])
    assert torch.equal(nm_mask(weight.abs()), expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n,m", NM)
def test_nm_mask_keeps_exactly_n_per_group(shape, n, m):
    """Every group of m along the GEMM rows keeps exactly n weights."""
    if gemm_shape(shape)[1] % m:
        pytest.skip("m does not divide this row length")
    scores = torch.rand(shape)
    mask = nm_mask(scores, n=n, m=m)
    groups = to_gemm(mask).reshape(shape[0], -1, m)
    assert mask.dtype == torch.bool
    assert mask.shape == scores.shape
    assert bool((groups.sum(-1) == n).all())
    assert sparsity_of(mask) == pytest.approx(1 - n / m)


@pytest.mark.parametrize("shape", SHAPES)
def test_nm_mask_keeps_the_largest(shape):
    """Each kept score is at least every pruned score of its group."""
    scores = torch.randn(shape).abs()
    mask = to_gemm(nm_mask(scores))
    groups = to_gemm(scores).reshape(shape[0], -1, 4)
    keep = mask.reshape(shape[0], -1, 4)
    smallest_kept = torch.where(keep, groups, torch.inf).amin(-1)
    largest_pruned = torch.where(~keep, groups, -torch.inf).amax(-1)
    assert bool((smallest_kept >= largest_pruned).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_nm_mask_low_precision_matches_fp32(dtype):
    """fp16/bf16/fp64 scores give the mask of the same values in fp32."""
    scores = torch.randn(16, 64).to(dtype)
    assert torch.equal(nm_mask(scores), nm_mask(scores.float()))


def test_nm_mask_does_not_mutate_and_keeps_device():
    """The input is untouched and the mask lives on the input's device."""
    scores = torch.randn(4, 8)
    before = scores.clone()
    mask = nm_mask(scores)
    assert torch.equal(scores, before)
    assert mask.device == scores.device


def test_nm_mask_ties_keep_lower_index():
    """Equal scores keep the first n positions of the group."""
    mask = nm_mask(torch.ones(2, 8))
    assert mask[0].tolist() == [True, True, False, False] * 2


def test_nm_mask_matches_torch_ao_weight_norm_sparsifier():
    """For nn.Linear the 2:4 mask equals torch.ao.pruning.WeightNormSparsifier's."""
    from torch.ao.pruning import WeightNormSparsifier

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16))
    ours = nm_mask(model[0].weight.detach().abs())

    sparsifier = WeightNormSparsifier(
        sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2
    )
    sparsifier.prepare(model, [{"tensor_fqn": "0.weight"}])
    sparsifier.step()
    theirs = model[0].parametrizations.weight[0].mask.bool()
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    "n,m,match",
    [(4, 4, r"n=4, m=4 is invalid"), (5, 4, "0 < n < m"), (0, 4, "0 < n < m"), (1, 1, "m=1")],
)
def test_nm_mask_rejects_bad_nm(n, m, match):
    """n >= m, n = 0 and m < 2 are rejected with the values in the message."""
    with pytest.raises(ValueError, match=match):
        nm_mask(torch.rand(4, 8), n=n, m=m)


def test_nm_mask_rejects_row_not_divisible():
    """m must divide the GEMM row length; the message names both and suggests divisors."""
    with pytest.raises(ValueError, match=r"m=4 does not divide the reduction dimension 27"):
        nm_mask(torch.rand(16, 3, 3, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nm_mask_rejects_non_finite_scores(bad):
    """NaN and inf scores raise ValueError naming the index."""
    scores = torch.rand(4, 8)
    scores[1, 5] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite value\(s\), the first at index \(1, 5\)"):
        nm_mask(scores)


def test_is_nm_sparse_accepts_fewer_than_n():
    """Groups with fewer than n non-zeros still satisfy N:M; more than n do not."""
    assert is_nm_sparse(torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    assert not is_nm_sparse(torch.tensor([[1.0, 2.0, 3.0, 0.0]]))
    assert not is_nm_sparse(torch.ones(2, 6))


def test_is_nm_sparse_on_masked_conv():
    """A conv weight masked with nm_mask is 2:4 along input channels at each tap."""
    weight = torch.randn(8, 16, 3, 3)
    pruned = weight * nm_mask(weight.abs())
    assert is_nm_sparse(pruned)
    assert not is_nm_sparse(weight)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_unstructured_mask_sparsity_is_exact(sparsity):
    """The mask prunes round(sparsity * numel) weights, the smallest ones."""
    scores = torch.rand(10, 7)
    mask = unstructured_mask(scores, sparsity)
    assert int((~mask).sum()) == round(sparsity * scores.numel())
    if 0 < sparsity:
        assert scores[mask].min() >= scores[~mask].max()


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 2.0, float("nan")])
def test_unstructured_mask_rejects_bad_sparsity(sparsity):
    """Sparsity outside [0, 1) is rejected, not clamped."""
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        unstructured_mask(torch.rand(4, 4), sparsity)


def test_global_masks_share_one_threshold():
    """Global pruning keeps the largest scores across tensors, with exact total sparsity."""
    scores = {"a": torch.rand(8, 8) + 1.0, "b": torch.rand(4, 4)}
    masks = global_unstructured_masks(scores, 0.2)
    total_pruned = sum(int((~mask).sum()) for mask in masks.values())
    assert total_pruned == round(0.2 * 80)
    assert bool(masks["a"].all())


def test_sparsity_of_rejects_empty():
    """An empty tensor has no sparsity."""
    with pytest.raises(ValueError, match="empty"):
        sparsity_of(torch.zeros(0))
