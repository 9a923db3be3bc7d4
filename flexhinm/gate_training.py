"""Training helpers of Hard Concrete N:M gates: loss, temperature schedule, clamp, parameter groups.

Every helper takes a model with gated weights, a dict from :func:`~flexhinm.gates.gates_of` or a
list of :class:`~flexhinm.gates.NMGates`. :func:`gate_loss` is added to the task loss,
:func:`temperature_at` and :func:`set_temperature` anneal the temperature,
:func:`clamp_log_alpha_` runs after each optimizer step, and :func:`gate_param_group` gives the
gate logits their own optimizer parameter group. :mod:`flexhinm.gates` re-exports all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .gates import NMGates

__all__ = [
    "clamp_log_alpha_",
    "gate_loss",
    "gate_loss_terms",
    "gate_param_group",
    "gate_parameters",
    "non_gate_parameters",
    "set_temperature",
    "temperature_at",
]


def _collect(source: nn.Module | Mapping[str, NMGates] | Iterable[NMGates]) -> list[NMGates]:
    """Return the gates in a model (found anywhere in its modules), a mapping or an iterable."""
    # flexhinm.gates imports this module, so NMGates is imported when first needed.
    from .gates import NMGates

    if isinstance(source, nn.Module):
        return [module for module in source.modules() if isinstance(module, NMGates)]
    items = list(source.values()) if isinstance(source, Mapping) else list(source)
    for item in items:
        if not isinstance(item, NMGates):
            raise TypeError(f"expected NMGates, got {type(item).__name__}; pass a model, a dict "
                            f"from gates_of(model) or a list of NMGates")
    return items


def _check_weight(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value} is invalid; loss weights must be finite and >= 0")
    return float(value)


def gate_loss_terms(
    source: nn.Module | Mapping[str, NMGates] | Iterable[NMGates],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(mean(z), mean(|sum of z over a group - n|))`` over all live gates of ``source``.

    Both means pool every gate (and every group of ``m`` gates along a row) of every layer, so a
    large layer weighs more than a small one. In training mode ``z`` is a fresh sample, drawn
    independently of the sample that the weight's forward uses, and in evaluation mode it is the
    deterministic gate.

    Args:
        source: a model with gated weights, a dict from :func:`gates_of` or a list of gates.

    Returns:
        Two scalar tensors, differentiable in every ``log_alpha``. Both are 0 when there are no
        live gates.
    """
    values, deviations = [], []
    for layer_gates in _collect(source):
        gates = layer_gates.gate()
        values.append(gates.reshape(-1))
        deviations.append((gates.sum(dim=-1) - layer_gates.layout.n).abs().reshape(-1))
    if not values or sum(item.numel() for item in values) == 0:
        zero = torch.zeros(())
        return zero, zero.clone()
    return torch.cat(values).mean(), torch.cat(deviations).mean()


def gate_loss(
    source: nn.Module | Mapping[str, NMGates] | Iterable[NMGates],
    *,
    lambda_sparse: float = 0.0,
    lambda_constraint: float = 1.0,
) -> torch.Tensor:
    """Return ``lambda_sparse * mean(z) + lambda_constraint * mean(|sum of z over a group - n|)``.

    Add it to the task loss. The sparsity term pushes every gate towards 0. The constraint term
    pushes every group towards exactly ``n`` open gates. The defaults (``lambda_constraint = 1``,
    ``lambda_sparse = 0``) are this library's choice, not published FlexHiNM values. The
    sparsity term adds little next to the constraint term, because both act on the number of open
    gates, and the constraint already fixes that number to ``n``.

    Args:
        source: a model with gated weights, a dict from :func:`gates_of` or a list of gates.
        lambda_sparse: weight of ``mean(z)``, finite and ``>= 0``.
        lambda_constraint: weight of ``mean(|sum z - n|)``, finite and ``>= 0``.

    Raises:
        ValueError: if a weight is negative or not finite.
    """
    lambda_sparse = _check_weight(lambda_sparse, "lambda_sparse")
    lambda_constraint = _check_weight(lambda_constraint, "lambda_constraint")
    sparse, constraint = gate_loss_terms(source)
    return lambda_sparse * sparse + lambda_constraint * constraint


