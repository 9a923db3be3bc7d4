"""The gradual pruning driver of FlexHiNM-GP: stages of allocation, joint training and hardening.

Each stage of :func:`gradual_prune` does five things:

1. allocate the regions of every eligible layer at the stage's target. The first stage may apply
   Gyro-Permutation, and later stages are monotone (see :mod:`flexhinm.gradual.allocate`);
2. put Hard Concrete gates on the N:M groups that just entered the N:M region. Groups hardened in
   earlier stages keep their masks;
3. train weights (SGD with momentum and a cosine learning rate) and gate logits (Adam, constant
   learning rate, ``log_alpha`` clamped after each step) on the task loss plus the gate loss, while
   the temperature is annealed in steps;
4. harden the gates, so each group keeps its ``n`` largest gates, and evaluate;
5. write a stage checkpoint (see :mod:`flexhinm.gradual.state`).

After the last stage every pruned layer carries a plain binary mask with pruned, 2:4 and dense
regions per tile.

One SGD optimizer serves the whole run, so momentum carries over between stages. By default
(``lr_schedule="stage"``) the learning rate runs one cosine from ``lr`` to 0 within each stage. A
new target removes weights, and a fresh high learning rate lets the network recover. The decay to
0 then settles weights and gates before they are hardened. ``lr_schedule="run"`` runs one cosine
over all stages instead, the schedule that :func:`flexhinm.fit` gives a one-shot method that
fine-tunes for the same steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from os import PathLike

import torch
import torch.nn.functional as F
from torch import nn

from ..gates import gates_of
from ..train import make_optimizer, make_scheduler, seed_everything
from ..train.distributed import default_device, world_size
from ..train.model_state import plain_parameter_name
from .config import GradualConfig
from .loop import BatchStream
from .records import GateTracker, GradualResult
from .stage import run_stage
from .stages import Stage, check_stage_plan
from .state import (
    RunState,
    clear_stage_checkpoints,
    model_fingerprint,
    resume_run,
    write_stage_checkpoint,
)

__all__ = ["gradual_prune"]


def _weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Return the model's parameters sorted by plain name, so masking does not change the order."""
    named = [(plain_parameter_name(name), parameter) for name, parameter in model.named_parameters()]
    return [parameter for _, parameter in sorted(named, key=lambda item: item[0])]


