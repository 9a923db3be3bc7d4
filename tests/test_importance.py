"""Tests for magnitude, Taylor and Fisher (diagonal and block) importance scores against brute force."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexhinm import apply_masks, compute_scores, from_gemm, to_gemm
from flexhinm.importance import FisherAccumulator

CE = nn.functional.cross_entropy


def conv_model(seed: int = 0) -> nn.Module:
    """A tiny conv + linear model on 4x3x3 inputs, float64."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(36, 3)).double()


def batches(count: int = 3, size: int = 4, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded (inputs, targets) batches for conv_model."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 4, 3, 3, generator=generator, dtype=torch.float64),
         torch.randint(0, 3, (size,), generator=generator))
        for _ in range(count)
    ]


def per_example_gradients(model: nn.Module, weight: torch.Tensor, data: list, chunk: int = 1) -> torch.Tensor:
    """(samples, *weight.shape) gradients of the loss of each chunk of examples."""
    gradients = []
    for inputs, targets in data:
        for start in range(0, inputs.shape[0], chunk):
            loss = CE(model(inputs[start : start + chunk]), targets[start : start + chunk])
            gradients.append(torch.autograd.grad(loss, weight)[0])
    return torch.stack(gradients)


def reference_obs(weight: torch.Tensor, gradients: torch.Tensor, block_size: int, damping: float) -> torch.Tensor:
    """OBS saliency with an explicit block-diagonal Fisher and a full matrix inverse."""
    flat = torch.stack([to_gemm(g).reshape(-1) for g in gradients])
    numel = flat.shape[1]
    fisher = flat.T @ flat / flat.shape[0]
    block = torch.arange(numel) // block_size
    fisher = fisher * (block[:, None] == block[None, :])
    fisher = fisher + damping * fisher.diagonal().mean() * torch.eye(numel, dtype=fisher.dtype)
    inverse = torch.linalg.inv(fisher).diagonal()
    inverse = from_gemm(inverse.reshape(to_gemm(weight).shape), weight.shape)
    return weight.detach().square() / (2 * inverse)


def test_magnitude_is_abs() -> None:
    """Magnitude scores are |w| of every named weight."""
    model = conv_model()
    scores = compute_scores(model, ["0.weight", "3.weight"])
    assert torch.equal(scores["0.weight"], model[0].weight.detach().abs())
    assert torch.equal(scores["3.weight"], model[3].weight.detach().abs())


def test_taylor_matches_brute_force() -> None:
    """Taylor scores are the mean over batches of |w * g_batch|."""
    model, data = conv_model(), batches()
    weight = model[0].weight
    expected = torch.stack([(weight * torch.autograd.grad(CE(model(x), y), weight)[0]).abs() for x, y in data])
    scores = compute_scores(model, ["0.weight"], "taylor", loader=data)["0.weight"]
    torch.testing.assert_close(scores, expected.mean(0).detach(), rtol=1e-12, atol=0)


def test_taylor_rejects_batch_dtype_mismatch() -> None:
    """A float64 model scored on float32 batches gets an error naming both dtypes."""
    data = [(x.float(), y) for x, y in batches()]
    with pytest.raises(TypeError, match="batch inputs are torch.float32 but the model's weights are torch.float64"):
        compute_scores(conv_model(), ["0.weight"], "taylor", loader=data)


def test_taylor_num_batches() -> None:
    """num_batches=1 uses only the first batch."""
    model, data = conv_model(), batches()
    weight = model[0].weight
    expected = (weight * torch.autograd.grad(CE(model(data[0][0]), data[0][1]), weight)[0]).abs()
    scores = compute_scores(model, ["0.weight"], "taylor", loader=data, num_batches=1)["0.weight"]
    torch.testing.assert_close(scores, expected.detach(), rtol=1e-12, atol=0)


