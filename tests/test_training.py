"""Training loops, optimizer groups, cosine schedule, seeds and fit on tiny synthetic problems."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flexhinm import apply_masks, masks_of, nm_mask
from flexhinm.train import (
    cosine_lr_factor,
    evaluate,
    fit,
    get_rng_state,
    make_optimizer,
    make_scheduler,
    seed_everything,
    set_rng_state,
    train_one_epoch,
)


def make_data(samples: int = 256, classes: int = 4, seed: int = 0):
    """Linearly separable classes of 3x4x4 images: the label is the argmax of a fixed projection."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, 3, 4, 4, generator=generator)
    projection = torch.randn(48, classes, generator=generator)
    targets = (inputs.flatten(1) @ projection).argmax(dim=1)
    return inputs, targets


def make_loader(batch_size: int = 32, shuffle: bool = True, samples: int = 256):
    inputs, targets = make_data(samples)
    return DataLoader(TensorDataset(inputs, targets), batch_size=batch_size, shuffle=shuffle)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128, 4),
    )


# --------------------------------------------------------------------------- loops


def test_train_one_epoch_decreases_loss():
    """Five epochs on a separable problem cut the mean training loss at least in half."""
    model = make_model()
    loader = make_loader()
    optimizer = make_optimizer(model, lr=0.05)
    scheduler = make_scheduler(optimizer, total_steps=5 * len(loader))

    losses = []
    for _ in range(5):
        metrics = train_one_epoch(model, loader, optimizer, scheduler=scheduler, progress=False)
        losses.append(metrics.loss)

    assert losses[-1] < 0.5 * losses[0], f"losses per epoch: {losses}"
    assert metrics.samples == 256
    assert metrics.top1 > 70.0, f"final training top-1 {metrics.top1:.1f} %"


def test_train_one_epoch_steps_scheduler_per_batch():
    """The scheduler advances once per batch: 8 batches move it from step 0 to step 8."""
    model = make_model()
    loader = make_loader()
    optimizer = make_optimizer(model, lr=0.1)
    scheduler = make_scheduler(optimizer, total_steps=16)

    train_one_epoch(model, loader, optimizer, scheduler=scheduler, progress=False)

    assert scheduler.last_epoch == 8
    expected = 0.1 * cosine_lr_factor(8, total_steps=16)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_train_one_epoch_extra_loss_reported_and_applied():
    """A weight penalty as extra_loss is averaged per batch and shrinks the penalised weights."""
    plain, penalised = make_model(), make_model()
    loader = make_loader(shuffle=False)

    def penalty(model: nn.Module) -> torch.Tensor:
        return 10.0 * model[4].weight.pow(2).sum()

    for model, extra in ((plain, None), (penalised, penalty)):
        optimizer = make_optimizer(model, lr=0.05, weight_decay=0.0)
        metrics = train_one_epoch(model, loader, optimizer, extra_loss=extra, progress=False)

    assert metrics.extra_loss > 0.0
    assert penalised[4].weight.norm() < 0.5 * plain[4].weight.norm()


def test_train_one_epoch_constant_extra_loss_mean():
    """A constant extra term of 2.0 is reported as exactly 2.0 and leaves the task loss alone."""
    model = make_model()
    optimizer = make_optimizer(model, lr=0.01)
    metrics = train_one_epoch(
        model, make_loader(), optimizer, extra_loss=lambda _: torch.tensor(2.0), progress=False
    )
    assert metrics.extra_loss == 2.0
    assert metrics.loss < 2.0


def test_train_one_epoch_grad_clip_bounds_step():
    """With lr 1, no momentum and grad_clip 1e-3, one step moves the parameters by at most 1e-3."""
    model = make_model()
    before = [param.detach().clone() for param in model.parameters()]
    optimizer = make_optimizer(model, lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0)
    inputs, targets = make_data(32)

    train_one_epoch(model, [(inputs, targets)], optimizer, grad_clip=1e-3, progress=False)

    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert 0.0 < change.norm().item() <= 1e-3 * (1 + 1e-5), f"step norm {change.norm().item()}"