def gradual_prune(
    model: nn.Module,
    stages: Sequence[Stage | tuple[float, int]],
    train_loader: Iterable,
    eval_loader: Iterable | None = None,
    *,
    lr: float,
    method: str = "flexhinm",
    permutation: str | None = "gyro",
    boundary: str = "final",
    learn_masks: bool = True,
    score: str = "magnitude",
    score_options: Mapping[str, object] | None = None,
    tile_rows: int = 64,
    n: int = 2,
    m: int = 4,
    exclude: Iterable[str] = (),
    include_head: bool = False,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    lr_schedule: str = "stage",
    gate_lr: float = 1e-2,
    lambda_sparse: float = 0.0,
    lambda_constraint: float = 1.0,
    init_log_alpha: float = 2.0,
    temperature: float = 2.0 / 3.0,
    temperature_factor: float = 0.8,
    temperature_updates: int = 4,
    temperature_floor: float = 0.1,
    gamma: float = -0.1,
    zeta: float = 1.1,
    log_alpha_limit: float = 4.6,
    seed: int = 0,
    device: torch.device | str | None = None,
    channels_last: bool | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    checkpoint_dir: str | PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    track: Sequence[str] = (),
    track_every: int = 10,
    track_groups: int = 4,
) -> GradualResult:
    """Prune ``model`` in place in gradual stages, learning the 2:4 masks with Hard Concrete gates.

    See the module docstring for what each stage does. The model should be the trained dense
    network. Every stage draws its batches from one stream over ``train_loader``, so the stages
    together train for ``sum(stage.steps)`` batches. Use :func:`default_stage_plan` with
    ``epochs * len(train_loader)`` steps to match the budget of a one-shot method.

    Args:
        model: the network, pruned and trained in place; it must carry no gates.
        stages: :class:`Stage` objects or ``(sparsity, steps)`` pairs with non-decreasing targets.
        train_loader: ``(x, y)`` batches with ``len()``. An exact resume needs a loader whose
            order is fixed by ``set_epoch`` (such as :class:`flexhinm.data.BatchLoader`) or a list.
        eval_loader: evaluated after each stage (before and after hardening), or ``None``.
        lr: peak SGD learning rate of the weights.
        method: region method, ``"flexhinm"``, ``"hinm"`` or ``"ovw"``.
        permutation: ``"gyro"`` for Gyro-Permutation before the first stage (then fixed), or
            ``None``.
        boundary: FlexHiNM only. ``"final"`` searches the boundary between the regions once, at
            the final target, and keeps its relative position in every stage, so the dense
            region shrinks at every stage. ``"stage"`` searches at every stage (see
            :mod:`flexhinm.gradual.allocate`).
        learn_masks: ``True`` learns the 2:4 choice of new groups with gates. ``False`` keeps the
            2:4 choice of the importance scores (the same stages without mask learning).
        score: importance for the allocation, ``"magnitude"``, ``"taylor"``, ``"fisher"`` or
            ``"fisher-block"``; data-driven scores read ``train_loader``.
        score_options: more keywords for :func:`flexhinm.compute_scores`, e.g. ``num_batches``.
        tile_rows: rows per tile ``V`` (smaller divisors are used where it does not divide).
        n: weights kept per N:M group.
        m: N:M group size.
        exclude: module names to leave dense.
        include_head: prune the last layer too.
        momentum: SGD momentum.
        weight_decay: L2 coefficient on weights with 2 or more dimensions.
        nesterov: Nesterov momentum.
        lr_schedule: ``"stage"`` (cosine within each stage) or ``"run"`` (one cosine overall).
        gate_lr: Adam learning rate of the gate logits (constant).
        lambda_sparse: weight of ``mean(z)`` in the gate loss, ``>= 0``.
        lambda_constraint: weight of ``mean(|sum of z over a group - n|)``, ``>= 0``.
        init_log_alpha: new gates start at ``+init_log_alpha`` (the ``n`` most important weights
            of the group) or ``-init_log_alpha``.
        temperature: gate temperature at the start of every stage, ``> 0``.
        temperature_factor: multiplier per anneal, in ``(0, 1]``.
        temperature_updates: periods per stage; the temperature drops at the start of each period
            after the first (see :func:`stage_temperature`).
        temperature_floor: lowest temperature.
        gamma: lower stretch limit of the gates, ``< 0``.
        zeta: upper stretch limit of the gates, ``> 1``.
        log_alpha_limit: ``log_alpha`` is clamped to ``[-limit, limit]`` after each step.
        seed: seeds ``random``, NumPy and torch at the start, and Gyro-Permutation.
        device: default ``cuda`` when available, else the CPU.
        channels_last: channels-last model and inputs; default ``True`` on CUDA only.
        loss_fn: ``(logits, targets) -> scalar`` task loss.
        checkpoint_dir: folder for ``gradual-stage-<k>.pt`` after every stage, or ``None``.
        resume: continue from the latest stage checkpoint in ``checkpoint_dir`` (a fresh start
            when there is none). ``False`` deletes the stage checkpoints there and starts over.
        progress: show a tqdm bar per stage.
        track: parameter names whose gates are recorded every ``track_every`` steps.
        track_every: steps between two gate records.
        track_groups: rows of ``m`` gates recorded per layer.

    Returns:
        A :class:`GradualResult`. On the same device, thread count, loader and starting model, a
        resumed run ends with the same weights, records (wall times aside) and gate trajectory
        as an uninterrupted one.

    Raises:
        ValueError: for a bad stage plan (empty, a decreasing target, a stage without steps), a
            bad setting (see :class:`GradualConfig`), HiNM with a target below ``1 - n/m``, a model
            that already carries gates, or a stage checkpoint of another run.
        TypeError: for a setting of the wrong type or a loader without ``len()``.
        NotImplementedError: under a multi-process (DDP) launch.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
        ...                       nn.Linear(32, 4))
        >>> batches = [(torch.randn(8, 16), torch.randint(0, 4, (8,))) for _ in range(4)]
        >>> result = gradual_prune(model, [(0.5, 4), (0.75, 4)], batches, lr=0.01, tile_rows=16,
        ...                        permutation=None, progress=False)
        >>> [round(record.sparsity, 4) for record in result.records]
        [0.5, 0.75]
    """
    config = GradualConfig(
        method=method, permutation=permutation, boundary=boundary, learn_masks=learn_masks,
        score=score, score_options=dict(score_options or {}), exclude=tuple(exclude),
        include_head=include_head, tile_rows=tile_rows, n=n, m=m, lr=lr, momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov, lr_schedule=lr_schedule, gate_lr=gate_lr, lambda_sparse=lambda_sparse,
        lambda_constraint=lambda_constraint, init_log_alpha=init_log_alpha,
        temperature=temperature, temperature_factor=temperature_factor,
        temperature_updates=temperature_updates, temperature_floor=temperature_floor,
        gamma=gamma, zeta=zeta, log_alpha_limit=log_alpha_limit, seed=seed,
        track=tuple(track), track_every=track_every, track_groups=track_groups,
    )
    plan = check_stage_plan(stages)
    lowest = 1.0 - n / m
    if method == "hinm" and plan[0].sparsity < lowest:
        raise ValueError(
            f"method='hinm' needs every stage target >= {lowest} (its N:M region alone removes "
            f"that much), but stages[0].sparsity={plan[0].sparsity}; start the plan at {lowest} "
            f"or use method='flexhinm'"
        )
    if world_size() > 1:
        raise NotImplementedError(
            "gradual_prune trains in one process; launch it without torchrun (DDP is not supported)"
        )
    if gates_of(model):
        raise ValueError(f"the model already carries gates on {sorted(gates_of(model))}; harden "
                         f"or remove them (flexhinm.harden_gates, flexhinm.remove_gates) first")

    stream = BatchStream(train_loader)
    device = torch.device(device) if device is not None else default_device()
    if channels_last is None:
        channels_last = device.type == "cuda"
    fingerprint = model_fingerprint(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    optimizer = make_optimizer(_weight_parameters(model), lr=lr, momentum=momentum,
                               weight_decay=weight_decay, nesterov=nesterov)
    run_scheduler = None
    if lr_schedule == "run":
        run_scheduler = make_scheduler(optimizer, total_steps=sum(stage.steps for stage in plan))

    run = RunState(GateTracker(config.track, config.track_every, config.track_groups))
    resumed_from = None
    if checkpoint_dir is not None and resume:
        resumed_from = resume_run(
            checkpoint_dir, run, model, optimizer, run_scheduler, config=config.to_dict(),
            stages=plan, steps_per_epoch=stream.steps_per_epoch, fingerprint=fingerprint,
        )
    elif checkpoint_dir is not None:
        clear_stage_checkpoints(checkpoint_dir)
    if resumed_from is None:
        seed_everything(seed)
    stream.step = run.global_step

    context = {
        "train_loader": train_loader, "eval_loader": eval_loader, "device": device,
        "channels_last": channels_last, "loss_fn": loss_fn, "progress": progress,
    }
    for index in range(run.completed, len(plan)):
        run_stage(index, plan, run, model, stream, optimizer=optimizer,
                  run_scheduler=run_scheduler, config=config, context=context)
        if checkpoint_dir is not None:
            write_stage_checkpoint(
                checkpoint_dir, model, optimizer=optimizer, scheduler=run_scheduler,
                state=run.state(config, plan, stream.steps_per_epoch, fingerprint),
            )

    return GradualResult(
        records=list(run.records), layouts=dict(run.layouts), report=run.report,
        trajectory=list(run.tracker.entries), top1_pruned=run.top1_pruned,
        config=config.to_dict(), resumed_from=resumed_from,
    )
