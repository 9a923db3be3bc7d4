"""One training epoch and one evaluation pass over a loader of ``(inputs, targets)`` batches.

Both loops accept any iterable of ``(x, y)`` pairs: ``x`` a float tensor, ``y`` int64 class
indices. They keep their running sums on the device, so no step waits for the GPU, and under DDP
they add those sums over all processes. Accuracy is top-1 in **percent** (0 to 100)
everywhere in flexhinm; losses are means per sample.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .._checks import check_batch_dtype
from .distributed import all_reduce_sum, is_main_process, unwrap_model

__all__ = ["EpochMetrics", "as_list", "evaluate", "set_loader_epoch", "train_one_epoch"]

_logger = logging.getLogger(__name__)

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_POSTFIX_EVERY = 10  # batches between progress-bar updates; each update waits for the device


@dataclass(frozen=True)
class EpochMetrics:
    """Totals of one pass over a loader, summed over all processes under DDP.

    Attributes:
        loss: mean of ``loss_fn`` per sample.
        top1: top-1 accuracy in percent (0 to 100).
        samples: number of samples seen (all processes).
        extra_loss: mean per batch of the ``extra_loss`` term, 0.0 when there is none.
    """

    loss: float
    top1: float
    samples: int
    extra_loss: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _unpack(batch: Any, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise TypeError(
            f"batch {index} is a {type(batch).__name__}; the loader must yield (inputs, targets) "
            f"pairs of tensors"
        )
    return batch[0], batch[1]


def _to_device(
    inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = inputs.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    if channels_last and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets


class _Totals:
    """Running sums on the device: loss x samples, correct predictions, extra loss, batches."""

    def __init__(self, device: torch.device) -> None:
        # MPS has no float64; elsewhere float64 keeps sums of many batches exact enough.
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.values = torch.zeros(4, dtype=dtype, device=device)
        self.samples = 0

    def add(
        self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, extra: torch.Tensor
    ) -> None:
        count = targets.shape[0]
        dtype = self.values.dtype
        correct = (logits.argmax(dim=1) == targets).sum().to(dtype)
        loss_sum = loss.detach().to(dtype) * count
        batch = torch.ones((), dtype=dtype, device=self.values.device)
        self.values += torch.stack([loss_sum, correct, extra.detach().to(dtype), batch])
        self.samples += count

    def running(self) -> dict[str, str]:
        loss_sum, correct, _, _ = self.values.tolist()
        samples = max(self.samples, 1)
        return {"loss": f"{loss_sum / samples:.3f}", "top1": f"{100.0 * correct / samples:.1f}"}

    def reduce(self) -> EpochMetrics:
        local = torch.cat([self.values, self.values.new_tensor([float(self.samples)])])
        loss_sum, correct, extra_sum, batches, samples = all_reduce_sum(local).tolist()
        if samples == 0:
            raise ValueError("the loader yielded no batch; check the data set and batch size")
        return EpochMetrics(
            loss=loss_sum / samples,
            top1=100.0 * correct / samples,
            samples=int(samples),
            extra_loss=extra_sum / max(batches, 1.0),
        )


def as_list(value: Any) -> list:
    """Return ``value`` as a list: ``[]`` for ``None``, the items of a list or tuple, else ``[value]``."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def set_loader_epoch(loader: Iterable, epoch: int) -> None:
    """Tell the loader (or its sampler) which epoch comes next, so each epoch has its own order."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
        return
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def _progress_bar(loader: Iterable, description: str, progress: bool) -> tqdm:
    show = progress and is_main_process()
    return tqdm(loader, desc=description, leave=False, dynamic_ncols=True, disable=not show)


def _all_parameters(optimizers: Sequence[torch.optim.Optimizer]) -> list[torch.Tensor]:
    parameters = []
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            parameters.extend(group["params"])
    return parameters


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    scheduler: Any = None,
    device: torch.device | str | None = None,
    loss_fn: LossFunction = F.cross_entropy,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    grad_clip: float | None = None,
    channels_last: bool = False,
    progress: bool = True,
    description: str = "train",
) -> EpochMetrics:
    """Train ``model`` for one pass over ``loader``, stepping optimizers and schedulers per batch.

    Each batch: forward, ``loss = loss_fn(logits, y) + extra_loss(model)``, backward, optional
    gradient-norm clipping over all optimized parameters, ``step()`` of every optimizer, then
    ``step()`` of every scheduler.

    Args:
        model: a module (or DDP wrapper) already on ``device``; it is put in train mode.
        loader: iterable of ``(x, y)``: ``x`` float ``(B, ...)``, ``y`` int64 ``(B,)`` classes.
        optimizer: one optimizer, or several (for example SGD for weights and Adam for gates).
        scheduler: ``None``, a scheduler or a sequence of them, stepped once per batch.
        device: where batches go; default: the device of the model's first parameter.
        loss_fn: ``(logits (B, C), targets (B,)) -> scalar`` mean loss; default cross-entropy.
        extra_loss: called with the unwrapped model every batch; its scalar result is added to
            the loss (for example a gate penalty). Its mean is reported as ``extra_loss``.
        grad_clip: maximum total gradient L2 norm, or ``None`` for no clipping.
        channels_last: convert 4-D inputs to channels-last memory format (use with a
            channels-last model on GPU).
        progress: show a tqdm bar (rank 0 only) with running loss and top-1.
        description: label of the progress bar.

    Returns:
        :class:`EpochMetrics`; ``loss`` excludes the extra term.

    Raises:
        TypeError: if a batch is not an ``(x, y)`` pair or ``extra_loss`` returns no scalar tensor.
        ValueError: if ``grad_clip`` is not positive or the loader is empty.
        FloatingPointError: if the mean loss of the epoch is NaN or infinite.
    """
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip={grad_clip} is invalid; pass a positive norm or None")
    optimizers = as_list(optimizer)
    schedulers = as_list(scheduler)
    device = _resolve_device(model, device)
    plain_model = unwrap_model(model)
    parameters = _all_parameters(optimizers) if grad_clip is not None else []

    model.train()
    totals = _Totals(device)
    bar = _progress_bar(loader, description, progress)
    for index, batch in enumerate(bar):
        inputs, targets = _to_device(*_unpack(batch, index), device, channels_last)
        if index == 0:
            check_batch_dtype(inputs, model)

        logits = model(inputs)
        loss = loss_fn(logits, targets)
        extra = torch.zeros((), device=device)
        if extra_loss is not None:
            extra = extra_loss(plain_model)
            if not isinstance(extra, torch.Tensor) or extra.dim() != 0:
                raise TypeError(f"extra_loss must return a scalar tensor, got {extra!r}")

        for item in optimizers:
            item.zero_grad(set_to_none=True)
        (loss + extra).backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(parameters, grad_clip)
        for item in optimizers:
            item.step()
        for item in schedulers:
            item.step()

        totals.add(loss, logits, targets, extra)
        if not bar.disable and index % _POSTFIX_EVERY == 0:
            bar.set_postfix(totals.running(), refresh=False)
    bar.close()

    metrics = totals.reduce()
    if not math.isfinite(metrics.loss):
        raise FloatingPointError(
            f"the mean training loss of this epoch is {metrics.loss}; lower the learning rate, "
            f"set grad_clip, or check the inputs for NaN"
        )
    return metrics


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device | str | None = None,
    loss_fn: LossFunction = F.cross_entropy,
    channels_last: bool = False,
    progress: bool = False,
    description: str = "eval",
) -> EpochMetrics:
    """Compute mean loss and top-1 accuracy (percent) of ``model`` on ``loader``.

    Runs in eval mode under ``torch.no_grad()`` and puts the model back in the mode it was in.
    Under DDP each process evaluates its own batches and the totals are summed over processes.
    A sampler that pads the shards to equal length makes the padded samples count too.

    Args:
        model: a module (or DDP wrapper) on ``device``.
        loader: iterable of ``(x, y)`` batches as in :func:`train_one_epoch`.
        device: default: the device of the model's first parameter.
        loss_fn: ``(logits, targets) -> scalar`` mean loss.
        channels_last: convert 4-D inputs to channels-last.
        progress: show a tqdm bar (rank 0 only).
        description: label of the progress bar.

    Returns:
        :class:`EpochMetrics` with ``extra_loss`` 0.0.

    Raises:
        TypeError: if a batch is not an ``(x, y)`` pair.
        ValueError: if the loader is empty.

    Example:
        >>> model = nn.Linear(2, 2, bias=False)
        >>> _ = model.weight.data.copy_(torch.eye(2))
        >>> batches = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))]
        >>> evaluate(model, batches).top1
        50.0
    """
    device = _resolve_device(model, device)
    was_training = model.training
    model.eval()

    totals = _Totals(device)
    bar = _progress_bar(loader, description, progress)
    with torch.no_grad():
        for index, batch in enumerate(bar):
            inputs, targets = _to_device(*_unpack(batch, index), device, channels_last)
            if index == 0:
                check_batch_dtype(inputs, model)
            logits = model(inputs)
            loss = loss_fn(logits, targets)
            totals.add(loss, logits, targets, torch.zeros((), device=device))
    bar.close()

    model.train(was_training)
    return totals.reduce()
