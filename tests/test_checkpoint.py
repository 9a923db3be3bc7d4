"""Checkpoint files: weights_only loading, masks, optimizer, scheduler, RNG, exact resume."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import flexhinm
from flexhinm import apply_masks, masks_of, nm_mask
from flexhinm.train import (
    CHECKPOINT_FORMAT_VERSION,
    fit,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    read_checkpoint,
    save_checkpoint,
    seed_everything,
    train_one_epoch,
)
from flexhinm.train.model_state import load_model_state, model_state


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 4),
    )


def make_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        "0.weight": nm_mask(model[0].weight.detach().abs()),
        "5.weight": nm_mask(model[5].weight.detach().abs()),
    }


def make_loader(seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(128, 4, 4, 4, generator=generator)
    targets = torch.randint(0, 4, (128,), generator=generator)
    return DataLoader(TensorDataset(inputs, targets), batch_size=16, shuffle=True)


def trained_masked(steps: int = 3):
    """A masked model after a few SGD steps, with its optimizer and scheduler."""
    model = make_model()
    apply_masks(model, make_masks(model))
    optimizer = make_optimizer(model, lr=0.1)
    scheduler = make_scheduler(optimizer, total_steps=10)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 4, 4, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def assert_states_equal(first: dict, second: dict) -> None:
    assert list(first) == list(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key


# --------------------------------------------------------------------------- round trip


def test_checkpoint_loads_weights_only(tmp_path):
    """The file loads with weights_only=True and carries format, versions and plain names."""
    model, optimizer, scheduler = trained_masked()
    path = save_checkpoint(
        tmp_path / "run.pt", model, optimizer=optimizer, scheduler=scheduler, epoch=4
    )

    raw = torch.load(path, weights_only=True)

    assert raw["format"] == "flexhinm-checkpoint"
    assert raw["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert raw["flexhinm_version"] == flexhinm.__version__
    assert raw["torch_version"] == torch.__version__
    assert raw["epoch"] == 4
    assert "0.weight" in raw["model"]
    assert not any("parametrizations" in key for key in raw["model"])
    assert sorted(raw["masks"]) == ["0.weight", "5.weight"]
    assert raw["masks"]["0.weight"].dtype == torch.bool


def test_checkpoint_stores_dense_weights(tmp_path):
    """Masked weights are stored dense (the parametrization's original), masks separately."""
    model, _, _ = trained_masked()
    path = save_checkpoint(tmp_path / "run.pt", model)
    raw = torch.load(path, weights_only=True)
    assert torch.equal(raw["model"]["0.weight"], model[0].parametrizations.weight.original)
    assert torch.equal(raw["masks"]["0.weight"], masks_of(model)["0.weight"])


def test_checkpoint_round_trip_fresh_model(tmp_path):
    """Weights, masks, optimizer and scheduler come back into fresh, unmasked objects."""
    model, optimizer, scheduler = trained_masked()
    path = save_checkpoint(
        tmp_path / "run.pt", model, optimizer=optimizer, scheduler=scheduler, epoch=2
    )

    fresh = make_model(seed=1)
    fresh_optimizer = make_optimizer(fresh, lr=0.1)
    fresh_scheduler = make_scheduler(fresh_optimizer, total_steps=10)
    checkpoint = load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)

    assert checkpoint["epoch"] == 2
    assert_states_equal(fresh.state_dict(), model.state_dict())
    for name, mask in masks_of(model).items():
        assert torch.equal(masks_of(fresh)[name], mask), name
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for old, new in zip(optimizer.param_groups, fresh_optimizer.param_groups):
        for old_param, new_param in zip(old["params"], new["params"]):
            old_buffer = optimizer.state[old_param]["momentum_buffer"]
            assert torch.equal(fresh_optimizer.state[new_param]["momentum_buffer"], old_buffer)


def test_checkpoint_round_trip_model_with_masks(tmp_path):
    """Loading into a model that already has (other) masks replaces them with the saved ones."""
    model, _, _ = trained_masked()
    path = save_checkpoint(tmp_path / "run.pt", model)

    target = make_model(seed=2)
    apply_masks(target, {name: ~mask for name, mask in make_masks(target).items()})
    load_checkpoint(path, target)

    assert_states_equal(target.state_dict(), model.state_dict())
    assert len(target[0].parametrizations.weight) == 1
    for name, mask in masks_of(model).items():
        assert torch.equal(masks_of(target)[name], mask), name


