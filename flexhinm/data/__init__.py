"""Image data for the book and the main job: loading, normalisation, augmentation, batch loaders.

``load_dataset("cifar10", "train")`` reads real images from a data root (see
:mod:`flexhinm.data.datasets` for the search order); ``make_loader`` turns the result into seeded,
augmented, normalised batches.
"""

from .datasets import DataRoot, data_roots, default_cache_dir, list_datasets, load_dataset
from .image_dataset import ImageDataset
from .loaders import BatchLoader, make_loader, make_loaders
from .transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomCropFlip,
    default_padding,
    normalize,
    random_crop_flip,
)

__all__ = [
    "BatchLoader",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DataRoot",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageDataset",
    "RandomCropFlip",
    "data_roots",
    "default_cache_dir",
    "default_padding",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "make_loaders",
    "normalize",
    "random_crop_flip",
]
