"""Tests of gradual pruning: stage plans, settings, the driver, stage checkpoints and exact resume."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from flexhinm import apply_nm_gates, gates_of, masks_of, prune_model, to_gemm
from flexhinm.data import ImageDataset, make_loader
from flexhinm.experiments import METHODS, Budget, MethodContext
from flexhinm.experiments.compare import gradual_prune_and_finetune
from flexhinm.gates import NMGates, entered_groups
from flexhinm.gradual import (
    GradualConfig,
    Stage,
    check_stage_plan,
    default_stage_plan,
    gradual_prune,
    read_stage_checkpoint,
    split_steps,
    stage_checkpoints,
    stage_temperature,
)
from flexhinm.gradual.allocate import boundary_position, vector_sparsity_at
from flexhinm.gradual.loop import BatchStream
from flexhinm.regions import RegionLayout, check_monotone

PLAN = [Stage(0.5, 3), Stage(0.625, 3), Stage(0.75, 3)]


def tiny_model(seed: int = 0) -> nn.Sequential:
    """Conv-BN-Linear net whose second conv has strong, medium and weak input channels."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(4, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4),
    )
    # Column importance with clear levels makes the FlexHiNM search keep dense columns.
    scale = torch.ones(16)
    scale[:4] = 4.0
    scale[-4:] = 0.05
    scale = scale[torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        model[3].weight.mul_(scale[None, :, None, None])
    return model


def batches(count: int = 4, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Synthetic (inputs, targets) batches for the tiny model."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, 6, 6, generator=generator), torch.randint(0, 4, (8,), generator=generator))
            for _ in range(count)]


def run(model: nn.Module | None = None, plan=PLAN, **options):
    """Run the driver on the tiny model with small, fast settings."""
    data = batches()
    settings = {"lr": 0.05, "tile_rows": 8, "progress": False, **options}
    return gradual_prune(model if model is not None else tiny_model(), plan, data, data[:1], **settings)


def stage_layouts(directory) -> list[dict[str, RegionLayout]]:
    """Return the layouts stored in every stage checkpoint of ``directory``, in stage order."""
    found = []
    for _, path in stage_checkpoints(directory):
        state = read_stage_checkpoint(path)["extra"]["gradual"]
        layouts = state["layouts"].items()
        found.append({name: RegionLayout.from_state_dict(values) for name, values in layouts})
    return found


def without_seconds(records) -> list[dict]:
    """Return the records as dicts without their wall times."""
    values = [record.to_dict() for record in records]
    return [{key: value for key, value in record.items() if key != "seconds"} for record in values]


# ----------------------------------------------------------------------------------- stage plans
def test_default_stage_plan_cubic_targets():
    """The default plan for 75 % starts at 50 % and follows the cubic ramp."""
    plan = default_stage_plan(0.75, 15)
    assert [round(stage.sparsity, 4) for stage in plan] == [0.5, 0.6759, 0.7407, 0.75]
    assert [stage.steps for stage in plan] == [4, 4, 4, 3]


@pytest.mark.parametrize("final", [0.3, 0.5, 0.75, 0.875, 0.95])
@pytest.mark.parametrize("total", [4, 15, 7820])
def test_default_stage_plan_properties(final, total):
    """Targets never decrease, end at the final one, and the lengths use every step."""
    plan = default_stage_plan(final, total)
    targets = [stage.sparsity for stage in plan]
    assert targets == sorted(targets)
    assert targets[-1] == final
    assert targets[0] == pytest.approx(min(0.5, 2 * final / 3))
    assert sum(stage.steps for stage in plan) == total
    assert check_stage_plan(plan) == plan


def test_default_stage_plan_single_stage():
    """One stage goes straight to the final target with all the steps."""
    assert default_stage_plan(0.875, 10, num_stages=1) == [Stage(0.875, 10)]


def test_default_stage_plan_bad_initial():
    """An initial target above the final one is rejected."""
    with pytest.raises(ValueError, match="initial_sparsity=0.8 is above final_sparsity=0.75"):
        default_stage_plan(0.75, 10, initial_sparsity=0.8)


def test_default_stage_plan_too_few_steps():
    """Four stages need at least four steps."""
    with pytest.raises(ValueError, match="fewer than num_stages=4"):
        default_stage_plan(0.75, 3)


@pytest.mark.parametrize("total, stages", [(15, 4), (16, 4), (5, 5), (7, 3), (1, 1)])
def test_split_steps_balanced(total, stages):
    """Lengths sum to the total and differ by at most one step, longer ones first."""
    lengths = split_steps(total, stages)
    assert sum(lengths) == total
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)


