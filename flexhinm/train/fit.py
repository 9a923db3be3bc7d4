"""The full training run: SGD with a per-iteration cosine schedule, evaluation, checkpoints, resume.

:func:`fit` works the same in a notebook, in a script and under ``torchrun``. When torchrun's
environment variables are present, it joins the process group and wraps the model in DDP. Only
rank 0 then writes checkpoints, logs and draws progress bars.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint
from .distributed import (
    all_gather_objects,
    barrier,
    default_device,
    init_distributed,
    is_main_process,
    rank,
    world_size,
    wrap_ddp,
)
from .loops import LossFunction, evaluate, set_loader_epoch, train_one_epoch
from .optim import make_optimizer, make_scheduler
from .seed import get_rng_state, seed_everything

__all__ = ["fit"]

_logger = logging.getLogger(__name__)


def _check_epochs(epochs: int, warmup_epochs: float) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise TypeError(f"epochs must be an int, got {epochs!r}")
    if epochs <= 0:
        raise ValueError(f"epochs={epochs} is invalid; train for at least 1 epoch")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)):
        raise TypeError(f"warmup_epochs must be a number, got {warmup_epochs!r}")
    if not 0 <= warmup_epochs < epochs:
        raise ValueError(
            f"warmup_epochs={warmup_epochs} must lie in [0, epochs={epochs}); shorten the warm-up"
        )


def _steps_per_epoch(loader: Iterable) -> int:
    try:
        steps = len(loader)  # type: ignore[arg-type]
    except TypeError as error:
        raise TypeError(
            f"train_loader ({type(loader).__name__}) has no len(); the cosine schedule needs the "
            f"number of batches per epoch, so pass a DataLoader or a list of batches"
        ) from error
    if steps == 0:
        raise ValueError("train_loader has no batches; check the data set and batch size")
    return steps


def _warn_if_not_sharded(loader: Iterable) -> None:
    if world_size() > 1 and isinstance(loader, DataLoader):
        if not isinstance(loader.sampler, DistributedSampler):
            warnings.warn(
                f"train_loader uses a {type(loader.sampler).__name__}, so each of the "
                f"{world_size()} processes trains on the whole data set; use a DistributedSampler",
                UserWarning,
                stacklevel=3,
            )


def _check_resumable(checkpoint: Mapping[str, Any], scheduler: Any, path: Any) -> None:
    """Raise unless the checkpoint's cosine schedule has the same length and warm-up as this run."""
    if len(checkpoint["schedulers"]) != 1 or len(checkpoint["optimizers"]) == 0:
        raise ValueError(
            f"checkpoint {str(path)!r} has {len(checkpoint['schedulers'])} scheduler state(s) and "
            f"{len(checkpoint['optimizers'])} optimizer state(s); resume_from needs a checkpoint "
            f"written by fit(checkpoint_path=...)"
        )
    saved = checkpoint["schedulers"][0]["lr_lambdas"][0]
    current = vars(scheduler.lr_lambdas[0])
    if saved != current:
        raise ValueError(
            f"checkpoint {str(path)!r} was trained with the schedule {saved} but this run has "
            f"{current}; resume with the same epochs, warmup_epochs and train_loader length"
        )


