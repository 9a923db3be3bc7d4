"""An in-memory image classification data set: uint8 NCHW images, int64 labels, class names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

__all__ = ["ImageDataset"]


class ImageDataset(Dataset):
    """Images and labels held in memory, with the metadata needed to normalise and describe them.

    :func:`flexhinm.data.load_dataset` returns this class; it can also wrap tensors directly.
    Indexing returns ``(image, label)`` with a uint8 ``(C, H, W)`` image, so the data set also
    works with ``torch.utils.data.DataLoader``. :func:`flexhinm.data.make_loader` is faster
    because it builds whole batches with tensor indexing.

    Args:
        images: uint8 tensor of shape ``(N, C, H, W)``, RGB pixels in [0, 255].
        labels: int64 tensor of shape ``(N,)`` with values in ``[0, len(classes))``.
        classes: class names indexed by label.
        mean: per-channel mean of the [0, 1] pixels used by :func:`~flexhinm.data.normalize`.
        std: per-channel standard deviation of the [0, 1] pixels.
        name: data set name, e.g. ``"cifar10"``.
        split: split name, e.g. ``"train"``.
        source: where the data came from: ``"npz"``, ``"cifar-10-batches-py"`` or ``"tensors"``.
        path: the file or folder read, if any.
        wnids: WordNet ids indexed by label (ImageNet-derived sets only).

    Raises:
        TypeError: if ``images`` is not uint8 or ``labels`` is not int64.
        ValueError: if the shapes disagree or a label is outside ``[0, len(classes))``.

    Example:
        >>> images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
        >>> data = ImageDataset(images, torch.tensor([0, 1, 0, 1]), ["cat", "dog"],
        ...                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        >>> len(data), data.num_classes, data.image_size
        (4, 2, (3, 8, 8))
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        *,
        mean: Sequence[float],
        std: Sequence[float],
        name: str = "custom",
        split: str = "",
        source: str = "tensors",
        path: Path | None = None,
        wnids: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise TypeError(
                f"images must be a uint8 tensor, got {getattr(images, 'dtype', type(images))}; "
                f"convert [0, 1] floats with (x * 255).round().to(torch.uint8)"
            )
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
            raise TypeError(
                f"labels must be an int64 tensor, got {getattr(labels, 'dtype', type(labels))}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},) to match the images, got "
                f"{tuple(labels.shape)}"
            )
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(
                f"mean and std need {images.shape[1]} entries (one per channel), got "
                f"{len(mean)} and {len(std)}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise ValueError(
                f"labels span [{int(labels.min())}, {int(labels.max())}] but there are "
                f"{len(classes)} classes; labels must lie in [0, {len(classes) - 1}]"
            )

        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.name = name
        self.split = split
        self.source = source
        self.path = path
        self.wnids = list(wnids) if wnids is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        _, channels, height, width = self.images.shape
        return channels, height, width

    def head(self, count: int) -> ImageDataset:
        """Return a data set of the first ``count`` images (all of them if there are fewer).

        The images are views, not copies. The ``.npz`` files are shuffled when built, so a prefix
        of a few hundred images contains every class.

        Raises:
            ValueError: if ``count`` is not a positive int.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count={count!r} must be a positive int (number of images to keep)")
        return ImageDataset(
            self.images[:count],
            self.labels[:count],
            self.classes,
            mean=self.mean,
            std=self.std,
            name=self.name,
            split=self.split,
            source=self.source,
            path=self.path,
            wnids=self.wnids,
        )

    def describe(self) -> str:
        """Return a one-line summary: name, split, image count and shape, classes and source."""
        channels, height, width = self.image_size
        where = f" at {self.path}" if self.path is not None else ""
        return (
            f"{self.name}/{self.split}: {len(self)} images of {channels}x{height}x{width}, "
            f"{self.num_classes} classes, from {self.source}{where}"
        )

    def __repr__(self) -> str:
        return f"ImageDataset({self.describe()})"
