"""Seeded, shardable batch loaders over in-memory image data sets.

:class:`BatchLoader` builds each batch with one index into the uint8 image tensor, augments it with
:class:`~flexhinm.data.RandomCropFlip` and normalises it, all as whole-batch tensor operations. It
yields ``(x, y)``: ``x`` float32 ``(B, C, H, W)``, normalised with the data set's mean and std, and
``y`` int64 ``(B,)``.

Shuffling and augmentation are fixed by ``seed`` and the epoch number. Each pass over the loader
uses the current epoch and then advances it by one, so a plain ``for epoch in range(...)`` loop
gets a new order every epoch. ``set_epoch(e)`` sets the epoch of the next pass, so a training
loop that calls it before each epoch, as is usual with ``torch.utils.data.DistributedSampler``,
also works. With several replicas (DistributedDataParallel), every rank draws the same permutation
and takes its own shard of it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .datasets import load_dataset
from .image_dataset import ImageDataset
from .transforms import RandomCropFlip, default_padding, normalize

__all__ = ["BatchLoader", "make_loader", "make_loaders"]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# Streams of the seed sequence, so that shuffling and augmentation draw independent numbers.
_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def _make_generator(seed: int, *stream: int) -> torch.Generator:
    """Return a CPU generator seeded from ``(seed, *stream)`` with numpy's SeedSequence mixing."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
    return value


class BatchLoader:
    """Iterable of normalised ``(x, y)`` batches; see the module docstring and :func:`make_loader`.

    Sharding: for training (``train=True``), the shuffled indices are padded by repeating the
    first ones until they split evenly, so every rank gets the same number of batches, as
    DistributedDataParallel requires (the same rule as ``DistributedSampler``). For evaluation,
    rank ``r`` takes every ``num_replicas``-th index starting at ``r``, so the shards are disjoint
    and cover each image exactly once, but their sizes may differ by one.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        train: bool,
        shuffle: bool,
        seed: int,
        augment: Augment | None,
        drop_last: bool,
        num_replicas: int,
        rank: int,
        device: torch.device | None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.device = torch.device(device) if device is not None else None
        self.epoch = 0

        # With a device, the whole data set is copied there once and batches are built there.
        self._images = dataset.images if device is None else dataset.images.to(device)
        self._labels = dataset.labels if device is None else dataset.labels.to(device)

        if len(self) == 0:
            raise ValueError(
                f"batch_size={batch_size} with drop_last=True leaves no batch: this rank has only "
                f"{self.num_samples} images; lower batch_size or pass drop_last=False"
            )

    @property
    def num_samples(self) -> int:
        """Number of images this rank visits per epoch (before ``drop_last``)."""
        total = len(self.dataset)
        if self.train:
            return math.ceil(total / self.num_replicas)
        return len(range(self.rank, total, self.num_replicas))

    def __len__(self) -> int:
        """Number of batches per epoch on this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used by the next pass; it fixes the shuffle order and the augmentation."""
        self.epoch = _check_count(epoch, "epoch", 0)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """Return the int64 data set indices this rank visits in ``epoch`` (default: the next).

        The result is the same on every call with the same seed, epoch, rank and replica count.
        """
        epoch = self.epoch if epoch is None else _check_count(epoch, "epoch", 0)
        total = len(self.dataset)
        if self.shuffle:
            generator = _make_generator(self.seed, _SHUFFLE_STREAM, epoch)
            order = torch.randperm(total, generator=generator)
        else:
            order = torch.arange(total)

        if self.train and self.num_replicas > 1:
            padded_total = self.num_samples * self.num_replicas
            repeats = math.ceil(padded_total / total)
            order = order.repeat(repeats)[:padded_total]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.indices(epoch).to(self._images.device)
        generator = _make_generator(self.seed, _AUGMENT_STREAM, epoch, self.rank)
        stop = len(self) * self.batch_size

        for start in range(0, min(stop, len(indices)), self.batch_size):
            batch_indices = indices[start : start + self.batch_size]
            images = self._images.index_select(0, batch_indices)
            labels = self._labels.index_select(0, batch_indices)
            if self.augment is not None:
                images = self.augment(images, generator)
            yield normalize(images, self.dataset.mean, self.dataset.std), labels

    def __repr__(self) -> str:
        return (
            f"BatchLoader({self.dataset.name}/{self.dataset.split}, {len(self)} batches of "
            f"{self.batch_size}, train={self.train}, augment={self.augment}, "
            f"rank {self.rank} of {self.num_replicas})"
        )


def _distributed_setup(
    distributed: bool, num_replicas: int | None, rank: int | None
) -> tuple[int, int]:
    if not distributed:
        if num_replicas is not None or rank is not None:
            raise ValueError(
                f"num_replicas={num_replicas} and rank={rank} need distributed=True; pass it, or "
                f"leave both unset for a single process"
            )
        return 1, 0

    if num_replicas is None or rank is None:
        initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not initialized:
            raise ValueError(
                "distributed=True needs an initialised process group "
                "(torch.distributed.init_process_group) or explicit num_replicas and rank"
            )
        num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
        rank = torch.distributed.get_rank() if rank is None else rank

    _check_count(num_replicas, "num_replicas", 1)
    _check_count(rank, "rank", 0)
    if rank >= num_replicas:
        raise ValueError(f"rank={rank} must be smaller than num_replicas={num_replicas}")
    return num_replicas, rank


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    augment: bool | Augment | None = None,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    limit: int | None = None,
    distributed: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
    device: str | torch.device | None = None,
) -> BatchLoader:
    """Create a seeded batch loader that yields normalised float32 images and int64 labels.

    Args:
        dataset: an :class:`~flexhinm.data.ImageDataset`, e.g. from :func:`load_dataset`.
        batch_size: images per batch on each rank.
        train: training mode; it sets the defaults of ``augment``, ``shuffle`` and ``drop_last``
            and pads the shards to equal size (see :class:`BatchLoader`).
        seed: non-negative int; with the epoch it fixes the shuffle order and the augmentation.
        augment: ``True`` for :class:`RandomCropFlip` with :func:`default_padding` of the image
            size (4 px for 32 px images), ``False`` for none, or a callable
            ``augment(uint8 batch, generator) -> uint8 batch``. Default: ``train``.
        shuffle: draw a new permutation every epoch. Default: ``train``.
        drop_last: drop the last batch of an epoch when it is smaller than ``batch_size``
            (avoids tiny BatchNorm batches). Default: ``train``.
        limit: use only the first ``limit`` images of ``dataset`` (all of them if it is smaller).
        distributed: shard the data over the ranks of DistributedDataParallel.
        num_replicas: number of ranks; default ``torch.distributed.get_world_size()``.
        rank: this process's rank; default ``torch.distributed.get_rank()``.
        device: copy the images to this device once and build the batches there.

    Returns:
        A :class:`BatchLoader` with ``len()`` (batches per epoch) and ``set_epoch(epoch)``.

    Raises:
        ValueError: for a non-positive ``batch_size`` or ``limit``, a negative ``seed``, a rank
            outside ``[0, num_replicas)``, ``num_replicas`` or ``rank`` without
            ``distributed=True``, or settings that leave no batch.
        TypeError: if ``dataset`` is not an ``ImageDataset`` or ``augment`` is not callable.

    Example:
        >>> from flexhinm.data import ImageDataset
        >>> data = ImageDataset(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10),
        ...                     [str(i) for i in range(10)], mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> loader = make_loader(data, batch_size=4, train=True, seed=0)
        >>> len(loader)
        2
        >>> x, y = next(iter(loader))
        >>> x.shape, x.dtype, y.dtype
        (torch.Size([4, 3, 32, 32]), torch.float32, torch.int64)
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(
            f"dataset must be a flexhinm.data.ImageDataset, got {type(dataset).__name__}; wrap "
            f"tensors with ImageDataset(images, labels, classes, mean=..., std=...)"
        )
    _check_count(batch_size, "batch_size", 1)
    _check_count(seed, "seed", 0)
    num_replicas, rank = _distributed_setup(distributed, num_replicas, rank)
    if limit is not None:
        dataset = dataset.head(_check_count(limit, "limit", 1))

    if augment is None:
        augment = train
    if augment is True:
        augment = RandomCropFlip(padding=default_padding(dataset.image_size[-1]))
    elif augment is False:
        augment = None
    elif not callable(augment):
        raise TypeError(f"augment must be a bool or a callable, got {type(augment).__name__}")

    return BatchLoader(
        dataset,
        batch_size,
        train=train,
        shuffle=train if shuffle is None else shuffle,
        seed=seed,
        augment=augment,
        drop_last=train if drop_last is None else drop_last,
        num_replicas=num_replicas,
        rank=rank,
        device=device,
    )