def test_checkpoint_optimizer_matched_by_name(tmp_path):
    """An SGD over model.parameters() loads although masking changed the parameter order."""
    model = make_model()
    apply_masks(model, make_masks(model))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.zero_grad()
    model(torch.randn(8, 4, 4, 4)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "run.pt", model, optimizer=optimizer)

    fresh = make_model(seed=3)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(path, fresh, fresh_optimizer)

    old = dict(model.named_parameters())
    for name, param in fresh.named_parameters():
        expected = optimizer.state[old[name]]["momentum_buffer"]
        assert torch.equal(fresh_optimizer.state[param]["momentum_buffer"], expected), name


def test_checkpoint_restores_rng(tmp_path):
    """restore_rng=True puts back the torch, Python and NumPy generators of the saving process."""
    seed_everything(11)
    path = save_checkpoint(tmp_path / "run.pt", make_model())
    expected = (torch.rand(3), random.random(), float(np.random.rand()))

    seed_everything(99)
    load_checkpoint(path, restore_rng=True)
    actual = (torch.rand(3), random.random(), float(np.random.rand()))

    assert torch.equal(actual[0], expected[0])
    assert actual[1] == expected[1]
    assert actual[2] == expected[2]


def test_checkpoint_rng_states_of_other_world_size_warn(tmp_path):
    """A checkpoint of two processes read by one process warns that resume is not exact."""
    first = save_checkpoint(tmp_path / "a.pt", make_model())
    state = torch.load(first, weights_only=True)["rng_states"][0]
    path = save_checkpoint(tmp_path / "b.pt", make_model(), rng_states=[state, state])
    with pytest.warns(UserWarning, match=r"random states of 2 process\(es\) but 1 are running"):
        load_checkpoint(path, restore_rng=True)


def test_checkpoint_extra_round_trip(tmp_path):
    """extra values of the allowed types come back unchanged."""
    extra = {
        "history": [{"epoch": 1, "test_top1": 55.5, "note": None}],
        "flags": (True, 2),
        "t": torch.ones(2),
    }
    path = save_checkpoint(tmp_path / "run.pt", make_model(), extra=extra)
    loaded = read_checkpoint(path)["extra"]
    assert loaded["history"] == extra["history"]
    assert loaded["flags"] == (True, 2)
    assert torch.equal(loaded["t"], extra["t"])


def test_model_state_strips_module_prefix_on_load():
    """A state dict with DDP's 'module.' prefix loads into a plain model."""
    model, _, _ = trained_masked()
    state, masks = model_state(model)
    prefixed_state = {f"module.{key}": value for key, value in state.items()}
    prefixed_masks = {f"module.{key}": value for key, value in masks.items()}

    fresh = make_model(seed=4)
    load_model_state(fresh, prefixed_state, prefixed_masks)

    assert_states_equal(fresh.state_dict(), model.state_dict())


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    """A failing save leaves the previous file intact and no temporary file behind."""
    path = save_checkpoint(tmp_path / "run.pt", make_model(), epoch=1)
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_model(), epoch=2)

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_save_checkpoint_creates_folders(tmp_path):
    """Missing parent folders are created."""
    path = save_checkpoint(tmp_path / "a" / "b" / "run.pt", make_model())
    assert path.is_file()


# --------------------------------------------------------------------------- bad input


def test_save_checkpoint_rejects_numpy_in_extra(tmp_path):
    """A NumPy array in extra is rejected at save time with its location."""
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\['curve'\] is a numpy.ndarray"):
        save_checkpoint(tmp_path / "run.pt", make_model(), extra={"curve": np.zeros(3)})


def test_save_checkpoint_rejects_numpy_scalar(tmp_path):
    """NumPy scalars subclass float but are rejected as well."""
    with pytest.raises(TypeError, match=r"\['extra'\]\['top1'\] is a numpy.float64"):
        save_checkpoint(tmp_path / "run.pt", make_model(), extra={"top1": np.float64(0.5)})
    assert not (tmp_path / "run.pt").exists()


def test_load_checkpoint_missing_file(tmp_path):
    """A missing file raises FileNotFoundError with the path."""
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*nothing\.pt' not found"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_load_checkpoint_text_file(tmp_path):
    """A text file is reported as not a flexhinm checkpoint."""
    path = tmp_path / "notes.pt"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match="is not a flexhinm checkpoint: torch.load"):
        load_checkpoint(path)