def test_train_one_epoch_several_optimizers():
    """Two optimizers over disjoint parameters are both stepped."""
    model = make_model()
    head = list(model[4].parameters())
    sgd = make_optimizer(model, lr=0.1, exclude=head)
    adam = torch.optim.Adam(head, lr=1e-2)
    head_before = model[4].weight.detach().clone()
    conv_before = model[0].weight.detach().clone()

    train_one_epoch(model, make_loader(), [sgd, adam], progress=False)

    assert not torch.equal(model[4].weight, head_before)
    assert not torch.equal(model[0].weight, conv_before)
    assert all(id(p) not in {id(h) for h in head} for g in sgd.param_groups for p in g["params"])


def test_train_one_epoch_rejects_bad_batch():
    """A loader that yields bare tensors fails with a message naming the expected pairs."""
    model = make_model()
    optimizer = make_optimizer(model, lr=0.1)
    message = r"batch 0 is a Tensor; the loader must yield \(inputs, targets\)"
    with pytest.raises(TypeError, match=message):
        train_one_epoch(model, [torch.randn(2, 3, 4, 4)], optimizer, progress=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_loops_reject_batch_dtype_mismatch(dtype):
    """A half-precision model fed float32 batches gets an error naming both dtypes and the fix."""
    model = make_model().to(dtype)
    optimizer = make_optimizer(model, lr=0.1)
    message = f"the batch inputs are torch.float32 but the model's weights are {dtype}"
    with pytest.raises(TypeError, match=message):
        train_one_epoch(model, make_loader(), optimizer, progress=False)
    with pytest.raises(TypeError, match=r"train and score in float32 \(model.float\(\)\)"):
        evaluate(model, make_loader(), progress=False)


def test_train_one_epoch_rejects_vector_extra_loss():
    """extra_loss must return a scalar tensor."""
    model = make_model()
    optimizer = make_optimizer(model, lr=0.1)
    with pytest.raises(TypeError, match="extra_loss must return a scalar tensor"):
        train_one_epoch(
            model, make_loader(), optimizer, extra_loss=lambda _: torch.ones(2), progress=False
        )


def test_train_one_epoch_rejects_bad_grad_clip():
    """A non-positive grad_clip is rejected."""
    model = make_model()
    optimizer = make_optimizer(model, lr=0.1)
    with pytest.raises(ValueError, match="grad_clip=0 is invalid"):
        train_one_epoch(model, make_loader(), optimizer, grad_clip=0, progress=False)


def test_train_one_epoch_nan_loss_raises():
    """NaN inputs give a NaN mean loss, reported as FloatingPointError."""
    model = make_model()
    optimizer = make_optimizer(model, lr=0.1)
    batches = [(torch.full((4, 3, 4, 4), float("nan")), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(FloatingPointError, match="mean training loss of this epoch is nan"):
        train_one_epoch(model, batches, optimizer, progress=False)


def test_train_one_epoch_empty_loader_raises():
    """An empty loader is an error, not a silent zero."""
    model = make_model()
    optimizer = make_optimizer(model, lr=0.1)
    with pytest.raises(ValueError, match="the loader yielded no batch"):
        train_one_epoch(model, [], optimizer, progress=False)


def test_evaluate_exact_accuracy_and_loss():
    """Identity logits on a hand-made batch: 3 of 4 right is 75 %, and the loss is exact."""
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    inputs = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    targets = torch.tensor([0, 1, 2, 1])
    batches = [(inputs[:3], targets[:3]), (inputs[3:], targets[3:])]

    metrics = evaluate(model, batches)

    right = -math.log(math.exp(2) / (math.exp(2) + 2))
    wrong = -math.log(1 / (math.exp(2) + 2))
    assert metrics.top1 == 75.0
    assert metrics.samples == 4
    assert metrics.loss == pytest.approx((3 * right + wrong) / 4, rel=1e-6)


def test_evaluate_no_grad_and_restores_mode():
    """evaluate runs without autograd in eval mode and leaves a training model in train mode."""
    seen = []

    class Probe(nn.Linear):
        def forward(self, inputs):
            seen.append((torch.is_grad_enabled(), self.training))
            return super().forward(inputs)

    model = Probe(3, 2)
    model.train()
    evaluate(model, [(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))])

    assert seen == [(False, False)]
    assert model.training


# --------------------------------------------------------------------------- optimizer


def test_make_optimizer_no_decay_on_bn_and_bias():
    """Conv and Linear weights get weight decay; biases and BatchNorm parameters get none."""
    model = make_model()
    optimizer = make_optimizer(model, lr=0.1, weight_decay=1e-3)
    groups = {group["name"]: group for group in optimizer.param_groups}
    decay = {id(p) for p in groups["decay"]["params"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}

    assert decay == {id(model[0].weight), id(model[4].weight)}
    norm_and_bias = (model[0].bias, model[1].weight, model[1].bias, model[4].bias)
    assert no_decay == {id(param) for param in norm_and_bias}
    assert groups["decay"]["weight_decay"] == 1e-3
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert optimizer.defaults["nesterov"] is True
    assert optimizer.defaults["momentum"] == 0.9


def test_make_optimizer_masked_weight_decayed():
    """The dense original of a masked weight sits in the weight-decay group."""
    model = make_model()
    apply_masks(model, {"4.weight": nm_mask(model[4].weight.detach().abs())})
    optimizer = make_optimizer(model, lr=0.1)
    decay = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert id(model[4].parametrizations.weight.original) in decay


def test_make_optimizer_extra_group_and_exclude():
    """Extra groups keep their options and leave the default groups; excluded parameters vanish."""
    model = make_model()
    gates = nn.Parameter(torch.zeros(5))
    optimizer = make_optimizer(
        model,
        lr=0.1,
        extra_param_groups=[{"params": [gates, model[4].weight], "lr": 0.01, "weight_decay": 0.0}],
        exclude=[model[0].bias],
    )
    groups = {group["name"]: group for group in optimizer.param_groups}
    in_defaults = {id(p) for name in ("decay", "no_decay") for p in groups[name]["params"]}

    assert groups["extra_0"]["lr"] == 0.01
    assert id(model[4].weight) not in in_defaults
    assert id(model[0].bias) not in in_defaults
    assert len(groups["extra_0"]["params"]) == 2


def test_make_optimizer_skips_frozen():
    """Parameters with requires_grad=False are left out."""
    model = make_model()
    model[0].weight.requires_grad_(False)
    optimizer = make_optimizer(model, lr=0.1)
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model[0].weight) not in ids


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"lr": 0.0}, ValueError, "lr=0.0 is invalid"),
        ({"lr": -1.0}, ValueError, "lr=-1.0 is invalid"),
        ({"lr": float("nan")}, ValueError, "lr=nan is invalid"),
        ({"lr": "0.1"}, TypeError, "lr must be a number"),
        ({"lr": 0.1, "momentum": 1.0}, ValueError, r"momentum=1.0 is invalid; use a value in"),
        ({"lr": 0.1, "weight_decay": -1e-4}, ValueError, "weight_decay=-0.0001 is invalid"),
        ({"lr": 0.1, "momentum": 0.0}, ValueError, "nesterov=True needs momentum > 0"),
        ({"lr": 0.1, "extra_param_groups": [{"lr": 1.0}]}, ValueError, "a dict with a 'params'"),
    ],
)
def test_make_optimizer_bad_arguments(options, error, match):
    """Invalid hyperparameters are rejected with the value and the rule."""
    with pytest.raises(error, match=match):
        make_optimizer(make_model(), **options)


