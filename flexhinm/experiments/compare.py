"""Prune copies of one dense baseline with several methods, fine-tune each the same way, compare.

Every method gets the same baseline weights, the same fine-tuning epochs and learning rate, and
the same data order, so differences in top-1 come from the masks. Methods live in one registry,
:data:`METHODS`; each turns a copy of the baseline into a pruned, fine-tuned model.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..gradual import default_stage_plan, gradual_prune
from ..prune import prune_model
from ..sparsify import masks_of
from ..train import evaluate, fit
from .budgets import Budget

__all__ = [
    "METHODS",
    "MethodContext",
    "MethodSpec",
    "finetune",
    "gradual_prune_and_finetune",
    "planned_runs",
    "prune_and_finetune",
    "register_method",
    "run_method",
]

_logger = logging.getLogger(__name__)


@dataclass
class MethodContext:
    """Inputs of a method besides the model.

    Attributes:
        train_loader: fine-tuning batches.
        eval_loader: evaluation batches.
        budget: fine-tuning epochs and learning rate.
        seed: seeds every fine-tune and permutation.
        device: training device; default CUDA when available.
        progress: show tqdm bars.
        tile_rows: rows per tile of the region methods. Layers whose output rows it does not
            divide fall back to 64, 32, 16 or 8 (see :func:`flexhinm.prune_model`).
        score: importance score name for every method (see :func:`flexhinm.importance.compute_scores`).
    """

    train_loader: object
    eval_loader: object
    budget: Budget
    seed: int = 0
    device: torch.device | str | None = None
    progress: bool = True
    tile_rows: int = 64
    score: str = "magnitude"

    def prune_options(self) -> dict:
        """Return the keywords every runner passes to :func:`flexhinm.prune_model`."""
        options = {"score": self.score}
        if self.score != "magnitude":
            options.update(loader=self.train_loader, score_options={"num_batches": 4})
        return options


@dataclass(frozen=True)
class MethodSpec:
    """One entry of the comparison.

    Attributes:
        name: command-line name, e.g. ``"hinm"``.
        label: name in tables and plots, e.g. ``"HiNM"``.
        run: ``run(model, sparsity, context) -> info dict``; prunes and fine-tunes ``model`` in
            place. ``None`` for the dense reference, which is neither pruned nor fine-tuned.
        fixed_sparsity: the only sparsity the method reaches (0.5 for 2:4), or ``None``.
        description: one line for ``--help``.
    """

    name: str
    label: str
    run: Callable[[nn.Module, float, MethodContext], dict] | None
    fixed_sparsity: float | None = None
    description: str = ""


def finetune(model: nn.Module, context: MethodContext, **options) -> list[dict]:
    """Fine-tune ``model`` in place with the budget's epochs and learning rate; return the history."""
    budget = context.budget
    return fit(
        model,
        context.train_loader,
        context.eval_loader,
        epochs=budget.finetune_epochs,
        lr=budget.finetune_lr,
        weight_decay=budget.weight_decay,
        seed=context.seed,
        device=context.device,
        progress=context.progress,
        channels_last=True,
        **options,
    )


def prune_and_finetune(method: str, **prune_options) -> Callable[[nn.Module, float, MethodContext], dict]:
    """Return a runner that prunes with :func:`flexhinm.prune_model`, then fine-tunes."""

    def run(model: nn.Module, sparsity: float, context: MethodContext) -> dict:
        options = {**context.prune_options(), **prune_options}
        if method in ("ovw", "hinm", "flexhinm"):
            options.setdefault("tile_rows", context.tile_rows)
        report = prune_model(model, method, sparsity, **options)
        top1_pruned = evaluate(model, context.eval_loader, device=context.device).top1
        history = finetune(model, context)
        return {"top1_pruned": top1_pruned, "history": history, "report": report.to_dict()}

    return run