def fit(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable | None = None,
    *,
    epochs: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    warmup_epochs: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    checkpoint_path: str | PathLike | None = None,
    resume_from: str | PathLike | None = None,
    progress: bool = True,
    extra_param_groups: Sequence[Mapping[str, Any]] | None = None,
    extra_optimizers: Sequence[torch.optim.Optimizer] = (),
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    loss_fn: LossFunction = F.cross_entropy,
    grad_clip: float | None = None,
    channels_last: bool | None = None,
    deterministic: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place with SGD and a cosine learning rate, evaluating after every epoch.

    The learning rate follows :func:`~flexhinm.train.cosine_lr_factor` per iteration: an
    optional linear warm-up, then a cosine decay to 0 at the last step. Biases and
    normalisation parameters get no weight decay (see :func:`~flexhinm.train.make_optimizer`).
    Masked models (``flexhinm.apply_masks``) train as they are; pruned weights stay zero.

    Args:
        model: the network; it is moved to ``device`` and trained in place.
        train_loader: iterable of ``(x, y)`` batches with ``len()``; ``set_epoch(epoch)`` is called
            on it (or on its sampler) before every epoch when it exists. Under DDP it must shard
            the data (for example with a ``DistributedSampler``).
        test_loader: evaluated after every epoch, or ``None``.
        epochs: total epochs of the run (a resumed run counts the epochs already done).
        lr: peak learning rate (SGD, for batch-mean losses).
        momentum: SGD momentum.
        weight_decay: L2 coefficient on weights with 2 or more dimensions.
        nesterov: Nesterov momentum.
        warmup_epochs: epochs (may be fractional) of linear warm-up before the cosine decay.
        seed: seeds ``random``, NumPy and torch; process ``r`` of a DDP run uses ``seed + r``.
        device: default ``cuda:<local rank>`` when CUDA is available, else the CPU.
        checkpoint_path: if set, rank 0 writes a checkpoint here after every epoch.
        resume_from: a checkpoint written by an earlier ``fit`` with the same settings. Training
            continues after its last epoch. On the same device, thread count and loader, it
            repeats the uninterrupted run exactly.
        progress: show tqdm bars (rank 0 only).
        extra_param_groups: more SGD groups (see :func:`~flexhinm.train.make_optimizer`).
        extra_optimizers: optimizers that own other parameters (for example Adam for gate
            logits). They are stepped every batch at their own constant learning rate and are
            saved in checkpoints; their parameters are kept out of SGD.
        extra_loss: ``extra_loss(model) -> scalar tensor`` added to the loss every batch.
        loss_fn: ``(logits, targets) -> scalar``; default cross-entropy.
        grad_clip: maximum gradient L2 norm, or ``None``.
        channels_last: channels-last model and inputs; default ``True`` on CUDA only.
        deterministic: request deterministic kernels (see
            :func:`~flexhinm.train.seed_everything`).
        on_epoch_end: called with each epoch's history record, on every process.

    Returns:
        The history: one dict per epoch with ``epoch`` (1-based), ``train_loss``, ``train_top1``,
        ``test_loss``, ``test_top1`` (``None`` without a test loader), ``lr`` (the first group's
        learning rate at the start of the epoch), ``seconds`` and ``extra_loss``. Top-1 values are
        percentages. A resumed run returns the earlier epochs too.

    Raises:
        TypeError: if ``epochs`` is not an int or ``train_loader`` has no length.
        ValueError: for ``epochs <= 0``, ``lr <= 0``, a warm-up of ``epochs`` or more, an empty
            loader, or a ``resume_from`` checkpoint of a different schedule.
        FileNotFoundError: if ``resume_from`` does not exist.
    """
    _check_epochs(epochs, warmup_epochs)
    steps_per_epoch = _steps_per_epoch(train_loader)
    init_distributed()

    device = torch.device(device) if device is not None else default_device()
    if channels_last is None:
        channels_last = device.type == "cuda"
    seed_everything(seed + rank(), deterministic=deterministic)

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    extra_optimizers = list(extra_optimizers)
    owned_elsewhere = []
    for item in extra_optimizers:
        for group in item.param_groups:
            owned_elsewhere.extend(group["params"])
    optimizer = make_optimizer(
        model,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
        extra_param_groups=extra_param_groups,
        exclude=owned_elsewhere,
    )
    optimizers = [optimizer, *extra_optimizers]
    scheduler = make_scheduler(
        optimizer,
        total_steps=epochs * steps_per_epoch,
        warmup_steps=round(warmup_epochs * steps_per_epoch),
    )

    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume_from is not None:
        checkpoint = read_checkpoint(resume_from)
        _check_resumable(checkpoint, scheduler, resume_from)
        apply_checkpoint(checkpoint, model, optimizers, [scheduler], restore_rng=True)
        start_epoch = int(checkpoint["epoch"] or 0)
        history = list(checkpoint["extra"].get("history", []))
        _logger.info("resumed from %s after epoch %d of %d", resume_from, start_epoch, epochs)

    trained_model = wrap_ddp(model, device)
    _warn_if_not_sharded(train_loader)
    settings = {
        "epochs": epochs,
        "lr": float(lr),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "nesterov": bool(nesterov),
        "warmup_epochs": float(warmup_epochs),
        "seed": seed,
        "world_size": world_size(),
    }

    for epoch in range(start_epoch, epochs):
        set_loader_epoch(train_loader, epoch)
        started = time.perf_counter()
        epoch_lr = float(optimizer.param_groups[0]["lr"])

        train_metrics = train_one_epoch(
            trained_model,
            train_loader,
            optimizers,
            scheduler=scheduler,
            device=device,
            loss_fn=loss_fn,
            extra_loss=extra_loss,
            grad_clip=grad_clip,
            channels_last=channels_last,
            progress=progress,
            description=f"epoch {epoch + 1}/{epochs}",
        )
        test_loss = test_top1 = None
        if test_loader is not None:
            test_metrics = evaluate(
                trained_model,
                test_loader,
                device=device,
                loss_fn=loss_fn,
                channels_last=channels_last,
                progress=progress,
                description="test",
            )
            test_loss, test_top1 = test_metrics.loss, test_metrics.top1

        record = {
            "epoch": epoch + 1,
            "train_loss": train_metrics.loss,
            "train_top1": train_metrics.top1,
            "test_loss": test_loss,
            "test_top1": test_top1,
            "lr": epoch_lr,
            "seconds": time.perf_counter() - started,
            "extra_loss": train_metrics.extra_loss,
        }
        history.append(record)
        if is_main_process():
            _logger.info(
                "epoch %d/%d: train loss %.4f, top-1 %.2f %%; test loss %s, top-1 %s; "
                "lr %.4g; %.1f s",
                epoch + 1,
                epochs,
                train_metrics.loss,
                train_metrics.top1,
                "n/a" if test_loss is None else f"{test_loss:.4f}",
                "n/a" if test_top1 is None else f"{test_top1:.2f} %",
                epoch_lr,
                record["seconds"],
            )

        if checkpoint_path is not None:
            # Every process contributes its random state, so a resumed DDP run repeats exactly.
            rng_states = all_gather_objects(get_rng_state())
            if is_main_process():
                save_checkpoint(
                    checkpoint_path,
                    model,
                    optimizer=optimizers,
                    scheduler=[scheduler],
                    epoch=epoch + 1,
                    extra={"history": history, "settings": settings},
                    rng_states=rng_states,
                )
                _logger.info("saved checkpoint %s (epoch %d)", checkpoint_path, epoch + 1)
            barrier()

        if on_epoch_end is not None:
            on_epoch_end(record)

    if start_epoch >= epochs and is_main_process():
        _logger.info(
            "checkpoint %s already covers all %d epochs; nothing to train", resume_from, epochs
        )
    return history
