"""Importance scores of weights, computed for named layers of a model.

* ``"magnitude"``: ``|w|``.
* ``"taylor"``: first-order Taylor, the mean over calibration batches of ``|w * g_b|`` with ``g_b`` the
  gradient of batch ``b``'s loss. The absolute value is taken per batch, not after summing the
  gradients: at a trained model the full-data gradient is close to zero, so ``|w * sum_b g_b|``
  mostly measures noise that cancels between batches, while the per-batch value keeps how strongly
  each batch depends on the weight (Molchanov et al. 2019 accumulate per batch too, squared).
* ``"fisher"``: OBS saliency ``w^2 / (2 [F^-1]_ii)`` with a diagonal empirical Fisher.
* ``"fisher-block"``: the same with a block-diagonal Fisher (see :mod:`flexhinm.importance.fisher`).

Fisher gradient samples are gradients of the loss of ``grad_batch_size`` examples (1 = per-example
gradients, the textbook empirical Fisher). Scores are computed in evaluation mode, so batch-norm
running statistics are neither used from the batch nor updated; each module's train/eval flag is
restored afterwards. Masked weights (see :func:`flexhinm.apply_masks`) are scored with their
masked value, and gradients flow to the underlying dense parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._checks import check_batch_dtype
from ..sparsify import split_parameter_name
from .fisher import FisherAccumulator

__all__ = ["SCORE_METHODS", "compute_scores"]

_logger = logging.getLogger(__name__)

SCORE_METHODS = {
    "magnitude": "|w|, needs no data",
    "taylor": "mean over batches of |w * grad|, needs loader",
    "fisher": "w^2 / (2 [F^-1]_ii) with a diagonal empirical Fisher, needs loader",
    "fisher-block": "w^2 / (2 [F^-1]_ii) with a block-diagonal empirical Fisher, needs loader",
}

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_method(method: object) -> str:
    if method not in SCORE_METHODS:
        choices = ", ".join(f"{name!r} ({text})" for name, text in SCORE_METHODS.items())
        raise ValueError(f"unknown score method {method!r}; choose one of {choices}")
    return method


def _resolve(model: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    # Return (value used for the score, leaf parameter that receives the gradient).
    module, attribute = split_parameter_name(model, name)
    value = getattr(module, attribute)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name!r} is not a tensor attribute of its module")
    if parametrize.is_parametrized(module, attribute):
        return value, module.parametrizations[attribute].original
    return value, value


def _split_batch(batch: object, chunk: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"each calibration batch must be an (inputs, targets) pair, got {type(batch).__name__}; "
            f"wrap the loader so that it yields (inputs, targets)"
        )
    inputs, targets = batch[0], batch[1]
    if chunk <= 0:
        yield inputs, targets
        return
    for start in range(0, inputs.shape[0], chunk):
        yield inputs[start : start + chunk], targets[start : start + chunk]


def _gradient_steps(
    model: nn.Module,
    leaves: Sequence[torch.Tensor],
    loader: Iterable,
    loss_fn: LossFn,
    num_batches: int | None,
    chunk: int,
) -> Iterable[tuple[torch.Tensor, ...]]:
    # Yield the gradients of the leaves for each chunk of each batch.
    device = leaves[0].device
    for index, batch in enumerate(loader):
        if num_batches is not None and index >= num_batches:
            break
        for inputs, targets in _split_batch(batch, chunk):
            if index == 0:
                check_batch_dtype(inputs, model)
            loss = loss_fn(model(inputs.to(device)), targets.to(device))
            yield torch.autograd.grad(loss, leaves, allow_unused=True)
        _logger.debug("scored calibration batch %d", index)


def compute_scores(
    model: nn.Module,
    names: Sequence[str],
    method: str = "magnitude",
    *,
    loader: Iterable | None = None,
    loss_fn: LossFn | None = None,
    num_batches: int | None = None,
    block_size: int = 32,
    damping: float = 0.01,
    grad_batch_size: int = 1,
) -> dict[str, torch.Tensor]:
    """Return importance scores for the named weights of ``model``.

    Args:
        model: any module; it is not modified (train/eval flags and ``requires_grad`` are
            restored, no ``.grad`` is written).
        names: parameter names as in ``model.named_parameters()`` (for a masked layer the name
            without ``parametrizations``, e.g. ``"layer1.0.conv1.weight"``).
        method: ``"magnitude"``, ``"taylor"``, ``"fisher"`` or ``"fisher-block"``.
        loader: iterable of ``(inputs, targets)`` batches; required for every method but magnitude.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``; defaults to cross-entropy.
        num_batches: use at most this many batches of ``loader`` (``None``: the whole loader).
        block_size: Fisher block size for ``"fisher-block"`` (weights per block along the flattened
            GEMM view).
        damping: relative dampening of the Fisher, in units of its mean diagonal.
        grad_batch_size: examples per Fisher gradient sample (1 = per-example gradients).

    Returns:
        Parameter name to non-negative scores of the weight's shape, on its device (float64 for
        float64 weights, else float32).

    Raises:
        ValueError: for an unknown method or name, a missing loader, or bad Fisher options.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
        >>> scores = compute_scores(model, ["0.weight"], "magnitude")
        >>> torch.equal(scores["0.weight"], model[0].weight.detach().abs())
        True
    """
    _check_method(method)
    names = list(names)
    if not names:
        raise ValueError("names is empty; pass parameter names such as ['layer1.0.conv1.weight']")
    resolved = {name: _resolve(model, name) for name in names}

    def finish(name: str, score: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if resolved[name][0].dtype == torch.float64 else torch.float32
        return score.detach().to(dtype)

    if method == "magnitude":
        return {name: finish(name, value.detach().abs()) for name, (value, _) in resolved.items()}

    if loader is None:
        raise ValueError(f"method={method!r} needs calibration data; pass loader=(inputs, targets) batches")
    if isinstance(grad_batch_size, bool) or not isinstance(grad_batch_size, int) or grad_batch_size < 1:
        raise ValueError(f"grad_batch_size={grad_batch_size!r} must be a positive int")
    if not damping > 0:
        raise ValueError(f"damping={damping} must be positive (relative dampening, e.g. 0.01)")
    loss_fn = loss_fn if loss_fn is not None else nn.functional.cross_entropy
    leaves = [leaf for _, leaf in resolved.values()]
    flags = {module: module.training for module in model.modules()}
    grad_flags = [leaf.requires_grad for leaf in leaves]

    try:
        model.eval()
        for leaf in leaves:
            leaf.requires_grad_(True)
        if method == "taylor":
            return _taylor(model, resolved, leaves, loader, loss_fn, num_batches, finish)
        size = block_size if method == "fisher-block" else 1
        return _fisher(model, resolved, leaves, loader, loss_fn, num_batches, size, damping,
                       grad_batch_size, finish)
    finally:
        for module, training in flags.items():
            module.train(training)
        for leaf, flag in zip(leaves, grad_flags):
            leaf.requires_grad_(flag)


def _taylor(model, resolved, leaves, loader, loss_fn, num_batches, finish) -> dict[str, torch.Tensor]:
    totals = [torch.zeros_like(value, dtype=torch.float64) for value, _ in resolved.values()]
    values = [value.detach() for value, _ in resolved.values()]
    steps = 0
    for gradients in _gradient_steps(model, leaves, loader, loss_fn, num_batches, chunk=0):
        for total, value, gradient in zip(totals, values, gradients):
            if gradient is not None:
                total += (value * gradient).abs()
        steps += 1
    if steps == 0:
        raise ValueError("loader gave no batches; pass at least one (inputs, targets) batch")
    return {name: finish(name, total / steps) for name, total in zip(resolved, totals)}


def _fisher(model, resolved, leaves, loader, loss_fn, num_batches, block_size, damping,
            grad_batch_size, finish) -> dict[str, torch.Tensor]:
    accumulators = [
        FisherAccumulator(tuple(value.shape), block_size, device=value.device)
        for value, _ in resolved.values()
    ]
    # Gradient samples are buffered and added in chunks, so that each einsum does real work.
    buffers: list[list[torch.Tensor]] = [[] for _ in leaves]

    def flush() -> None:
        for accumulator, buffer in zip(accumulators, buffers):
            if buffer:
                accumulator.add(torch.stack(buffer))
                buffer.clear()

    for gradients in _gradient_steps(model, leaves, loader, loss_fn, num_batches, grad_batch_size):
        for buffer, gradient, leaf in zip(buffers, gradients, leaves):
            buffer.append(torch.zeros_like(leaf) if gradient is None else gradient.detach())
        if len(buffers[0]) >= 64:
            flush()
    flush()

    if accumulators[0].samples == 0:
        raise ValueError("loader gave no batches; pass at least one (inputs, targets) batch")
    return {
        name: finish(name, accumulator.saliency(value, damping))
        for (name, (value, _)), accumulator in zip(resolved.items(), accumulators)
    }
