"""Model and optimizer state under plain parameter names, with the masks kept apart.

A weight masked by :func:`flexhinm.apply_masks` lives at
``<module>.parametrizations.weight.original`` and its mask at
``<module>.parametrizations.weight.0.mask``. Checkpoints store the dense original under the plain
name ``<module>.weight`` and the mask in a separate ``{name: bool tensor}`` dict. One file then
loads into a fresh, unmasked model (the masks are applied on the way in) and into a model that
already carries the masks. Optimizer states are stored with the plain name of every parameter,
so they load even when masking changed the parameter order of ``model.parameters()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..sparsify import MaskedWeight, apply_masks, masks_of
from .distributed import unwrap_model

__all__ = [
    "load_model_state",
    "load_optimizer_state",
    "model_state",
    "optimizer_parameter_names",
    "plain_parameter_name",
]

_PARAMETRIZED = re.compile(r"(^|\.)parametrizations\.([^.]+)\.original$")


def plain_parameter_name(name: str) -> str:
    """Map ``"conv.parametrizations.weight.original"`` to ``"conv.weight"``; keep other names.

    Example:
        >>> plain_parameter_name("layer1.0.conv1.parametrizations.weight.original")
        'layer1.0.conv1.weight'
        >>> plain_parameter_name("fc.bias")
        'fc.bias'
    """
    return _PARAMETRIZED.sub(r"\1\2", name)


def _split(name: str) -> tuple[str, str]:
    prefix, _, attribute = name.rpartition(".")
    return (f"{prefix}." if prefix else ""), attribute


def _masked_keys(model: nn.Module, name: str) -> tuple[str, str]:
    """Return the state-dict keys of the original weight and of the mask buffer for ``name``."""
    prefix, attribute = _split(name)
    module = model.get_submodule(prefix[:-1]) if prefix else model
    chain = module.parametrizations[attribute]
    if len(chain) != 1 or not isinstance(chain[0], MaskedWeight):
        kinds = [type(item).__name__ for item in chain]
        raise NotImplementedError(
            f"{name!r} carries the parametrizations {kinds}; checkpoints support a mask only as "
            f"the single parametrization of a weight. Bake or remove the others before saving"
        )
    base = f"{prefix}parametrizations.{attribute}"
    return f"{base}.original", f"{base}.0.mask"


def model_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Return ``(state, masks)``: the state dict under plain names and the masks by parameter name.

    Args:
        model: a module, possibly wrapped in DDP or ``torch.compile`` (the wrapper is removed, so
            no key starts with ``module.``).

    Returns:
        ``state`` maps names as in an unmasked model's ``state_dict()`` to detached tensors, with
        the dense (unmasked) value for every masked weight. ``masks`` maps those weight names to
        ``torch.bool`` masks of the weight's shape.
    """
    model = unwrap_model(model)
    masks = {name: mask.detach().clone() for name, mask in masks_of(model).items()}
    state = dict(model.state_dict())

    for name in masks:
        original_key, mask_key = _masked_keys(model, name)
        state[name] = state.pop(original_key)
        state.pop(mask_key)

    # Values from a module's get_extra_state() may be non-tensors; they are kept as they are.
    state = {
        key: value.detach() if isinstance(value, torch.Tensor) else value
        for key, value in state.items()
    }
    return state, masks


def load_model_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> nn.Module:
    """Load ``state`` and ``masks`` (as made by :func:`model_state`) into ``model`` in place.

    Masks missing from ``model`` are applied first; masks it already has are overwritten. Keys
    starting with ``module.`` (saved from a DDP model by other tools) are accepted too.

    Raises:
        ValueError: if ``model`` has masks that ``masks`` lacks, or a key is missing or unexpected
            (the message lists them).
    """
    model = unwrap_model(model)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
        masks = {key.removeprefix("module."): value for key, value in masks.items()}

    extra_masks = sorted(set(masks_of(model)) - set(masks))
    if extra_masks:
        raise ValueError(
            f"the model has masks on {extra_masks} but the checkpoint has none for them; load into "
            f"a fresh model or call flexhinm.remove_masks(model, bake=False) first"
        )
    apply_masks(model, dict(masks))

    translated = dict(state)
    for name, mask in masks.items():
        original_key, mask_key = _masked_keys(model, name)
        if name not in translated:
            raise ValueError(
                f"the checkpoint has a mask for {name!r} but no weight under that name"
            )
        translated[original_key] = translated.pop(name)
        translated[mask_key] = mask

    result = model.load_state_dict(translated, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"the checkpoint does not match the model: missing keys {result.missing_keys}, "
            f"unexpected keys {result.unexpected_keys}; build the same architecture before loading"
        )
    return model


def optimizer_parameter_names(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> list[list[str | None]]:
    """Return the plain name of each parameter per group (``None`` if it is not in ``model``)."""
    names = {
        id(param): plain_parameter_name(name)
        for name, param in unwrap_model(model).named_parameters()
    }
    return [[names.get(id(param)) for param in group["params"]] for group in optimizer.param_groups]


def _remap_optimizer_state(
    saved: dict[str, Any], saved_names: Sequence[Sequence[str | None]], target_names: list[list]
) -> dict[str, Any]:
    """Renumber a saved optimizer state so that each entry follows its parameter's name."""
    if len(saved_names) != len(target_names):
        raise ValueError(
            f"the checkpoint's optimizer has {len(saved_names)} parameter group(s) but this one "
            f"has {len(target_names)}; build the optimizer the same way (for example with "
            f"make_optimizer and the same extra groups)"
        )

    index_of_name = {}
    for group, names in zip(saved["param_groups"], saved_names):
        index_of_name.update(zip(names, group["params"]))

    state, groups, next_index = {}, [], 0
    for group, saved_group_names, names in zip(saved["param_groups"], saved_names, target_names):
        if sorted(map(str, saved_group_names)) != sorted(map(str, names)) or None in names:
            raise ValueError(
                f"optimizer group {group.get('name', len(groups))!r} contains different parameters "
                f"than in the checkpoint (saved {list(saved_group_names)}, now {names}); build "
                f"the optimizer over the same parameters"
            )
        indices = []
        for name in names:
            old_index = index_of_name[name]
            if old_index in saved["state"]:
                state[next_index] = saved["state"][old_index]
            indices.append(next_index)
            next_index += 1
        groups.append({**group, "params": indices})
    return {"state": state, "param_groups": groups}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    saved: dict[str, Any],
    saved_names: Sequence[Sequence[str | None]] | None,
    model: nn.Module | None,
) -> None:
    """Load ``saved`` into ``optimizer``, matching parameters by plain name when names are known.

    Without names (or model), the state is loaded by position, as ``Optimizer.load_state_dict``
    does.
    """
    if saved_names is not None and model is not None:
        target_names = optimizer_parameter_names(optimizer, model)
        if target_names != [list(names) for names in saved_names]:
            saved = _remap_optimizer_state(saved, saved_names, target_names)
    optimizer.load_state_dict(saved)