def test_load_checkpoint_plain_state_dict(tmp_path):
    """A bare state dict is not a flexhinm checkpoint, and the message shows how to load it."""
    path = tmp_path / "state.pt"
    torch.save(make_model().state_dict(), path)
    message = r"not a flexhinm checkpoint \(no format=.*model.load_state_dict"
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


def test_load_checkpoint_custom_class(tmp_path):
    """A pickle with a custom class fails the weights_only load and is reported clearly."""
    path = tmp_path / "object.pt"
    torch.save({"format": "flexhinm-checkpoint", "model": Path("x")}, path)
    message = r"is not a flexhinm checkpoint: torch.load\(weights_only=True\) failed"
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("version", [CHECKPOINT_FORMAT_VERSION + 1, 0, "1", None])
def test_load_checkpoint_unknown_version(tmp_path, version):
    """Unknown or malformed format versions are rejected with the version found."""
    path = save_checkpoint(tmp_path / "run.pt", make_model())
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = version
    torch.save(raw, path)
    with pytest.raises(ValueError, match=rf"format_version={version!r}, but this flexhinm"):
        load_checkpoint(path)


def test_load_checkpoint_wrong_architecture(tmp_path):
    """Loading into a different architecture lists the missing and unexpected keys."""
    path = save_checkpoint(tmp_path / "run.pt", nn.Sequential(nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"missing keys \['1.weight', '1.bias'\]"):
        load_checkpoint(path, nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2)))


def test_load_checkpoint_model_has_unsaved_masks(tmp_path):
    """A model with masks that the checkpoint lacks is rejected rather than silently unmasked."""
    path = save_checkpoint(tmp_path / "run.pt", make_model())
    target = make_model()
    apply_masks(target, make_masks(target))
    with pytest.raises(ValueError, match=r"the model has masks on \['0.weight', '5.weight'\]"):
        load_checkpoint(path, target)


def test_load_checkpoint_optimizer_count_mismatch(tmp_path):
    """Passing two optimizers for a checkpoint with one is rejected."""
    model, optimizer, _ = trained_masked()
    path = save_checkpoint(tmp_path / "run.pt", model, optimizer=optimizer)
    second = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"contains 1 optimizer state\(s\) but 2 optimizer\(s\)"):
        load_checkpoint(path, model, [optimizer, second])


def test_load_checkpoint_optimizer_other_parameters(tmp_path):
    """An optimizer over other parameters than the saved one is rejected with both name lists."""
    model = make_model()
    optimizer = torch.optim.SGD(model[0].parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / "run.pt", model, optimizer=optimizer)
    other = torch.optim.SGD(model[5].parameters(), lr=0.1)
    with pytest.raises(ValueError, match="contains different parameters than in the checkpoint"):
        load_checkpoint(path, model, other)


# --------------------------------------------------------------------------- exact resume


def test_resume_manual_loop_bitwise(tmp_path):
    """2 epochs equal 1 epoch, save, load into fresh objects, 1 more epoch: bitwise equal."""

    def build():
        model = make_model()
        apply_masks(model, make_masks(model))
        optimizer = make_optimizer(model, lr=0.1)
        scheduler = make_scheduler(optimizer, total_steps=2 * 8)
        return model, optimizer, scheduler

    seed_everything(0)
    straight, optimizer, scheduler = build()
    loader = make_loader()
    for _ in range(2):
        train_one_epoch(straight, loader, optimizer, scheduler=scheduler, progress=False)

    seed_everything(0)
    first, optimizer, scheduler = build()
    train_one_epoch(first, loader, optimizer, scheduler=scheduler, progress=False)
    path = save_checkpoint(
        tmp_path / "epoch1.pt", first, optimizer=optimizer, scheduler=scheduler, epoch=1
    )

    seed_everything(12345)  # a different state, to prove the checkpoint restores it
    resumed = make_model(seed=7)
    resumed_optimizer = make_optimizer(resumed, lr=0.1)
    resumed_scheduler = make_scheduler(resumed_optimizer, total_steps=2 * 8)
    load_checkpoint(path, resumed, resumed_optimizer, resumed_scheduler, restore_rng=True)
    train_one_epoch(
        resumed, make_loader(), resumed_optimizer, scheduler=resumed_scheduler, progress=False
    )

    assert_states_equal(resumed.state_dict(), straight.state_dict())


