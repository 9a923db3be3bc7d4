"""Attach masks to a model with ``torch.nn.utils.parametrize`` and bake them in.

A masked layer keeps its dense weight as ``parametrizations.weight.original`` and computes
``weight = original * mask`` on every access, so training (any optimizer, any weight decay) can
never revive a pruned weight. :func:`bake_masks` writes the zeros into the plain weight and removes
the parametrization, which is what inference and export want.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "MaskedWeight",
    "apply_masks",
    "bake_masks",
    "masks_of",
    "remove_masks",
    "remove_parametrization",
    "revived_by",
    "warn_if_revived",
    "split_parameter_name",
]


class MaskedWeight(nn.Module):
    """Parametrization ``weight -> weight * mask`` with a bool ``mask`` buffer of the weight's shape.

    The mask is a buffer, so it is saved in the module's ``state_dict`` and moves with ``.to()``.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def split_parameter_name(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """Return ``(module, attribute)`` for a parameter name such as ``"layer1.0.conv1.weight"``."""
    module_name, _, attribute = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError as error:
        raise ValueError(
            f"parameter name {name!r} does not match any module of the model; use names from "
            f"model.named_parameters(), for example {next(iter(dict(model.named_parameters())), '')!r}"
        ) from error
    if not hasattr(module, attribute):
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (from {name!r})")
    return module, attribute


def _mask_parametrization(module: nn.Module, attribute: str) -> MaskedWeight | None:
    if not parametrize.is_parametrized(module, attribute):
        return None
    for item in module.parametrizations[attribute]:
        if isinstance(item, MaskedWeight):
            return item
    return None


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Mask the named parameters of ``model`` in place and return ``model``.

    Args:
        model: any module.
        masks: parameter name (as in ``model.named_parameters()``, for example
            ``"layer1.0.conv1.weight"``) to a bool mask of that parameter's shape. A parameter that
            already carries a mask gets the new one in place of the old.

    Raises:
        ValueError: if a name is unknown or a mask's shape differs from its parameter's.
    """
    for name, mask in masks.items():
        module, attribute = split_parameter_name(model, name)
        weight = getattr(module, attribute)
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(
                f"mask for {name!r} has shape {tuple(mask.shape)} but the parameter has shape "
                f"{tuple(weight.shape)}; build the mask from this parameter"
            )

        existing = _mask_parametrization(module, attribute)
        if existing is not None:
            existing.mask.copy_(mask.to(device=existing.mask.device, dtype=torch.bool))
            continue
        parametrize.register_parametrization(
            module, attribute, MaskedWeight(mask.to(device=weight.device))
        )
    return model


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return parameter name to bool mask for every masked parameter of ``model``."""
    found = {}
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for attribute in module.parametrizations:
            parametrization = _mask_parametrization(module, attribute)
            if parametrization is not None:
                prefix = f"{module_name}." if module_name else ""
                found[prefix + attribute] = parametrization.mask
    return found


def revived_by(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Return the names whose current mask prunes a weight that the new mask in ``masks`` keeps.

    Applying such masks brings those weights back with the values they had before pruning.
    """
    revived = []
    for name, old in masks_of(model).items():
        new = masks.get(name)
        if new is not None and bool((new.to(old.device) & ~old).any()):
            revived.append(name)
    return revived


def warn_if_revived(
    model: nn.Module, masks: Mapping[str, torch.Tensor], *, kept_by: str = "the new masks keep",
    stacklevel: int = 3,
) -> None:
    """Warn when applying ``masks`` to ``model`` would bring back weights its current masks prune.

    Args:
        model: the model the masks are about to be applied to.
        masks: parameter name to the new bool mask.
        kept_by: subject and verb that name the new masks in the warning, such as
            ``"the first stage keeps"``.
        stacklevel: passed to ``warnings.warn``; the default points at the caller's caller.
    """
    revived = revived_by(model, masks)
    if revived:
        warnings.warn(
            f"{len(revived)} layers already carry masks (first: {revived[0]!r}) that prune "
            f"weights {kept_by}; those weights come back with their old values. Call "
            f"flexhinm.bake_masks(model) first to prune on top of the old masks",
            UserWarning,
            stacklevel=stacklevel,
        )


def remove_masks(model: nn.Module, *, bake: bool = True) -> nn.Module:
    """Remove every mask parametrization from ``model`` in place and return ``model``.

    Args:
        bake: if ``True`` the plain weights keep the zeros (``original * mask``); if ``False`` they
            get back their dense values, which undoes the pruning.
    """
    for _, module in list(model.named_modules()):
        if not parametrize.is_parametrized(module):
            continue
        for attribute in list(module.parametrizations):
            if _mask_parametrization(module, attribute) is not None:
                remove_parametrization(module, attribute, leave_parametrized=bake)
    return model


def remove_parametrization(module: nn.Module, attribute: str, *, leave_parametrized: bool) -> None:
    """Remove one parametrization like torch's ``remove_parametrizations``, safely after a deepcopy.

    ``copy.deepcopy`` shares the class that torch's parametrize made for a module between the
    original and the copy. Removing a parametrization deletes a property from that class, which
    would break the other model, so the module first gets its own copy of the class.
    """
    cls = module.__class__
    namespace = {key: value for key, value in vars(cls).items() if key not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)
    parametrize.remove_parametrizations(module, attribute, leave_parametrized=leave_parametrized)


def bake_masks(model: nn.Module) -> nn.Module:
    """Write the zeros of every mask into its weight and drop the parametrizations (in place)."""
    return remove_masks(model, bake=True)