_EVAL_SPLITS = {"cifar10": "test", "imagenette": "val"}


def make_loaders(
    name: str,
    batch_size: int,
    *,
    eval_batch_size: int | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    **options,
) -> tuple[BatchLoader, BatchLoader]:
    """Load a data set and return its ``(train, eval)`` loaders in one call.

    The evaluation split is ``"test"`` for CIFAR-10 and ``"val"`` for Imagenette. The train
    loader uses ``train=True`` and the evaluation loader ``train=False``.

    Args:
        name: ``"cifar10"`` or ``"imagenette"``.
        batch_size: training batch size per rank.
        eval_batch_size: evaluation batch size; default ``batch_size``.
        root: data root searched first, as in :func:`load_dataset`.
        download: fetch full CIFAR-10 if needed, as in :func:`load_dataset`.
        train_limit: use only the first ``train_limit`` training images.
        eval_limit: use only the first ``eval_limit`` evaluation images.
        **options: passed to both :func:`make_loader` calls (``seed``, ``distributed``,
            ``num_replicas``, ``rank``, ``device``, ``augment`` for the train loader only).

    Raises:
        ValueError: for a data set without a train/evaluation pair, such as ``"imagenet-sample"``.
    """
    if name not in _EVAL_SPLITS:
        raise ValueError(
            f"make_loaders needs a data set with train and evaluation splits, got name={name!r}; "
            f"choose one of {sorted(_EVAL_SPLITS)}, or use load_dataset and make_loader"
        )
    augment = options.pop("augment", None)
    train_data = load_dataset(name, "train", root=root, download=download)
    eval_data = load_dataset(name, _EVAL_SPLITS[name], root=root)

    train_loader = make_loader(
        train_data, batch_size, train=True, augment=augment, limit=train_limit, **options
    )
    eval_loader = make_loader(
        eval_data,
        batch_size if eval_batch_size is None else eval_batch_size,
        train=False,
        limit=eval_limit,
        **options,
    )
    return train_loader, eval_loader
