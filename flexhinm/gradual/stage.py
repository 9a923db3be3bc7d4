"""One stage of gradual pruning: allocate, add gates, train, harden, evaluate and record."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..gates import NMGates, apply_nm_gates, entered_groups, gate_param_group, harden_gates
from ..regions import RegionLayout
from ..sparsify import apply_masks, warn_if_revived
from ..train import evaluate, make_scheduler
from .allocate import (
    changed_choices,
    first_stage_layouts,
    measured_report,
    next_stage_layouts,
    score_layers,
)
from .config import GradualConfig
from ..train.loops import set_loader_epoch
from .loop import BatchStream, train_stage
from .records import StageRecord, layer_summary, overall_sparsity
from .stages import Stage
from .state import RunState

__all__ = ["add_gates", "run_stage"]

_logger = logging.getLogger(__name__)


def add_gates(
    model: nn.Module,
    layouts: Mapping[str, RegionLayout],
    previous: Mapping[str, RegionLayout] | None,
    config: GradualConfig,
) -> dict[str, NMGates]:
    """Put fresh gates on the N:M groups that are new since ``previous``; return them by name.

    In the first stage (``previous`` is ``None``) every N:M group is new. A gate starts open for
    the ``n`` weights of its group that the layout's ``nm_keep`` keeps.
    """
    gates = {}
    for name, layout in layouts.items():
        if layout.counts[1] == 0:
            continue
        live = None if previous is None else entered_groups(previous[name], layout)
        if live is not None and not bool(live.any()):
            continue
        gates[name] = NMGates(
            layout, live_groups=live, init_log_alpha=config.init_log_alpha,
            temperature=config.temperature, gamma=config.gamma, zeta=config.zeta,
        )
    apply_nm_gates(model, gates)
    return gates


def run_stage(
    index: int,
    plan: Sequence[Stage],
    run: RunState,
    model: nn.Module,
    stream: BatchStream,
    *,
    optimizer: torch.optim.Optimizer,
    run_scheduler: Any | None,
    config: GradualConfig,
    context: Mapping[str, Any],
) -> None:
    """Allocate, gate, train, harden and evaluate stage ``index`` of ``plan``; update ``run``.

    ``run_scheduler`` is the run-long cosine, or ``None`` to start a cosine for this stage.
    ``context`` contains the run's fixed inputs: ``train_loader``, ``eval_loader``, ``device``,
    ``channels_last``, ``loss_fn`` and ``progress``.
    """
    started = time.perf_counter()
    stage = plan[index]
    previous = run.layouts or None
    eval_loader, device = context["eval_loader"], context["device"]

    # Data-driven scores read the loader. Setting its epoch first makes a resumed run read the
    # same batches as an uninterrupted one.
    loader = context["train_loader"] if config.score != "magnitude" else None
    if loader is not None:
        set_loader_epoch(loader, run.global_step // stream.steps_per_epoch)
    scores = score_layers(model, config, loader=loader)
    if previous is None:
        run.report, layouts, run.positions = first_stage_layouts(
            model, stage.sparsity, plan[-1].sparsity, config=config, scores=scores,
            progress=context["progress"],
        )
    else:
        layouts = next_stage_layouts(stage.sparsity, previous=previous, positions=run.positions,
                                     scores=scores, config=config)

    masks = {name: layout.mask() for name, layout in layouts.items()}
    if previous is None:
        warn_if_revived(model, masks, kept_by="the first stage keeps", stacklevel=4)
    apply_masks(model, masks)
    if index == 0 and eval_loader is not None:
        run.top1_pruned = evaluate(model, eval_loader, device=device, loss_fn=context["loss_fn"]).top1

    gates = add_gates(model, layouts, previous, config) if config.learn_masks else {}
    gate_optimizer = None
    if gates:
        gate_optimizer = torch.optim.Adam([gate_param_group(gates, lr=config.gate_lr)])
    scheduler = run_scheduler
    if scheduler is None:
        scheduler = make_scheduler(optimizer, total_steps=stage.steps)

    means = train_stage(
        model, stream, steps=stage.steps, stage=index, optimizer=optimizer,
        gate_optimizer=gate_optimizer, scheduler=scheduler, gates=gates, config=config,
        loss_fn=context["loss_fn"], device=device, channels_last=context["channels_last"],
        tracker=run.tracker, progress=context["progress"],
    )

    gated_loss = gated_top1 = None
    changed, gated_rows = 0, 0
    if gates:
        if eval_loader is not None:
            gated = evaluate(model, eval_loader, device=device, loss_fn=context["loss_fn"])
            gated_loss, gated_top1 = gated.loss, gated.top1
        hardened = harden_gates(model)
        for name, layout in hardened.items():
            layer_changed, layer_rows = changed_choices(layouts[name], layout, gates[name].live_groups)
            changed += layer_changed
            gated_rows += layer_rows
        layouts.update(hardened)

    test_loss = test_top1 = None
    if eval_loader is not None:
        final = evaluate(model, eval_loader, device=device, loss_fn=context["loss_fn"])
        test_loss, test_top1 = final.loss, final.top1

    run.report = measured_report(run.report, stage.sparsity, layouts, scores, config.permutation)
    run.layouts = layouts
    run.records.append(StageRecord(
        stage=index,
        target_sparsity=stage.sparsity,
        sparsity=overall_sparsity(layouts),
        steps=stage.steps,
        first_step=run.global_step,
        layers=layer_summary(layouts),
        new_groups=sum(int(item.live_groups.sum()) for item in gates.values()),
        gates=sum(item.gate.log_alpha.numel() for item in gates.values()),
        changed_choices=changed / gated_rows if gated_rows else None,
        gated_loss=gated_loss,
        gated_top1=gated_top1,
        test_loss=test_loss,
        test_top1=test_top1,
        seconds=time.perf_counter() - started,
        **means,
    ))
    run.global_step += stage.steps
    run.completed = index + 1
    _logger.info(
        "stage %d/%d: target %.4f, sparsity %.4f, %d new groups, top-1 %s",
        index + 1, len(plan), stage.sparsity, run.records[-1].sparsity, run.records[-1].new_groups,
        "n/a" if test_top1 is None else f"{test_top1:.2f} %",
    )
