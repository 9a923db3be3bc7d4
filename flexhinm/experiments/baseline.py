"""A dense baseline model trained once per machine and cached, so chapters and runs share it.

The cache key is every setting that changes the trained weights: model, data set, its source and
how many images were used, epochs, batch size, learning rate, weight decay and seed. It also holds
a format number, raised whenever the training code changes what it produces.
The cache folder is ``$FLEXHINM_CACHE/models`` or ``~/.cache/flexhinm/models``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import make_loaders
from ..data.loaders import BatchLoader
from ..models import create_model
from ..train import fit, load_checkpoint, save_checkpoint
from ..train.distributed import barrier, is_main_process
from .budgets import Budget

__all__ = ["Baseline", "cache_dir", "data_loaders", "pretrained_baseline"]

_logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Return the folder for cached models: ``$FLEXHINM_CACHE/models`` or the user cache."""
    base = os.environ.get("FLEXHINM_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "flexhinm"
    return root / "models"


@dataclass
class Baseline:
    """A trained dense model and where it came from.

    Attributes:
        model: the trained network (in eval mode).
        test_top1: top-1 accuracy on the evaluation images, in percent.
        record: JSON-ready facts: settings, data source and size, seconds, cache path.
        history: one dict per epoch from :func:`flexhinm.train.fit` (also when loaded from cache).
    """

    model: nn.Module
    test_top1: float
    record: dict
    history: list


def data_loaders(
    dataset: str,
    budget: Budget,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    distributed: bool = False,
) -> tuple[BatchLoader, BatchLoader]:
    """Return the seeded ``(train, eval)`` loaders for ``dataset`` sized by ``budget``."""
    return make_loaders(
        dataset,
        budget.batch_size,
        eval_batch_size=500,
        root=root,
        download=download,
        train_limit=budget.train_limit,
        eval_limit=budget.eval_limit,
        seed=seed,
        distributed=distributed,
    )


def _cache_key(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pretrained_baseline(
    model_name: str,
    dataset: str,
    budget: Budget,
    *,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = False,
    device: torch.device | str | None = None,
    use_cache: bool = True,
    progress: bool = True,
    loaders: tuple[BatchLoader, BatchLoader] | None = None,
) -> Baseline:
    """Train ``model_name`` densely on ``dataset`` for ``budget.dense_epochs``, or load it from cache.

    Args:
        model_name: a name from :func:`flexhinm.models.list_models`, e.g. ``"resnet20"``.
        dataset: ``"cifar10"`` or ``"imagenette"``.
        budget: epochs, batch size, learning rate and data limits.
        seed: seeds the initialisation, the data order and the augmentation.
        root: data root (see :func:`flexhinm.data.load_dataset`).
        download: fetch full CIFAR-10 with torchvision when it is not found.
        device: training device; default CUDA when available.
        use_cache: read and write the model cache (see :func:`cache_dir`).
        progress: show tqdm bars.
        loaders: ``(train, eval)`` loaders to use instead of building them from ``budget``.

    Returns:
        A :class:`Baseline`. ``record["cached"]`` is ``True`` when it was loaded from the cache.
    """
    train_loader, eval_loader = loaders or data_loaders(
        dataset, budget, root=root, download=download, seed=seed
    )
    train_data = train_loader.dataset
    settings = {
        "model": model_name,
        "dataset": dataset,
        "data_source": train_data.source,
        "train_images": len(train_data),
        "epochs": budget.dense_epochs,
        "batch_size": budget.batch_size,
        "lr": budget.lr,
        "weight_decay": budget.weight_decay,
        "seed": seed,
        "format": 1,
    }
    num_classes = len(train_data.classes)
    path = cache_dir() / f"{model_name}-{dataset}-{_cache_key(settings)}.pt"

    model = create_model(model_name, num_classes=num_classes)
    if use_cache and path.is_file():
        checkpoint = load_checkpoint(path, model)
        model.eval()
        record = {**checkpoint["extra"]["record"], "cached": True, "cache_path": str(path)}
        _logger.info("loaded the dense baseline from %s (trained earlier with the same settings)",
                     path)
        return Baseline(model, record["test_top1"], record, checkpoint["extra"].get("history", []))

    epochs = budget.dense_epochs
    _logger.info("training the dense %s on %d images for %d epoch%s", model_name, len(train_data),
                 epochs, "" if epochs == 1 else "s")
    start = time.perf_counter()
    history = fit(
        model,
        train_loader,
        eval_loader,
        epochs=budget.dense_epochs,
        lr=budget.lr,
        weight_decay=budget.weight_decay,
        seed=seed,
        device=device,
        progress=progress,
        channels_last=True,
    )
    model.eval()
    record = {
        **settings,
        "test_top1": history[-1]["test_top1"],
        "eval_images": len(eval_loader.dataset),
        "seconds": time.perf_counter() - start,
        "cached": False,
        "cache_path": str(path) if use_cache else None,
    }
    if use_cache and is_main_process():
        save_checkpoint(
            path, model, epoch=budget.dense_epochs, extra={"record": record, "history": history}
        )
    barrier()
    return Baseline(model, record["test_top1"], record, history)