def temperature_at(
    epoch: int,
    *,
    initial: float = 2.0 / 3.0,
    factor: float = 0.8,
    every: int = 5,
    floor: float = 0.1,
) -> float:
    """Return the gate temperature ``max(floor, initial * factor ** (epoch // every))``.

    FlexHiNM anneals the temperature every 5 epochs. The other defaults are this library's choice:
    ``initial = 2/3`` is the temperature Louizos et al. use, and the factor 0.8 and the floor 0.1
    are not published values. Count ``epoch`` from the start of the stage in which the gates were created, so that
    fresh gates start at ``initial``.

    Args:
        epoch: epochs completed since the gates were created, ``>= 0``.
        initial: temperature at epoch 0, ``> 0``.
        factor: multiplier applied every ``every`` epochs, in ``(0, 1]``.
        every: epochs between two multiplications, ``>= 1``.
        floor: lowest temperature, in ``(0, initial]``.

    Raises:
        ValueError: if an argument is outside its range.

    Example:
        >>> [round(temperature_at(e), 4) for e in (0, 4, 5, 10, 100)]
        [0.6667, 0.6667, 0.5333, 0.4267, 0.1]
    """
    for name, value in (("epoch", epoch), ("every", every)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if epoch < 0:
        raise ValueError(f"epoch={epoch} is invalid; count epochs from 0")
    if every < 1:
        raise ValueError(f"every={every} is invalid; anneal at most once per epoch (every >= 1)")
    for name, value in (("initial", initial), ("factor", factor), ("floor", floor)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}={value!r} is invalid; it must be a positive finite number")
    if factor > 1:
        raise ValueError(f"factor={factor} is invalid; annealing lowers the temperature, so use "
                         f"a factor in (0, 1], for example 0.8")
    if floor > initial:
        raise ValueError(f"floor={floor} is above initial={initial}; choose floor <= initial")
    return max(float(floor), float(initial) * float(factor) ** (epoch // every))


def set_temperature(
    source: nn.Module | Mapping[str, NMGates] | Iterable[NMGates], temperature: float
) -> None:
    """Set the temperature of every gate in ``source`` (raises ``ValueError`` unless positive)."""
    for layer_gates in _collect(source):
        layer_gates.gate.temperature = temperature


def clamp_log_alpha_(
    source: nn.Module | Mapping[str, NMGates] | Iterable[NMGates],
    *,
    low: float = -4.6,
    high: float = 4.6,
) -> None:
    """Clamp every ``log_alpha`` of ``source`` to ``[low, high]`` in place; call it after each step.

    The default range is about ``[log 0.01, log 100]``. A deterministic gate is exactly 0 at
    ``log_alpha <= -log 11 = -2.4`` and exactly 1 at ``log_alpha >= 2.4``, so the clamp stops the
    logits a short way past saturation, and a gate can still reopen or close within a few steps.
    """
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low={low}, high={high} is invalid; need finite bounds with low < high")
    with torch.no_grad():
        for layer_gates in _collect(source):
            layer_gates.gate.log_alpha.clamp_(low, high)


def gate_parameters(
    source: nn.Module | Mapping[str, NMGates] | Iterable[NMGates],
) -> list[nn.Parameter]:
    """Return the ``log_alpha`` parameters of every gate in ``source``."""
    return [layer_gates.gate.log_alpha for layer_gates in _collect(source)]


def non_gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Return the parameters of ``model`` that are not gate logits (weights, biases, norms)."""
    gate_ids = {id(parameter) for parameter in gate_parameters(model)}
    return [parameter for parameter in model.parameters() if id(parameter) not in gate_ids]


def gate_param_group(
    source: nn.Module | Mapping[str, NMGates] | Iterable[NMGates],
    *,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
) -> dict:
    """Return an optimizer parameter group of all gate logits, without weight decay by default.

    Example:
        >>> model = nn.Linear(8, 4)
        >>> optimizer = torch.optim.Adam([
        ...     {"params": non_gate_parameters(model), "lr": 1e-3},
        ...     gate_param_group(model),          # empty until gates are applied
        ... ])
        >>> optimizer.param_groups[1]["lr"]
        0.01
    """
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value!r} is invalid; it must be a finite number >= 0")
    return {"params": gate_parameters(source), "lr": float(lr), "weight_decay": float(weight_decay),
            "name": "hard_concrete_gates"}