def test_check_stage_plan_accepts_pairs_and_equal_targets():
    """Pairs become stages, and a repeated final target is allowed (a fine-tune stage)."""
    assert check_stage_plan([(0.5, 2), (0.5, 1)]) == [Stage(0.5, 2), Stage(0.5, 1)]


@pytest.mark.parametrize("stages, error, match", [
    ([], ValueError, "stages is empty"),
    ([(0.75, 2), (0.5, 2)], ValueError, r"stages\[1\].sparsity=0.5 is lower than"),
    ([(0.5, 0)], ValueError, r"stages\[0\].steps=0 is invalid"),
    ([(0.5, -3)], ValueError, r"stages\[0\].steps=-3 is invalid"),
    ([(1.0, 2)], ValueError, "outside"),
    ([(0.5, 2.5)], TypeError, "steps must be an int"),
    ([(0.5, True)], TypeError, "steps must be an int"),
    ([0.5], TypeError, "must be a Stage"),
    ("0.5", TypeError, "must be a list"),
])
def test_check_stage_plan_errors(stages, error, match):
    """Bad plans raise with a message naming the stage and the rule."""
    with pytest.raises(error, match=match):
        check_stage_plan(stages)


def test_stage_temperature_hand_values():
    """Four drops per stage: 2/3, then times 0.8 at each quarter of the stage."""
    values = [stage_temperature(step, 8) for step in range(8)]
    expected = [2 / 3, 2 / 3, 0.8 * 2 / 3, 0.8 * 2 / 3, 0.64 * 2 / 3, 0.64 * 2 / 3,
                0.512 * 2 / 3, 0.512 * 2 / 3]
    assert values == pytest.approx(expected, rel=1e-12)


def test_stage_temperature_floor_and_short_stage():
    """The floor stops the anneal, and a 1-step stage uses the initial temperature."""
    assert stage_temperature(99, 100, factor=0.1, floor=0.2) == 0.2
    assert stage_temperature(0, 1) == pytest.approx(2 / 3)


@pytest.mark.parametrize("options, match", [
    ({"step": 8}, "outside the stage"),
    ({"step": 0, "stage_steps": 0}, "stage_steps=0 is invalid"),
    ({"updates": 0}, "updates=0 is invalid"),
    ({"initial": 0.0}, "initial=0.0 is invalid"),
    ({"factor": 1.5}, "factor=1.5 is invalid"),
])
def test_stage_temperature_errors(options, match):
    """Out-of-range settings raise with the argument's name."""
    arguments = {"step": 0, "stage_steps": 8, **options}
    with pytest.raises(ValueError, match=match):
        stage_temperature(arguments.pop("step"), arguments.pop("stage_steps"), **arguments)


def test_boundary_position_round_trip():
    """A relative boundary maps back to the same vector sparsity and keeps dense p * (1 - t)."""
    position = boundary_position(0.625, 0.75)
    assert position == 0.5
    assert vector_sparsity_at(position, 0.75) == pytest.approx(0.625)
    for target in (0.5, 0.6, 0.875):
        v = vector_sparsity_at(position, target)
        assert 1 + v - 2 * target == pytest.approx(position * (1 - target))


