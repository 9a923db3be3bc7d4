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

from ..prune import prune_model
from ..sparsify import masks_of
from ..training import evaluate, fit
from .budgets import Budget

__all__ = [
    "METHODS",
    "MethodContext",
    "MethodSpec",
    "finetune",
    "planned_runs",
    "prune_and_finetune",
    "register_method",
    "run_method",
]

_logger = logging.getLogger(__name__)


@dataclass
class MethodContext:
    """What a method needs besides the model: data, budget, seed, device and progress bars."""

    train_loader: object
    eval_loader: object
    budget: Budget
    seed: int = 0
    device: torch.device | str | None = None
    progress: bool = True


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
        report = prune_model(model, method, sparsity, **prune_options)
        top1_pruned = evaluate(model, context.eval_loader, device=context.device).top1
        history = finetune(model, context)
        return {"top1_pruned": top1_pruned, "history": history, "report": report.to_dict()}

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
        "flexhinm",
        "FlexHiNM",
        prune_and_finetune("flexhinm"),
        description="pruned, 2:4 and dense regions per tile, searched per layer",
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
    ``top1_pruned`` (before fine-tuning), ``top1`` (after, in percent), and ``seconds``.
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
    if "report" in info:
        row["layers"] = info["report"].get("layers")
    _logger.info("%s at %.3f: top-1 %.2f %%", spec.label, target, top1)
    return (row, model) if return_model else row


def planned_runs(methods: Sequence[str], sparsities: Sequence[float]) -> list[tuple[MethodSpec, float]]:
    """Return the (method, sparsity) pairs to run: fixed-sparsity methods and dense run once."""
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    runs = []
    for name in methods:
        spec = METHODS[name]
        if spec.run is None or spec.fixed_sparsity is not None:
            runs.append((spec, spec.fixed_sparsity or 0.0))
            continue
        runs.extend((spec, sparsity) for sparsity in sparsities)
    return runs

