"""SGD with parameter groups and a per-iteration cosine learning-rate schedule.

:func:`make_optimizer` builds SGD with momentum and puts biases and normalisation-layer parameters
(every parameter with fewer than 2 dimensions) in a group without weight decay. Extra parameter
groups, for example Hard Concrete gate logits with their own learning rate, join the same
optimizer, and ``exclude`` keeps parameters out of it entirely so that a separate optimizer (such
as Adam) can own them.

:func:`cosine_lr_factor` is the schedule as a pure function of the step, and
:func:`make_scheduler` wraps it in a ``LambdaLR`` that is stepped once per iteration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["CosineSchedule", "cosine_lr_factor", "make_optimizer", "make_scheduler"]


def _check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    valid = value >= 0.0 if allow_zero else value > 0.0
    if math.isnan(value) or math.isinf(value) or not valid:
        rule = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value} is invalid; it must be finite and {rule}")
    return value


def make_optimizer(
    model_or_params: nn.Module | Iterable[nn.Parameter],
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    extra_param_groups: Sequence[Mapping[str, Any]] | None = None,
    exclude: Iterable[torch.Tensor] = (),
) -> torch.optim.SGD:
    """Build SGD with momentum, without weight decay on biases and normalisation parameters.

    Parameters with 2 or more dimensions (Conv and Linear weights, including the dense
    ``original`` of a masked weight) get ``weight_decay``. Parameters with fewer dimensions
    (biases, BatchNorm/GroupNorm/LayerNorm scale and shift) get none, because decaying them only
    shrinks the network's output scale.

    Args:
        model_or_params: a module (its trainable parameters are used) or an iterable of parameters.
        lr: base learning rate, > 0.
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 coefficient for the weight group, >= 0.
        nesterov: Nesterov momentum; needs ``momentum > 0``.
        extra_param_groups: more groups for the same optimizer, each a dict with ``"params"`` and
            any SGD option (``lr``, ``momentum``, ``weight_decay``, ``nesterov``). Their parameters
            are removed from the default groups. A group without ``weight_decay`` gets none.
        exclude: parameters to leave out, for example those owned by a second optimizer.

    Returns:
        ``torch.optim.SGD`` with groups ``[decay, no_decay, *extra_param_groups]``; empty default
        groups are dropped. Each group carries a ``"name"`` entry (``"decay"``, ``"no_decay"`` or
        ``"extra_<i>"`` unless the extra group names itself).

    Raises:
        ValueError: for a non-positive ``lr``, ``momentum`` outside [0, 1), negative
            ``weight_decay``, ``nesterov`` without momentum, an extra group without ``"params"``, or
            no trainable parameter at all.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
        >>> optimizer = make_optimizer(model, lr=0.1)
        >>> [(g["name"], len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups]
        [('decay', 1, 0.0005), ('no_decay', 3, 0.0)]
    """
    lr = _check_positive(lr, "lr")
    weight_decay = _check_positive(weight_decay, "weight_decay", allow_zero=True)
    momentum = _check_positive(momentum, "momentum", allow_zero=True)
    if momentum >= 1.0:
        raise ValueError(f"momentum={momentum} is invalid; use a value in [0, 1) such as 0.9")
    if nesterov and momentum == 0.0:
        raise ValueError("nesterov=True needs momentum > 0; pass momentum=0.9 or nesterov=False")

    extra_groups = []
    taken = {id(tensor) for tensor in exclude}
    for index, group in enumerate(extra_param_groups or ()):
        if not isinstance(group, Mapping) or "params" not in group:
            raise ValueError(
                f"extra_param_groups[{index}] must be a dict with a 'params' entry, got {group!r}"
            )
        params = list(group["params"])
        extra_groups.append({"name": f"extra_{index}", **group, "params": params})
        taken.update(id(param) for param in params)

    if isinstance(model_or_params, nn.Module):
        candidates = list(model_or_params.parameters())
    else:
        candidates = list(model_or_params)

    decay, no_decay = [], []
    for param in candidates:
        if not param.requires_grad or id(param) in taken:
            continue
        if param.dim() >= 2:
            decay.append(param)
        else:
            no_decay.append(param)

    groups = []
    if decay:
        groups.append({"name": "decay", "params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"name": "no_decay", "params": no_decay, "weight_decay": 0.0})
    groups.extend(extra_groups)
    if not any(group["params"] for group in groups):
        raise ValueError("no trainable parameter found; check requires_grad and the exclude list")

    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


def cosine_lr_factor(
    step: int, *, total_steps: int, warmup_steps: int = 0, final_factor: float = 0.0
) -> float:
    r"""Return the learning-rate multiplier at iteration ``step`` (0-based).

    With ``W = warmup_steps``, ``T = total_steps`` and ``f = final_factor``:

    .. math::

        \text{factor}(s) = \begin{cases} (s + 1) / W & s < W \\
        f + (1 - f)\,\tfrac12\bigl(1 + \cos(\pi (s - W) / (T - W))\bigr) & W \le s \le T
        \end{cases}

    so the factor is 1 at the end of warm-up, 0.5 + f / 2 halfway through the cosine and reaches
    ``f`` at ``s = T``. Steps past ``T`` stay at ``f``.

    Example:
        >>> [round(cosine_lr_factor(s, total_steps=4), 3) for s in range(5)]
        [1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineSchedule:
    """Picklable ``lr_lambda`` for ``LambdaLR`` that calls :func:`cosine_lr_factor`.

    ``LambdaLR.state_dict()`` stores this object's ``__dict__`` (three numbers), so a scheduler
    state saved in a checkpoint records the schedule's length, which a resume can check.
    """

    def __init__(self, total_steps: int, warmup_steps: int = 0, final_factor: float = 0.0) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_factor = float(final_factor)

    def __call__(self, step: int) -> float:
        return cosine_lr_factor(
            step,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            final_factor=self.final_factor,
        )


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    final_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Wrap ``optimizer`` in a per-iteration cosine schedule (see :func:`cosine_lr_factor`).

    Every parameter group follows the same factor times its own base ``lr``. Call
    ``scheduler.step()`` once after every ``optimizer.step()``.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        total_steps: optimizer steps of the whole run (epochs x batches per epoch), > 0.
        warmup_steps: steps of linear warm-up, in [0, total_steps).
        final_factor: the factor reached at the last step, in [0, 1].

    Raises:
        ValueError: for ``total_steps <= 0``, a warm-up outside [0, total_steps) or
            ``final_factor`` outside [0, 1].

    Example:
        >>> optimizer = make_optimizer(nn.Linear(2, 2), lr=0.1)
        >>> scheduler = make_scheduler(optimizer, total_steps=10)
        >>> optimizer.param_groups[0]["lr"]
        0.1
    """
    for name, value in (("total_steps", total_steps), ("warmup_steps", warmup_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps} is invalid; it must be > 0")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps={warmup_steps} must lie in [0, total_steps={total_steps}); "
            f"shorten the warm-up"
        )
    final_factor = _check_positive(final_factor, "final_factor", allow_zero=True)
    if final_factor > 1.0:
        raise ValueError(f"final_factor={final_factor} is invalid; it must lie in [0, 1]")

    schedule = CosineSchedule(total_steps, warmup_steps, final_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
