"""Create models by name: ``create_model("resnet20")``, ``list_models()``, ``@register_model``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torch import nn

__all__ = ["ModelSpec", "create_model", "get_model_spec", "list_models", "register_model"]

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, factory, expected input ``(C, H, W)`` and usual data set."""

    name: str
    factory: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    dataset: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, input_size: tuple[int, int, int] = (3, 32, 32), dataset: str = "cifar10"
) -> Callable[[Factory], Factory]:
    """Register a model factory under ``name`` (a decorator; the factory is returned unchanged).

    The factory must accept ``num_classes`` as a keyword argument and give it a default.

    Args:
        name: the name passed to :func:`create_model`.
        input_size: input shape ``(C, H, W)`` the model is built for.
        dataset: data set name the model is usually trained on (see ``flexhinm.data``).

    Raises:
        ValueError: if ``name`` is already registered by a different function. Registering a
            function of the same module and qualified name again replaces the entry, so a
            notebook cell can be run twice.

    Example:
        >>> @register_model("tiny-mlp-example")
        ... def tiny_mlp(num_classes: int = 10) -> nn.Module:
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
        >>> create_model("tiny-mlp-example", num_classes=5)[1].out_features
        5
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name={name!r} must be a non-empty string")

    def decorator(factory: Factory) -> Factory:
        existing = _REGISTRY[name].factory if name in _REGISTRY else None
        # Re-running the same definition (a notebook cell run twice) replaces the entry.
        redefined = (
            existing is not None
            and existing.__module__ == factory.__module__
            and existing.__qualname__ == factory.__qualname__
        )
        if existing is not None and not redefined:
            raise ValueError(
                f"model name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}; choose another name"
            )
        _REGISTRY[name] = ModelSpec(name, factory, tuple(input_size), dataset)
        return factory

    return decorator


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` registered under ``name``.

    Raises:
        ValueError: if ``name`` is not registered; the message lists the registered names.

    Example:
        >>> get_model_spec("resnet18-imagenette").input_size
        (3, 160, 160)
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model name={name!r}; registered models are {list_models()}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a freshly initialised model by name.

    Args:
        name: a name from :func:`list_models`, e.g. ``"resnet20"`` or ``"resnet18-cifar"``.
        num_classes: outputs of the classifier head; ``None`` keeps the model's default (10 for
            the built-in models).
        **kwargs: passed to the model's factory (e.g. ``zero_init_residual=True``).

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ValueError: for an unknown name or a ``num_classes`` below 1.

    Example:
        >>> model = create_model("resnet20")
        >>> sum(parameter.numel() for parameter in model.parameters())
        269722
    """
    spec = get_model_spec(name)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive int")
        kwargs["num_classes"] = num_classes
    return spec.factory(**kwargs)