def test_make_optimizer_nothing_trainable():
    """A model without trainable parameters is an error."""
    model = make_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter found"):
        make_optimizer(model, lr=0.1)


# --------------------------------------------------------------------------- schedule


def test_cosine_lr_factor_start_middle_end():
    """The factor is 1 at the start, 0.5 halfway, 0 at the end and stays 0 afterwards."""
    assert cosine_lr_factor(0, total_steps=100) == 1.0
    assert cosine_lr_factor(50, total_steps=100) == pytest.approx(0.5, abs=1e-12)
    assert cosine_lr_factor(25, total_steps=100) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert cosine_lr_factor(100, total_steps=100) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr_factor(150, total_steps=100) == pytest.approx(0.0, abs=1e-12)


def test_cosine_lr_factor_warmup_and_floor():
    """Warm-up rises linearly to 1; final_factor sets the floor; the middle is (1 + f) / 2."""
    assert cosine_lr_factor(0, total_steps=110, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_lr_factor(9, total_steps=110, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_lr_factor(10, total_steps=110, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_lr_factor(60, total_steps=110, warmup_steps=10) == pytest.approx(0.5)
    assert cosine_lr_factor(50, total_steps=100, final_factor=0.1) == pytest.approx(0.55)
    assert cosine_lr_factor(100, total_steps=100, final_factor=0.1) == pytest.approx(0.1)


def test_make_scheduler_follows_factor():
    """After k scheduler steps every group's lr is its base lr times cosine_lr_factor(k)."""
    model = make_model()
    extra_group = {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.02}
    optimizer = make_optimizer(model, lr=0.2, extra_param_groups=[extra_group])
    scheduler = make_scheduler(optimizer, total_steps=20, warmup_steps=4)

    for step in range(1, 21):
        optimizer.step()
        scheduler.step()
        factor = cosine_lr_factor(step, total_steps=20, warmup_steps=4)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * factor, abs=1e-12)
        assert optimizer.param_groups[-1]["lr"] == pytest.approx(0.02 * factor, abs=1e-12)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"total_steps": 0}, "total_steps=0 is invalid"),
        ({"total_steps": 10, "warmup_steps": 10}, r"warmup_steps=10 must lie in \[0, total_steps"),
        ({"total_steps": 10, "warmup_steps": -1}, r"warmup_steps=-1 must lie in"),
        ({"total_steps": 10, "final_factor": 1.5}, r"final_factor=1.5 is invalid; it must lie in"),
    ],
)
def test_make_scheduler_bad_arguments(options, match):
    """Invalid schedule lengths and floors are rejected."""
    optimizer = make_optimizer(make_model(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        make_scheduler(optimizer, **options)


# --------------------------------------------------------------------------- seeds


def test_seed_everything_repeats_all_generators():
    """The same seed gives the same draws from random, NumPy and torch."""
    draws = []
    for _ in range(2):
        seed_everything(123)
        draws.append((random.random(), float(np.random.rand()), torch.rand(3)))
    assert draws[0][0] == draws[1][0]
    assert draws[0][1] == draws[1][1]
    assert torch.equal(draws[0][2], draws[1][2])


def test_rng_state_round_trip_weights_only(tmp_path):
    """get_rng_state survives torch.load(weights_only=True) and restores every generator."""
    seed_everything(7)
    random.random()
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    path = tmp_path / "rng.pt"
    torch.save(get_rng_state(), path)
    expected = (random.random(), float(np.random.randn()), torch.rand(2))

    set_rng_state(torch.load(path, weights_only=True))
    actual = (random.random(), float(np.random.randn()), torch.rand(2))

    assert actual[0] == expected[0]
    assert actual[1] == expected[1]
    assert torch.equal(actual[2], expected[2])


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (-1, ValueError, r"seed=-1 is outside \[0, 2\*\*32\)"),
        (2**32, ValueError, "outside"),
        (1.5, TypeError, "seed must be an int"),
    ],
)
def test_seed_everything_bad_seed(seed, error, match):
    """Seeds outside NumPy's range or of the wrong type are rejected."""
    with pytest.raises(error, match=match):
        seed_everything(seed)