def gradual_prune_and_finetune(
    method: str = "flexhinm", *, num_stages: int = 4, **gradual_options
) -> Callable[[nn.Module, float, MethodContext], dict]:
    """Return a runner that prunes in gradual stages with :func:`flexhinm.gradual.gradual_prune`.

    The stages share exactly the budget's fine-tuning steps, ``finetune_epochs *
    len(train_loader)``, which is what :func:`finetune` trains a one-shot method for. The targets
    follow :func:`flexhinm.gradual.default_stage_plan`. The result has no ``top1_pruned`` (it is
    ``None``): the accuracy right after the first stage's masks is ``top1_first_stage``.

    Args:
        method: region method of the stages.
        num_stages: number of stages.
        gradual_options: more keywords for :func:`~flexhinm.gradual.gradual_prune`, such as
            ``permutation`` or ``learn_masks``.
    """

    def run(model: nn.Module, sparsity: float, context: MethodContext) -> dict:
        budget = context.budget
        total_steps = budget.finetune_epochs * len(context.train_loader)
        stages = default_stage_plan(sparsity, total_steps, num_stages=num_stages)
        result = gradual_prune(
            model, stages, context.train_loader, context.eval_loader, method=method,
            lr=budget.finetune_lr, weight_decay=budget.weight_decay, seed=context.seed,
            device=context.device, progress=context.progress, channels_last=True,
            **{"tile_rows": context.tile_rows, **context.prune_options(), **gradual_options},
        )
        return {
            # No model sits at the final target untrained, so there is no "right after pruning"
            # accuracy; the first stage's value is kept under its own name.
            "top1_pruned": None,
            "top1_first_stage": result.top1_pruned,
            "history": result.history(),
            "report": result.report.to_dict(),
            "stages": [record.to_dict() for record in result.records],
        }

    return run


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (replacing an entry of the same name) and return it."""
    METHODS[spec.name] = spec
    return spec


register_method(MethodSpec("dense", "Dense", None, description="the baseline, not pruned"))
register_method(
    MethodSpec(
        "unstructured",
        "Unstructured",
        prune_and_finetune("unstructured"),
        description="lowest |w| of each layer",
    )
)
register_method(
    MethodSpec(
        "nm",
        "2:4",
        prune_and_finetune("nm"),
        fixed_sparsity=0.5,
        description="2 largest |w| of every 4 input channels (always 50 %)",
    )
)
register_method(
    MethodSpec("ovw", "OVW", prune_and_finetune("ovw"), description="column vectors only")
)
register_method(
    MethodSpec(
        "hinm", "HiNM", prune_and_finetune("hinm"), description="column vectors, then 2:4"
    )
)
register_method(
    MethodSpec(
        "hinm-gp",
        "HiNM-GP",
        prune_and_finetune("hinm", permutation="gyro"),
        description="HiNM after Gyro-Permutation of output and input channels",
    )
)
register_method(
    MethodSpec(
        "flexhinm",
        "FlexHiNM",
        prune_and_finetune("flexhinm"),
        description="pruned, 2:4 and dense regions per tile, searched per layer",
    )
)
register_method(
    MethodSpec(
        "flexhinm-gp",
        "FlexHiNM-GP",
        gradual_prune_and_finetune("flexhinm", permutation="gyro"),
        description="FlexHiNM after Gyro-Permutation, 4 gradual stages with learned 2:4 masks",
    )
)


def _weight_counts(model: nn.Module) -> tuple[int, int, int, int]:
    """Return (kept, total) over masked weights and (non-zero, total) over all Linear/Conv weights."""
    masks = masks_of(model)
    kept = sum(int(mask.sum()) for mask in masks.values())
    total = sum(mask.numel() for mask in masks.values())
    nonzero = all_weights = 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            weight = module.weight.detach()
            nonzero += int((weight != 0).sum())
            all_weights += weight.numel()
    return kept, total, nonzero, all_weights


def run_method(
    spec: MethodSpec,
    baseline: nn.Module,
    sparsity: float,
    context: MethodContext,
    *,
    return_model: bool = False,
) -> dict | tuple[dict, nn.Module]:
    """Run one method on a deep copy of ``baseline`` and return a JSON-ready result row.

    With ``return_model=True`` it returns ``(row, model)``, the pruned and fine-tuned copy too.

    The row has ``method``, ``label``, ``target_sparsity``, ``sparsity`` (fraction of zeros over
    the pruned layers), ``kept_weights`` and ``pruned_layer_weights`` (weights of the pruned
    layers), ``nonzero_weights`` and ``all_weights`` (over every Linear/Conv layer),
    ``top1_pruned`` (before fine-tuning), ``top1`` (after, in percent), and ``seconds``. Gradual
    methods add ``top1_first_stage`` and ``stages``, one record per stage (target, sparsity, new
    gate groups, top-1).
    """
    start = time.perf_counter()
    model = copy.deepcopy(baseline)
    target = spec.fixed_sparsity if spec.fixed_sparsity is not None else sparsity

    if spec.run is None:
        top1 = evaluate(model, context.eval_loader, device=context.device).top1
        info = {"top1_pruned": top1, "history": []}
        target = 0.0
    else:
        info = spec.run(model, target, context)
        top1 = info["history"][-1]["test_top1"] if info.get("history") else evaluate(
            model, context.eval_loader, device=context.device
        ).top1

    kept, total, nonzero, all_weights = _weight_counts(model)
    if spec.run is None:
        # The dense reference keeps every weight; count them over all Linear/Conv layers.
        kept, total = nonzero, all_weights
    row = {
        "method": spec.name,
        "label": spec.label,
        "target_sparsity": target,
        "sparsity": 1.0 - kept / total if total else 0.0,
        "kept_weights": kept,
        "pruned_layer_weights": total,
        "nonzero_weights": nonzero,
        "all_weights": all_weights,
        "top1_pruned": info["top1_pruned"],
        "top1": top1,
        "seconds": time.perf_counter() - start,
    }
    if "top1_first_stage" in info:
        row["top1_first_stage"] = info["top1_first_stage"]
    if "stages" in info:
        row["stages"] = info["stages"]
    if "report" in info:
        row["layers"] = info["report"].get("layers")
    where = "" if spec.run is None else f" at {100 * target:.1f} %"
    _logger.info("%s%s: top-1 %.2f %% after %.0f s", spec.label, where, top1, row["seconds"])
    return (row, model) if return_model else row


def planned_runs(methods: Sequence[str], sparsities: Sequence[float]) -> list[tuple[MethodSpec, float]]:
    """Return the (method, sparsity) pairs to run.

    Dense and fixed-sparsity methods (2:4) run once. Every other method runs at each of
    ``sparsities``; ``"unstructured"`` also runs at the fixed sparsity of each selected method,
    so 2:4 has an unstructured counterpart at the same sparsity.

    Example:
        >>> [(spec.name, s) for spec, s in planned_runs(["nm", "unstructured"], [0.75])]
        [('nm', 0.5), ('unstructured', 0.5), ('unstructured', 0.75)]
    """
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    fixed = {METHODS[name].fixed_sparsity for name in methods} - {None}

    runs = []
    for name in dict.fromkeys(methods):
        spec = METHODS[name]
        if spec.run is None or spec.fixed_sparsity is not None:
            runs.append((spec, spec.fixed_sparsity or 0.0))
            continue
        targets = sorted(set(sparsities) | fixed) if name == "unstructured" else sparsities
        runs.extend((spec, sparsity) for sparsity in targets)
    return runs