# ----------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("options, match", [
    ({"temperature": 0.0}, "temperature=0.0 is invalid"),
    ({"temperature": -1.0}, "temperature=-1.0 is invalid"),
    ({"gamma": 0.0}, "gamma=0.0 is invalid"),
    ({"gamma": 0.2}, "gamma=0.2 is invalid"),
    ({"zeta": 1.0}, "zeta=1.0 is invalid"),
    ({"zeta": 0.9}, "zeta=0.9 is invalid"),
    ({"lambda_sparse": -0.1}, "lambda_sparse=-0.1 is invalid"),
    ({"lambda_constraint": -1.0}, "lambda_constraint=-1.0 is invalid"),
    ({"temperature_factor": 1.5}, "temperature_factor=1.5 is invalid"),
    ({"temperature_floor": 0.9}, "temperature_floor=0.9 is above"),
    ({"temperature_updates": 0}, "temperature_updates=0 is invalid"),
    ({"gate_lr": 0.0}, "gate_lr=0.0 is invalid"),
    ({"lr": -0.1}, "lr=-0.1 is invalid"),
    ({"momentum": 1.0}, "momentum=1.0 is invalid"),
    ({"log_alpha_limit": 0.0}, "log_alpha_limit=0.0 is invalid"),
    ({"method": "nm"}, "method='nm' is not a region method"),
    ({"permutation": "channel24"}, "permutation='channel24' is invalid"),
    ({"lr_schedule": "linear"}, "lr_schedule='linear' is invalid"),
    ({"boundary": "middle"}, "boundary='middle' is invalid"),
    ({"score": "random"}, "score='random' is invalid"),
    ({"track_every": 0}, "track_every=0 is invalid"),
])
def test_gradual_prune_bad_settings(options, match):
    """Every bad setting raises before training, with the argument, its value and the rule."""
    model = tiny_model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        run(model, **options)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


@pytest.mark.parametrize("stages, match", [
    ([(0.75, 2), (0.5, 2)], "lower than"),
    ([(0.5, 2), (0.75, 0)], "steps=0 is invalid"),
    ([], "stages is empty"),
])
def test_gradual_prune_bad_plan(stages, match):
    """The driver checks the plan at its boundary."""
    with pytest.raises(ValueError, match=match):
        run(plan=stages)


def test_gradual_prune_hinm_below_half():
    """HiNM cannot start below 50 % with 2:4, and the message names the fix."""
    with pytest.raises(ValueError, match="method='hinm' needs every stage target >= 0.5"):
        run(plan=[(0.3, 2), (0.75, 2)], method="hinm")


def test_gradual_prune_rejects_unknown_track_name():
    """A misspelt track name is an error that lists real names, not an empty trajectory."""
    with pytest.raises(ValueError, match=r"track names \['3.wieght'\] are not prunable weights"):
        run(track=["3.wieght"])


def test_gradual_prune_no_prunable_layer():
    """A model with no prunable layer gets an error that lists why each layer was skipped."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match=r"no layer that can be pruned; skipped: \{'0.weight': 'conv \(stem\)"):
        gradual_prune(model, PLAN, [(torch.randn(2, 3, 6, 6), torch.tensor([0, 1]))], lr=0.1, progress=False)


def test_gradual_stops_early_on_nan_loss(monkeypatch):
    """A NaN loss stops the stage at the next check, not at its end."""
    monkeypatch.setattr("flexhinm.gradual.loop.NAN_CHECK_STEPS", 2)
    data = [(torch.full((8, 4, 6, 6), float("nan")), torch.zeros(8, dtype=torch.long))] * 4
    with pytest.raises(FloatingPointError, match="became nan by step 2 of 8"):
        gradual_prune(tiny_model(), [(0.5, 8)], data, lr=0.05, tile_rows=8, progress=False)


def test_gradual_warns_when_masks_return():
    """A gradual run on a model whose masks prune more than its first stage warns about it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    prune_model(model, "unstructured", 0.9)
    data = [(torch.randn(16, 64), torch.randint(0, 10, (16,))) for _ in range(2)]
    with pytest.warns(UserWarning, match="weights the first stage keeps; those weights come back"):
        gradual_prune(model, [(0.75, 2)], data, lr=1e-9, tile_rows=16, progress=False)


def test_gradual_prune_rejects_gated_model():
    """A model that already carries gates is rejected."""
    model = tiny_model()
    layout = run(tiny_model(), plan=[(0.5, 1)], learn_masks=False).layouts["3.weight"]
    apply_nm_gates(model, {"3.weight": NMGates(layout)})
    with pytest.raises(ValueError, match="already carries gates"):
        run(model)


@pytest.mark.parametrize("options, match", [
    ({"exclude": "3"}, "exclude must be a list of names"),
    ({"track": "3.weight"}, "track must be a list of names"),
    ({"score_options": 3}, "score_options must be a dict"),
    ({"score_options": {"num_batches": np.int64(2)}}, "plain values"),
    ({"learn_masks": 1}, "learn_masks must be True or False"),
])
def test_gradual_config_type_errors(options, match):
    """Settings of the wrong type raise TypeError with the argument's name."""
    with pytest.raises(TypeError, match=match):
        GradualConfig(**options)