def test_resume_fit_bitwise(tmp_path):
    """fit interrupted after epoch 1 and resumed from its checkpoint repeats the straight run."""
    straight = make_model()
    apply_masks(straight, make_masks(straight))
    options = {"epochs": 2, "lr": 0.1, "seed": 3, "progress": False}
    expected = fit(straight, make_loader(), make_loader(1), **options)

    class Interrupt(Exception):
        pass

    def stop(record):
        raise Interrupt

    path = tmp_path / "run.pt"
    interrupted = make_model()
    apply_masks(interrupted, make_masks(interrupted))
    with pytest.raises(Interrupt):
        fit(
            interrupted,
            make_loader(),
            make_loader(1),
            checkpoint_path=path,
            on_epoch_end=stop,
            **options,
        )

    resumed = make_model(seed=9)
    history = fit(resumed, make_loader(), make_loader(1), resume_from=path, **options)

    assert_states_equal(resumed.state_dict(), straight.state_dict())
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in expected]
    assert [r["test_top1"] for r in history] == [r["test_top1"] for r in expected]


def test_resume_fit_other_schedule_rejected(tmp_path):
    """Resuming with a different number of epochs is rejected, since the schedule would change."""
    path = tmp_path / "run.pt"
    fit(make_model(), make_loader(), None, epochs=1, lr=0.1, progress=False, checkpoint_path=path)
    with pytest.raises(ValueError, match="resume with the same epochs, warmup_epochs and"):
        fit(make_model(), make_loader(), None, epochs=3, lr=0.1, progress=False, resume_from=path)


def test_resume_fit_finished_run(tmp_path):
    """Resuming a finished run trains nothing and returns the saved history."""
    path = tmp_path / "run.pt"
    options = {"epochs": 1, "lr": 0.1, "progress": False}
    history = fit(make_model(), make_loader(), None, checkpoint_path=path, **options)
    model = make_model(seed=5)
    again = fit(model, make_loader(), None, resume_from=path, **options)
    assert again == history
    assert torch.equal(model[0].weight, read_checkpoint(path)["model"]["0.weight"])


# --------------------------------------------------------------------------- other module state


class Scale(nn.Module):
    """A parametrization with a non-tensor extra state, standing in for gate modules."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.factor

    def get_extra_state(self) -> dict:
        return {"factor": self.factor}

    def set_extra_state(self, state: dict) -> None:
        self.factor = state["factor"]


def test_checkpoint_other_parametrization_kept(tmp_path):
    """A weight with a non-mask parametrization keeps its keys and extra state in a round trip."""
    from torch.nn.utils import parametrize

    model = nn.Sequential(nn.Linear(4, 4))
    parametrize.register_parametrization(model[0], "weight", Scale(3.0))
    path = save_checkpoint(tmp_path / "run.pt", model)

    target = nn.Sequential(nn.Linear(4, 4))
    parametrize.register_parametrization(target[0], "weight", Scale(1.0))
    raw = load_checkpoint(path, target)

    assert raw["model"]["0.parametrizations.weight.0._extra_state"] == {"factor": 3.0}
    assert target[0].parametrizations.weight[0].factor == 3.0
    assert torch.equal(target[0].weight, model[0].weight)


def test_checkpoint_mask_with_other_parametrization_rejected(tmp_path):
    """A mask stacked with another parametrization on one weight raises NotImplementedError."""
    from torch.nn.utils import parametrize

    model = nn.Sequential(nn.Linear(4, 4))
    apply_masks(model, {"0.weight": nm_mask(model[0].weight.detach().abs())})
    parametrize.register_parametrization(model[0], "weight", Scale(2.0))
    message = r"carries the parametrizations \['MaskedWeight', 'Scale'\]"
    with pytest.raises(NotImplementedError, match=message):
        save_checkpoint(tmp_path / "run.pt", model)


def test_resume_fit_needs_fit_checkpoint(tmp_path):
    """A checkpoint without optimizer and scheduler states cannot be resumed by fit."""
    path = save_checkpoint(tmp_path / "weights.pt", make_model())
    with pytest.raises(ValueError, match=r"has 0 scheduler state\(s\) and 0 optimizer state\(s\)"):
        fit(make_model(), make_loader(), None, epochs=1, lr=0.1, progress=False, resume_from=path)
