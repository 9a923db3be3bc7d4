"""Hard Concrete gates on the N:M region of a layer: the mask learning of FlexHiNM-GP.

Every weight of a *live* N:M group (``m`` consecutive columns of the N:M region of one tile, over
all ``tile_rows`` rows) gets a :class:`~flexhinm.HardConcrete` gate ``z``. :class:`NMGates` is a
``torch.nn.utils.parametrize`` parametrization that computes, on every access of the weight::

    weight * (1 on dense columns + the layout's N:M keep on groups without gates + z on live groups)

and 0 on pruned columns. Training adds :func:`gate_loss`, ``lambda_sparse * mean(z) +
lambda_constraint * mean(|sum of z over a group - n|)``, to the task loss and lowers the temperature
with :func:`temperature_at`. :func:`harden_gates` then keeps the ``n`` largest gates of every group,
writes them into the layout and puts a plain :class:`~flexhinm.sparsify.MaskedWeight` in place of
the gates.

A gated weight carries no fixed mask, so :func:`~flexhinm.masks_of`, :func:`~flexhinm.remove_masks`
and :func:`~flexhinm.bake_masks` skip it; :func:`gates_of` and :func:`remove_gates` handle it, and
after :func:`harden_gates` the mask functions see the hardened mask as usual.

The training helpers (:func:`gate_loss`, :func:`temperature_at`, :func:`clamp_log_alpha_`, the
parameter groups) live in :mod:`flexhinm.gate_training`, and this module re-exports them.
:class:`NMGates` itself lives in :mod:`flexhinm.gate_layer`, re-exported here too.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from .gate_layer import NMGates, entered_groups, nm_keep_from_scores
from .gate_training import (
    clamp_log_alpha_,
    gate_loss,
    gate_loss_terms,
    gate_param_group,
    gate_parameters,
    non_gate_parameters,
    set_temperature,
    temperature_at,
)
from .regions import RegionLayout
from .sparsify import MaskedWeight, apply_masks, remove_parametrization

__all__ = [
    "NMGates",
    "apply_nm_gates",
    "clamp_log_alpha_",
    "entered_groups",
    "gate_loss",
    "gate_loss_terms",
    "gate_param_group",
    "gate_parameters",
    "gates_of",
    "harden_gates",
    "nm_keep_from_scores",
    "non_gate_parameters",
    "remove_gates",
    "set_temperature",
    "temperature_at",
]



def _tensor_slot(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """Return ``(module, attribute)`` without reading the attribute (that would draw gates)."""
    module_name, _, attribute = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError as error:
        raise ValueError(f"parameter name {name!r} does not match any module of the model; use "
                         f"names from model.named_parameters()") from error
    if parametrize.is_parametrized(module, attribute):
        return module, attribute
    if not isinstance(getattr(module, attribute, None), torch.Tensor):
        raise ValueError(f"module {module_name!r} has no tensor {attribute!r} (from {name!r})")
    return module, attribute


def _only_parametrization(module: nn.Module, attribute: str, name: str) -> nn.Module | None:
    if not parametrize.is_parametrized(module, attribute):
        return None
    found = list(module.parametrizations[attribute])
    if len(found) != 1:
        raise ValueError(
            f"{name!r} carries {len(found)} parametrizations ({[type(p).__name__ for p in found]}); "
            f"gates work only on a weight with no other parametrization, or a single mask"
        )
    return found[0]


def apply_nm_gates(model: nn.Module, gates: Mapping[str, NMGates]) -> nn.Module:
    """Register gates on the named weights of ``model`` in place and return ``model``.

    A single :class:`~flexhinm.sparsify.MaskedWeight` or :class:`NMGates` already on a weight is
    removed first, with the dense values restored, because the gates' mask covers every weight.
    The weight keeps its ``Parameter`` object, so an optimizer built earlier still updates it. The
    gates move to the weight's device, so build the optimizer's gate group afterwards.

    Args:
        model: any module.
        gates: parameter name (as in ``model.named_parameters()``) to the gates of that weight.

    Raises:
        TypeError: if a value is not an :class:`NMGates`.
        ValueError: if a name is unknown, the layout's shape differs from the weight's, or the
            weight carries another parametrization.
    """
    for name, layer_gates in gates.items():
        if not isinstance(layer_gates, NMGates):
            raise TypeError(f"gates[{name!r}] must be NMGates, got {type(layer_gates).__name__}")
        module, attribute = _tensor_slot(model, name)
        existing = _only_parametrization(module, attribute, name)
        if existing is not None and not isinstance(existing, (MaskedWeight, NMGates)):
            raise ValueError(f"{name!r} carries a {type(existing).__name__} parametrization; "
                             f"remove it before adding gates")

        if existing is None:
            weight = getattr(module, attribute)
        else:
            weight = module.parametrizations[attribute].original
        if tuple(weight.shape) != layer_gates.layout.shape:
            raise ValueError(
                f"gates for {name!r} were built for shape {layer_gates.layout.shape} but the weight "
                f"has shape {tuple(weight.shape)}; build them from this layer's layout"
            )

        if existing is not None:
            remove_parametrization(module, attribute, leave_parametrized=False)
        layer_gates.to(device=weight.device)

        # unsafe=True skips torch's trial call of the parametrization, which would draw gates
        # from the global generator; the shape check above covers what that call checks.
        parametrize.register_parametrization(module, attribute, layer_gates, unsafe=True)
    return model


def gates_of(model: nn.Module) -> dict[str, NMGates]:
    """Return parameter name to :class:`NMGates` for every gated weight of ``model``."""
    found = {}
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for attribute in module.parametrizations:
            for item in module.parametrizations[attribute]:
                if isinstance(item, NMGates):
                    prefix = f"{module_name}." if module_name else ""
                    found[prefix + attribute] = item
    return found


def harden_gates(model: nn.Module) -> dict[str, RegionLayout]:
    """Replace every gated weight's gates by the hardened mask, in place.

    Each weight gets a :class:`~flexhinm.sparsify.MaskedWeight` with ``layout.mask()`` of its
    hardened layout (see :meth:`NMGates.harden`), so :func:`~flexhinm.masks_of` and
    :func:`~flexhinm.bake_masks` handle it from then on. The gates' ``log_alpha`` parameters leave
    the model, so drop them from the optimizer (a new stage builds a new gate group anyway).

    Returns:
        Parameter name to the hardened :class:`~flexhinm.RegionLayout` (valid N:M in every group).

    Raises:
        ValueError: if some ``log_alpha`` contains NaN or a gated weight carries a second
            parametrization; the model is then left unchanged.
    """
    # Harden every layer before changing any, so that an error (NaN logits, stacked
    # parametrizations) leaves the model as it was.
    hardened = {}
    for name, layer_gates in gates_of(model).items():
        module, attribute = _tensor_slot(model, name)
        _only_parametrization(module, attribute, name)
        hardened[name] = layer_gates.harden()

    for name, layout in hardened.items():
        module, attribute = _tensor_slot(model, name)
        remove_parametrization(module, attribute, leave_parametrized=False)
        apply_masks(model, {name: layout.mask()})
    return hardened


def remove_gates(model: nn.Module) -> nn.Module:
    """Remove every gate parametrization in place; the weights get back their dense values.

    To keep the learned mask, call :func:`harden_gates` (then :func:`~flexhinm.bake_masks`).
    """
    for name in gates_of(model):
        module, attribute = _tensor_slot(model, name)
        _only_parametrization(module, attribute, name)
        remove_parametrization(module, attribute, leave_parametrized=False)
    return model