def test_gradual_config_plain_floats():
    """NumPy floats become Python floats, so stage checkpoints load with weights_only=True."""
    config = GradualConfig(lr=np.float64(0.1), temperature=np.float64(0.5))
    assert type(config.to_dict()["lr"]) is float
    assert type(config.to_dict()["temperature"]) is float


def test_gradual_config_round_trip():
    """The settings dict contains plain values only and rebuilds the same config."""
    config = GradualConfig(track=["3.weight"], exclude=["0"], score_options={"num_batches": 2})
    assert GradualConfig(**config.to_dict()) == config


# ----------------------------------------------------------------------------------- the driver
@pytest.mark.parametrize("permutation", [None, "gyro"])
def test_gradual_stages_monotone(tmp_path, permutation):
    """Consecutive stage layouts follow the monotone rules, and dense columns enter 2:4 later.

    With Gyro-Permutation the regrouped HiNM split retains more on the tiny model's second conv,
    so that run keeps no dense columns and only the monotone rules are checked.
    """
    result = run(checkpoint_dir=tmp_path, permutation=permutation)
    layouts = stage_layouts(tmp_path)
    assert len(layouts) == len(PLAN)
    for previous, current in zip(layouts, layouts[1:]):
        for name in previous:
            check_monotone(previous[name], current[name])
    if permutation is None:
        assert result.records[0].layers["3.weight"]["counts"][2] > 0
        assert result.records[1].new_groups > 0


@pytest.mark.parametrize("permutation, regrouped", [("gyro", True), (None, False)])
def test_gradual_gyro_regroups_first_stage(permutation, regrouped):
    """Gyro-Permutation regroups the N:M columns; without it they stay in column order."""
    result = run(plan=[(0.5, 1)], permutation=permutation)
    unsorted = [
        not torch.equal(columns, columns.sort().values)
        for layout in result.layouts.values()
        for columns in layout.nm_cols.cpu()
    ]
    assert any(unsorted) == regrouped


def test_gradual_new_gates_only_for_entered_groups(tmp_path):
    """Each later stage gates exactly the groups that entered the N:M region."""
    result = run(checkpoint_dir=tmp_path)
    layouts = stage_layouts(tmp_path)
    for index in (1, 2):
        entered = sum(int(entered_groups(layouts[index - 1][name], layouts[index][name]).sum())
                      for name in layouts[index])
        assert result.records[index].new_groups == entered


def test_gradual_final_masks_valid():
    """The final masks are binary hierarchical masks at the final target, matching the layouts."""
    model = tiny_model()
    result = run(model)
    masks = masks_of(model)
    assert not gates_of(model)
    assert sorted(masks) == sorted(result.layouts)
    for name, layout in result.layouts.items():
        mask = masks[name]
        assert mask.dtype == torch.bool
        assert torch.equal(mask.cpu(), layout.mask().cpu())

        # Independent check on the GEMM view, tile by tile.
        gemm = to_gemm(mask.cpu())
        for tile, rows in enumerate(layout.tile_row_indices):
            block = gemm[rows]
            assert not block[:, layout.pruned_cols[tile]].any()
            assert block[:, layout.dense_cols[tile]].all()
            groups = block[:, layout.nm_cols[tile]].reshape(len(rows), -1, layout.m)
            assert bool((groups.sum(dim=-1) == layout.n).all())

        # Columns come in groups of m, so the target is met within one group per tile row.
        zeros = float((~mask).double().mean())
        assert abs(zeros - PLAN[-1].sparsity) <= layout.m / layout.columns
        module = model.get_submodule(name.rpartition(".")[0])
        assert not bool(module.weight[~mask].any()), f"{name} has non-zero pruned weights"
    assert result.sparsity == pytest.approx(PLAN[-1].sparsity, abs=0.01)