def test_set_rng_state_rejects_incomplete():
    """A dict without the expected generators is rejected with the missing keys."""
    with pytest.raises(ValueError, match=r"missing the key\(s\) \['cuda', 'numpy', 'python'\]"):
        set_rng_state({"torch": torch.get_rng_state()})


# --------------------------------------------------------------------------- fit


def test_fit_history_and_learning():
    """fit returns one record per epoch with the lr at the epoch start, and the model learns."""
    loader = make_loader()
    test_loader = make_loader(shuffle=False)
    history = fit(make_model(), loader, test_loader, epochs=3, lr=0.05, seed=0, progress=False)

    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert set(history[0]) == {
        "epoch", "train_loss", "train_top1", "test_loss", "test_top1", "lr", "seconds", "extra_loss"
    }
    for index, record in enumerate(history):
        expected_lr = 0.05 * cosine_lr_factor(index * len(loader), total_steps=3 * len(loader))
        assert record["lr"] == pytest.approx(expected_lr)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_top1"] > 60.0, f"test top-1 {history[-1]['test_top1']:.1f} %"


def test_fit_masked_weights_stay_zero():
    """With momentum and weight decay, masked weights stay exactly zero and the masks stay put."""
    model = make_model()
    masks = {
        "0.weight": torch.rand(model[0].weight.shape) > 0.5,
        "4.weight": nm_mask(model[4].weight.detach().abs()),
    }
    apply_masks(model, masks)
    kept_before = model[4].weight.detach()[masks["4.weight"]].clone()

    fit(model, make_loader(), None, epochs=2, lr=0.1, weight_decay=1e-2, seed=0, progress=False)

    for index, name in ((0, "0.weight"), (4, "4.weight")):
        mask = masks[name]
        original = model[index].parametrizations.weight.original.detach()
        weight = model[index].weight.detach()
        assert bool((weight[~mask] == 0).all()), name
        assert torch.equal(weight, original * mask), name
        assert torch.equal(masks_of(model)[name], mask), name
    assert not torch.equal(model[4].weight.detach()[masks["4.weight"]], kept_before)