def test_fisher_diagonal_matches_brute_force() -> None:
    """Diagonal OBS saliency equals w^2 (mean g^2 + lambda) / 2 with per-example gradients."""
    model, data = conv_model(), batches()
    weight = model[3].weight
    gradients = per_example_gradients(model, weight, data)
    diagonal = gradients.square().mean(0)
    expected = weight.detach().square() * (diagonal + 0.05 * diagonal.mean()) / 2
    scores = compute_scores(model, ["3.weight"], "fisher", loader=data, damping=0.05)["3.weight"]
    torch.testing.assert_close(scores, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("block_size", [4, 10, 36])
def test_fisher_block_matches_explicit_inverse(block_size: int) -> None:
    """Block OBS saliency equals the explicit inverse of the block-diagonal Fisher (conv, GEMM order)."""
    model, data = conv_model(), batches(count=4, size=5)
    weight = model[0].weight
    gradients = per_example_gradients(model, weight, data)
    expected = reference_obs(weight, gradients, block_size, damping=0.01)
    scores = compute_scores(model, ["0.weight"], "fisher-block", loader=data, block_size=block_size)["0.weight"]
    torch.testing.assert_close(scores, expected, rtol=1e-8, atol=0)


def test_fisher_block_micro_batches() -> None:
    """grad_batch_size=2 uses gradients of pairs of examples as Fisher samples."""
    model, data = conv_model(), batches(count=2, size=4)
    weight = model[3].weight
    gradients = per_example_gradients(model, weight, data, chunk=2)
    expected = reference_obs(weight, gradients, 12, damping=0.01)
    scores = compute_scores(model, ["3.weight"], "fisher-block", loader=data, block_size=12, grad_batch_size=2)
    torch.testing.assert_close(scores["3.weight"], expected, rtol=1e-8, atol=0)


def test_fisher_block_size_one_is_diagonal() -> None:
    """A block size of 1 gives the diagonal Fisher scores."""
    model, data = conv_model(), batches()
    block = compute_scores(model, ["0.weight"], "fisher-block", loader=data, block_size=1)["0.weight"]
    diagonal = compute_scores(model, ["0.weight"], "fisher", loader=data)["0.weight"]
    torch.testing.assert_close(block, diagonal, rtol=1e-12, atol=0)


def test_fisher_scales_with_loss() -> None:
    """Scaling the loss by c scales Fisher scores by c^2, because dampening is relative."""
    model, data = conv_model(), batches()
    plain = compute_scores(model, ["0.weight"], "fisher-block", loader=data, block_size=8)["0.weight"]
    scaled = compute_scores(model, ["0.weight"], "fisher-block", loader=data, block_size=8,
                            loss_fn=lambda out, y: 3.0 * CE(out, y))["0.weight"]
    torch.testing.assert_close(scaled, 9.0 * plain, rtol=1e-9, atol=0)


def test_fisher_accumulator_zero_gradients_fall_back() -> None:
    """With all-zero gradients the saliency is proportional to w^2."""
    fisher = FisherAccumulator((2, 4), block_size=4)
    fisher.add(torch.zeros(3, 2, 4))
    weight = torch.arange(8.0).reshape(2, 4)
    torch.testing.assert_close(fisher.saliency(weight, damping=0.5).float(), weight.square() * 0.25)


def test_scores_leave_model_unchanged() -> None:
    """Batch-norm statistics, train flags, requires_grad and .grad are as before."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    model.train()
    model[4].weight.requires_grad_(False)
    data = [(torch.randn(4, 4, 3, 3), torch.randint(0, 3, (4,)))]
    running = model[1].running_mean.clone()

    for method in ("taylor", "fisher", "fisher-block"):
        compute_scores(model, ["0.weight", "4.weight"], method, loader=data, block_size=8)
    assert torch.equal(model[1].running_mean, running)
    assert model.training and model[1].training
    assert not model[4].weight.requires_grad
    assert model[0].weight.grad is None


def test_scores_masked_weights_are_zero() -> None:
    """A masked layer is scored with its masked value, so pruned weights score 0."""
    model, data = conv_model(), batches()
    mask = torch.rand(4, 4, 3, 3, generator=torch.Generator().manual_seed(0)) > 0.5
    apply_masks(model, {"0.weight": mask})
    for method in ("magnitude", "taylor", "fisher"):
        scores = compute_scores(model, ["0.weight"], method, loader=data)["0.weight"]
        assert bool((scores[~mask] == 0).all()), method
        assert bool((scores[mask] > 0).any()), method


def test_scores_dtype_and_shape() -> None:
    """float32 weights give float32 scores of the weight's shape."""
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    data = [(torch.randn(3, 8), torch.randint(0, 2, (3,)))]
    scores = compute_scores(model, ["0.weight"], "fisher-block", loader=data, block_size=4)["0.weight"]
    assert scores.dtype == torch.float32
    assert scores.shape == (4, 8)
    assert bool((scores >= 0).all())


def test_scores_reject_bad_input() -> None:
    """Unknown methods or names, missing data and bad options raise clear errors."""
    model, data = conv_model(), batches()
    with pytest.raises(ValueError, match="unknown score method 'hessian'"):
        compute_scores(model, ["0.weight"], "hessian")
    with pytest.raises(ValueError, match="needs calibration data"):
        compute_scores(model, ["0.weight"], "taylor")
    with pytest.raises(ValueError, match="does not match any module"):
        compute_scores(model, ["body.0.weight"])
    with pytest.raises(ValueError, match="names is empty"):
        compute_scores(model, [])
    with pytest.raises(ValueError, match="grad_batch_size=0 must be a positive int"):
        compute_scores(model, ["0.weight"], "fisher", loader=data, grad_batch_size=0)
    with pytest.raises(ValueError, match="damping=0 must be positive"):
        compute_scores(model, ["0.weight"], "fisher", loader=data, damping=0)
    with pytest.raises(ValueError, match="block_size=0 must be a positive int"):
        compute_scores(model, ["0.weight"], "fisher-block", loader=data, block_size=0)
    with pytest.raises(TypeError, match=r"must be an \(inputs, targets\) pair"):
        compute_scores(model, ["0.weight"], "taylor", loader=[data[0][0]])
    with pytest.raises(ValueError, match="loader gave no batches"):
        compute_scores(model, ["0.weight"], "taylor", loader=[])
    with pytest.raises(ValueError, match="loader gave no batches"):
        compute_scores(model, ["0.weight"], "fisher", loader=[])
