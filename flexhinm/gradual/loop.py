"""The training steps of one gradual pruning stage: weights by SGD, gate logits by Adam.

:class:`BatchStream` turns a loader into an endless stream of batches that starts at any step of
the run. It calls ``set_epoch(epoch)`` on the loader (or its sampler) before each pass and skips
the batches of the current epoch that were already used. A run resumed at step ``s`` thus gets the
same batches as an uninterrupted run, for loaders whose order is fixed by the epoch number
(:class:`flexhinm.data.BatchLoader`, a ``DistributedSampler``, a list).

:func:`train_stage` runs the steps of one stage. Each step does the forward pass with sampled
gates, adds ``lambda_sparse * mean(z) + lambda_constraint * mean(|sum z - n|)`` to the task loss,
steps both optimizers and the scheduler, and clamps ``log_alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..gates import NMGates, clamp_log_alpha_, gate_loss_terms, set_temperature
from ..train.loops import set_loader_epoch
from .config import GradualConfig
from .records import GateTracker
from .stages import stage_temperature

__all__ = ["NAN_CHECK_STEPS", "BatchStream", "train_stage"]

# Steps between two checks of the running loss for NaN or infinity.
NAN_CHECK_STEPS = 50

_RESTART = ("The model now carries this stage's gates and diverged weights, so start again from a "
            "fresh copy of the dense model, or resume from checkpoint_dir")


class BatchStream:
    """Batches of ``loader`` epoch after epoch, starting after ``start_step`` batches of the run.

    Args:
        loader: iterable of ``(x, y)`` batches with ``len()``.
        start_step: batches already used by earlier stages.

    Raises:
        TypeError: if the loader has no ``len()``.
        ValueError: if the loader is empty, or yields fewer batches than its ``len()``.
    """

    def __init__(self, loader: Iterable, start_step: int = 0) -> None:
        try:
            self.steps_per_epoch = len(loader)  # type: ignore[arg-type]
        except TypeError as error:
            raise TypeError(
                f"train_loader ({type(loader).__name__}) has no len(); stage lengths are counted "
                f"in batches, so pass a DataLoader or a list of batches"
            ) from error
        if self.steps_per_epoch == 0:
            raise ValueError("train_loader has no batches; check the data set and batch size")
        self.loader = loader
        self.step = start_step
        self._epoch = -1
        self._iterator: Iterator | None = None

    def _open(self) -> None:
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        set_loader_epoch(self.loader, epoch)
        iterator = iter(self.loader)
        for _ in range(offset):
            next(iterator)
        self._epoch, self._iterator = epoch, iterator

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Any:
        if self._iterator is None or self.step // self.steps_per_epoch != self._epoch:
            self._open()
        try:
            batch = next(self._iterator)
        except StopIteration:
            raise ValueError(
                f"train_loader stopped before its len() of {self.steps_per_epoch} batches; use a "
                f"loader whose len() is the number of batches it yields"
            ) from None
        self.step += 1
        return batch


def _unpack(batch: Any, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise TypeError(f"each batch must be an (inputs, targets) pair, got {type(batch).__name__}")
    inputs = batch[0].to(device, non_blocking=True)
    targets = batch[1].to(device, non_blocking=True)
    if channels_last and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets


def train_stage(
    model: nn.Module,
    stream: BatchStream,
    *,
    steps: int,
    stage: int,
    optimizer: torch.optim.Optimizer,
    gate_optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    gates: Mapping[str, NMGates],
    config: GradualConfig,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    channels_last: bool,
    tracker: GateTracker,
    progress: bool,
) -> dict[str, float | None]:
    """Train ``model`` for ``steps`` batches of ``stream``; return the stage's means.

    Returns:
        ``train_loss``, ``train_top1`` (percent), ``gate_mean``, ``gate_constraint``,
        ``gate_loss`` (means over the steps), ``lr`` (at the first step) and
        ``temperature_start`` / ``temperature_end`` (``None`` without gates).

    Raises:
        FloatingPointError: if the task loss turns NaN or infinite; it is checked every
            ``NAN_CHECK_STEPS`` steps and at the end of the stage.
    """
    optimizers = [optimizer] + ([gate_optimizer] if gate_optimizer is not None else [])
    first_lr = float(optimizer.param_groups[0]["lr"])
    temperatures: list[float] = []
    dtype = torch.float32 if device.type == "mps" else torch.float64
    sums = torch.zeros(5, dtype=dtype, device=device)
    samples = 0

    model.train()
    bar = tqdm(range(steps), desc=f"stage {stage + 1}", leave=False, dynamic_ncols=True,
               disable=not progress)
    for step in bar:
        if gates:
            temperature = stage_temperature(
                step, steps, initial=config.temperature, factor=config.temperature_factor,
                updates=config.temperature_updates, floor=config.temperature_floor,
            )
            if not temperatures or temperature != temperatures[-1]:
                set_temperature(gates, temperature)
            temperatures.append(temperature)
            if tracker.due(stream.step):
                tracker.record(gates, step=stream.step, stage=stage, temperature=temperature)

        inputs, targets = _unpack(next(stream), device, channels_last)
        logits = model(inputs)
        loss = loss_fn(logits, targets)
        mean_gate = constraint = extra = torch.zeros((), device=device)
        if gates:
            mean_gate, constraint = gate_loss_terms(gates)
            extra = config.lambda_sparse * mean_gate + config.lambda_constraint * constraint

        for item in optimizers:
            item.zero_grad(set_to_none=True)
        (loss + extra).backward()
        for item in optimizers:
            item.step()
        scheduler.step()
        if gates:
            clamp_log_alpha_(gates, low=-config.log_alpha_limit, high=config.log_alpha_limit)

        count = targets.shape[0]
        correct = (logits.detach().argmax(dim=1) == targets).sum()
        terms = [loss.detach() * count, correct, mean_gate.detach(), constraint.detach(), extra.detach()]
        sums += torch.stack([term.to(dtype) for term in terms])
        samples += count
        # One host sync every NAN_CHECK_STEPS steps stops a diverged stage early.
        if (step + 1) % NAN_CHECK_STEPS == 0 and not bool(torch.isfinite(sums[0])):
            bar.close()
            raise FloatingPointError(
                f"the training loss of stage {stage + 1} became {float(sums[0])} by step "
                f"{step + 1} of {steps}; lower lr or gate_lr, or check the inputs for NaN. {_RESTART}"
            )
    bar.close()

    loss_sum, correct, gate_sum, constraint_sum, extra_sum = sums.tolist()
    mean_loss = loss_sum / max(samples, 1)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(
            f"the mean training loss of stage {stage + 1} is {mean_loss}; lower lr or gate_lr, "
            f"or check the inputs for NaN. {_RESTART}"
        )
    return {
        "train_loss": mean_loss,
        "train_top1": 100.0 * correct / max(samples, 1),
        "gate_mean": gate_sum / steps,
        "gate_constraint": constraint_sum / steps,
        "gate_loss": extra_sum / steps,
        "lr": first_lr,
        "temperature_start": temperatures[0] if temperatures else None,
        "temperature_end": temperatures[-1] if temperatures else None,
    }