def test_fit_calls_set_epoch():
    """fit calls set_epoch with each epoch index before iterating the loader."""

    class EpochLoader(list):
        def __init__(self, batches):
            super().__init__(batches)
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    loader = EpochLoader(make_loader())
    fit(make_model(), loader, None, epochs=3, lr=0.05, seed=0, progress=False)
    assert loader.epochs == [0, 1, 2]


def test_fit_same_seed_same_result():
    """Two runs with the same seed and a shuffled loader end with bitwise equal weights."""
    first, second = make_model(), make_model()
    for model in (first, second):
        fit(model, make_loader(), None, epochs=2, lr=0.05, seed=5, progress=False)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_fit_extra_optimizer_owns_its_parameters():
    """An extra Adam optimizer steps its parameters, which SGD leaves alone."""
    model = make_model()
    model.register_parameter("gate_logits", nn.Parameter(torch.zeros(4)))
    adam = torch.optim.Adam([model.gate_logits], lr=0.1)

    def penalty(module: nn.Module) -> torch.Tensor:
        return (module.gate_logits - 1.0).pow(2).sum()

    history = fit(
        model,
        make_loader(),
        None,
        epochs=2,
        lr=0.05,
        seed=0,
        progress=False,
        extra_optimizers=[adam],
        extra_loss=penalty,
    )

    assert model.gate_logits.detach().min() > 0.5
    assert history[-1]["extra_loss"] < history[0]["extra_loss"]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"epochs": 0, "lr": 0.1}, ValueError, "epochs=0 is invalid; train for at least 1 epoch"),
        ({"epochs": -2, "lr": 0.1}, ValueError, "epochs=-2 is invalid"),
        ({"epochs": 2.0, "lr": 0.1}, TypeError, "epochs must be an int"),
        ({"epochs": 1, "lr": 0.0}, ValueError, "lr=0.0 is invalid"),
        ({"epochs": 1, "lr": -0.1}, ValueError, "lr=-0.1 is invalid"),
        ({"epochs": 2, "lr": 0.1, "warmup_epochs": 2}, ValueError, r"warmup_epochs=2 must lie in"),
    ],
)
def test_fit_bad_arguments(options, error, match):
    """Invalid epochs, learning rates and warm-ups are rejected before training."""
    with pytest.raises(error, match=match):
        fit(make_model(), make_loader(), None, progress=False, **options)


def test_fit_loader_without_length():
    """A generator has no len(), which the schedule needs."""
    batches = (batch for batch in make_loader())
    with pytest.raises(TypeError, match=r"train_loader \(generator\) has no len\(\)"):
        fit(make_model(), batches, None, epochs=1, lr=0.1, progress=False)


def test_fit_empty_loader():
    """An empty training loader is rejected."""
    with pytest.raises(ValueError, match="train_loader has no batches"):
        fit(make_model(), [], None, epochs=1, lr=0.1, progress=False)



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_on_cuda_channels_last(tmp_path):
    """On CUDA, fit defaults to channels-last, learns, and its checkpoint loads on the CPU."""
    from flexhinm.train import load_checkpoint

    model = make_model()
    apply_masks(model, {"4.weight": nm_mask(model[4].weight.detach().abs())})
    path = tmp_path / "cuda.pt"
    test_loader = make_loader(shuffle=False)
    options = {"epochs": 3, "lr": 0.05, "device": "cuda", "progress": False}
    history = fit(model, make_loader(), test_loader, checkpoint_path=path, **options)

    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    fresh = make_model(seed=1)
    checkpoint = load_checkpoint(path, fresh)
    assert checkpoint["rng_states"][0]["cuda"] is not None
    assert torch.equal(fresh[4].weight, model[4].weight.cpu())