def test_gradual_records_stage_facts():
    """Records hold the targets, lengths, loss terms, temperatures and accuracies of each stage."""
    result = run()
    assert [record.target_sparsity for record in result.records] == [0.5, 0.625, 0.75]
    assert [record.first_step for record in result.records] == [0, 3, 6]
    first = result.records[0]
    assert first.gates == first.new_groups * 8 * 4
    assert first.temperature_start == pytest.approx(2 / 3)
    # Steps 0, 1, 2 of 3 fall into periods 0, 1 and 2 of 4 (floor(step * 4 / 3)).
    assert first.temperature_end == pytest.approx(0.64 * 2 / 3)
    assert 0.0 <= first.gate_mean <= 1.0
    assert first.gate_loss == pytest.approx(first.gate_constraint)
    assert first.gated_top1 is not None and first.test_top1 is not None
    assert 0.0 <= first.changed_choices <= 1.0
    assert result.top1_pruned is not None
    assert result.top1 == result.records[-1].test_top1


def test_gradual_consumes_exact_steps():
    """The stages together draw exactly sum(steps) batches, across epochs of the loader."""
    class CountingLoader(list):
        served = 0

        def __iter__(self):
            for batch in super().__iter__():
                CountingLoader.served += 1
                yield batch

    data = CountingLoader(batches(4))
    gradual_prune(tiny_model(), [(0.5, 5), (0.75, 6)], data, None, lr=0.05, tile_rows=8,
                  progress=False)
    assert CountingLoader.served == 11


def test_gradual_without_mask_learning():
    """learn_masks=False trains no gates and keeps the 2:4 choice of the scores."""
    result = run(learn_masks=False)
    assert all(record.gates == 0 and record.gated_top1 is None for record in result.records)
    assert result.records[-1].sparsity == pytest.approx(0.75, abs=0.01)


def test_gradual_gate_trajectory():
    """Tracked layers get gate records every track_every steps, with values in [0, 1]."""
    result = run(track=["3.weight"], track_every=2, track_groups=3)
    entries = result.trajectory
    assert entries, "no gate trajectory was recorded"
    assert all(entry["step"] % 2 == 0 and entry["layer"] == "3.weight" for entry in entries)
    for entry in entries:
        assert len(entry["values"]) <= 3
        assert all(0.0 <= value <= 1.0 for row in entry["values"] for value in row)
        assert entry["quantiles"] == sorted(entry["quantiles"])
    assert entries[0]["temperature"] == pytest.approx(2 / 3, abs=1e-6)


# ----------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("options", [
    {},
    {"lr_schedule": "run", "permutation": None, "track": ["0.weight"], "track_every": 1},
    {"score": "taylor", "score_options": {"num_batches": 2}, "boundary": "stage"},
])
def test_gradual_resume_bitwise(tmp_path, options):
    """Resuming from the first stage checkpoint gives bitwise the weights of an uninterrupted run."""
    full_dir, resume_dir = tmp_path / "full", tmp_path / "resume"
    full_model = tiny_model()
    full = run(full_model, checkpoint_dir=full_dir, **options)

    resume_dir.mkdir()
    shutil.copy(stage_checkpoints(full_dir)[0][1], resume_dir)
    resumed_model = tiny_model()
    resumed = run(resumed_model, checkpoint_dir=resume_dir, **options)

    assert resumed.resumed_from is not None
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert sorted(full_state) == sorted(resumed_state)
    for name, value in full_state.items():
        assert torch.equal(value, resumed_state[name]), f"{name} differs after resume"
    assert without_seconds(resumed.records) == without_seconds(full.records)
    assert resumed.trajectory == full.trajectory


def test_gradual_checkpoints_do_not_change_the_run(tmp_path):
    """Writing stage checkpoints draws no random numbers: weights match a run without them."""
    with_files, without_files = tiny_model(), tiny_model()
    run(with_files, checkpoint_dir=tmp_path)
    run(without_files)
    for name, value in with_files.state_dict().items():
        assert torch.equal(value, without_files.state_dict()[name]), name


def test_gradual_checkpoint_weights_only(tmp_path):
    """Stage checkpoints load with weights_only=True and contain layouts, settings and states."""
    run(checkpoint_dir=tmp_path)
    path = stage_checkpoints(tmp_path)[-1][1]
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["extra"]["gradual"]
    assert state["completed_stages"] == 3
    assert state["global_step"] == 9
    assert sorted(state["layouts"]) == sorted(checkpoint["masks"])
    assert len(checkpoint["optimizers"]) == 1
    assert checkpoint["rng_states"][0]["torch"].dtype == torch.uint8


def test_gradual_resume_after_last_stage(tmp_path):
    """Resuming a finished run trains nothing and returns the saved result."""
    first_model = tiny_model()
    first = run(first_model, checkpoint_dir=tmp_path)
    again_model = tiny_model()
    again = run(again_model, checkpoint_dir=tmp_path)
    assert without_seconds(again.records) == without_seconds(first.records)
    assert again.report.to_dict() == first.report.to_dict()
    for name, value in first_model.state_dict().items():
        assert torch.equal(value, again_model.state_dict()[name]), name


@pytest.mark.parametrize("change, match", [
    ({"lr": 0.01}, "lr: saved 0.05, now 0.01"),
    ({"plan": [(0.5, 3), (0.625, 3), (0.875, 3)]}, "stages: saved"),
    ({"model": "other"}, "starting model's weights differ"),
])
def test_gradual_resume_rejects_other_run(tmp_path, change, match):
    """A checkpoint of another run (settings, plan or starting model) is rejected."""
    run(plan=PLAN[:1], checkpoint_dir=tmp_path)
    options = dict(change)
    model = tiny_model(seed=5) if options.pop("model", None) else None
    plan = options.pop("plan", PLAN)
    with pytest.raises(ValueError, match=match):
        run(model, plan=plan, checkpoint_dir=tmp_path, **options)


def test_gradual_resume_false_starts_over(tmp_path):
    """resume=False warns, deletes the old stage checkpoints and trains from the start."""
    run(checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="deleting 3 stage checkpoint"):
        result = run(plan=PLAN[:1], checkpoint_dir=tmp_path, resume=False)
    assert result.resumed_from is None
    assert [count for count, _ in stage_checkpoints(tmp_path)] == [1]


def test_read_stage_checkpoint_rejects_plain_checkpoint(tmp_path):
    """A flexhinm checkpoint without gradual state is named as such."""
    from flexhinm.train import save_checkpoint

    path = save_checkpoint(tmp_path / "plain.pt", nn.Linear(4, 2))
    with pytest.raises(ValueError, match="not a gradual stage checkpoint"):
        read_stage_checkpoint(path)


# ----------------------------------------------------------------------------------- batches
def test_batch_stream_resumes_mid_epoch():
    """A stream started at step s yields what an uninterrupted stream yields from step s on."""
    images = torch.arange(10 * 3 * 4 * 4, dtype=torch.uint8).reshape(10, 3, 4, 4)
    data = ImageDataset(images, torch.arange(10) % 3, ["a", "b", "c"], mean=(0.5,) * 3, std=(0.5,) * 3)
    loader = make_loader(data, batch_size=3, train=True, seed=0)
    whole = BatchStream(loader)
    expected = [next(whole)[1] for _ in range(8)]
    later = BatchStream(make_loader(data, batch_size=3, train=True, seed=0), start_step=4)
    assert all(torch.equal(next(later)[1], label) for label in expected[4:])


def test_batch_stream_errors():
    """Loaders without len() or without batches are rejected."""
    with pytest.raises(TypeError, match="has no len"):
        BatchStream(iter([]))
    with pytest.raises(ValueError, match="has no batches"):
        BatchStream([])


# ----------------------------------------------------------------------------------- experiments
def test_methods_registered():
    """The method registry lists HiNM-GP and FlexHiNM-GP."""
    assert METHODS["hinm-gp"].label == "HiNM-GP"
    assert METHODS["flexhinm-gp"].label == "FlexHiNM-GP"


def test_gradual_runner_uses_finetune_budget():
    """The FlexHiNM-GP runner spends exactly finetune_epochs * len(train_loader) steps."""
    data = batches(5)
    budget = Budget("tiny", dense_epochs=1, finetune_epochs=2, finetune_lr=0.05)
    context = MethodContext(data, data[:1], budget, seed=0, device="cpu", progress=False)
    runner = gradual_prune_and_finetune("flexhinm", permutation="gyro", tile_rows=8)
    info = runner(tiny_model(), 0.75, context)
    assert sum(record["steps"] for record in info["history"]) == 10
    assert info["history"][-1]["target_sparsity"] == 0.75
    assert math.isfinite(info["history"][-1]["test_top1"])
    assert info["report"]["permutation"] == "gyro"
    assert [stage["target_sparsity"] for stage in info["stages"]] == [
        record["target_sparsity"] for record in info["history"]
    ]
    json.dumps(info["stages"])  # the rows of results.json carry them
