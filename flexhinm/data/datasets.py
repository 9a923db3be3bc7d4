"""Load the image data sets of the book and the main job into memory as uint8 tensors.

Known data sets and splits:

* ``cifar10``: ``train`` and ``test``. Full CIFAR-10 (50,000 / 10,000 images) when a
  ``cifar-10-batches-py`` folder is found, else the ``.npz`` subset.
* ``imagenette``: ``train`` and ``val`` (160 x 160 px). ``test`` is accepted as another name for
  ``val`` so that code written for CIFAR-10's split names also works here.
* ``imagenet-sample``: one split, ``all``: one 64 x 64 px image for each of the 1000 ImageNet
  classes. Its source does not say which ImageNet split the images come from.

Files are looked up in these data roots, in order:

1. the ``root`` argument;
2. the ``FLEXHINM_DATA`` environment variable;
3. the per-user cache: ``$FLEXHINM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/flexhinm/data``, else
   ``~/.cache/flexhinm/data``.

Inside a root the layout is::

    cifar10/cifar-10-batches-py/        full CIFAR-10 as torchvision writes it (download=True)
    cifar-10-batches-py/                the same, where torchvision puts it for root=<root>
    cifar10/train.npz, cifar10/test.npz
    imagenet-subset/imagenette_train.npz, imagenet-subset/imagenette_val.npz
    imagenet-subset/imagenet1k_sample_64.npz

The first root that contains the data set is used. Within one root, full CIFAR-10 is preferred
to the ``.npz`` subset. Each ``.npz`` contains ``images`` (uint8, N x H x W x 3, RGB), ``labels``
(int64, N) and ``classes`` (str, indexed by label), and is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ._cifar_batches import BATCH_FOLDER, download_cifar10, read_cifar10_batches
from .image_dataset import ImageDataset
from .transforms import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DataRoot", "data_roots", "default_cache_dir", "list_datasets", "load_dataset"]


@dataclass(frozen=True)
class _DatasetSpec:
    title: str
    files: dict[str, str]
    aliases: dict[str, str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_DATASETS = {
    "cifar10": _DatasetSpec(
        title="CIFAR-10",
        files={"train": "cifar10/train.npz", "test": "cifar10/test.npz"},
        aliases={},
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    ),
    "imagenette": _DatasetSpec(
        title="Imagenette",
        files={
            "train": "imagenet-subset/imagenette_train.npz",
            "val": "imagenet-subset/imagenette_val.npz",
        },
        aliases={"test": "val"},
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
    "imagenet-sample": _DatasetSpec(
        title="ImageNet sample (one image per class)",
        files={"all": "imagenet-subset/imagenet1k_sample_64.npz"},
        aliases={},
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
}


class DataRoot(NamedTuple):
    """A folder searched for data and where it came from (``root=``, ``FLEXHINM_DATA``, cache)."""

    path: Path
    origin: str


def list_datasets() -> dict[str, list[str]]:
    """Return each known data set name with its split names (aliases not included).

    Example:
        >>> list_datasets()["cifar10"]
        ['train', 'test']
    """
    return {name: list(spec.files) for name, spec in _DATASETS.items()}


def default_cache_dir() -> Path:
    """Return the per-user data cache folder.

    It is ``$FLEXHINM_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/flexhinm/data``, else
    ``~/.cache/flexhinm/data``. The folder may not exist yet.
    """
    override = os.environ.get("FLEXHINM_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg_cache).expanduser() if xdg_cache else Path.home() / ".cache"
    return base / "flexhinm" / "data"


def data_roots(root: str | os.PathLike | None = None) -> list[DataRoot]:
    """Return the folders searched for data, in order: ``root``, ``$FLEXHINM_DATA``, the cache.

    Args:
        root: a folder given by the caller, or ``None``.

    Returns:
        One :class:`DataRoot` per source that is set; an unset ``FLEXHINM_DATA`` is left out.

    Raises:
        TypeError: if ``root`` is not a path.
    """
    roots = []
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a folder path (str or Path), got {type(root).__name__}")
        roots.append(DataRoot(Path(root).expanduser(), "root argument"))

    environment_root = os.environ.get("FLEXHINM_DATA")
    if environment_root:
        roots.append(DataRoot(Path(environment_root).expanduser(), "FLEXHINM_DATA"))

    roots.append(DataRoot(default_cache_dir(), "user cache"))
    return roots


def _resolve(name: str, split: str) -> tuple[_DatasetSpec, str]:
    if name not in _DATASETS:
        raise ValueError(f"unknown data set name={name!r}; choose one of {sorted(_DATASETS)}")
    spec = _DATASETS[name]
    canonical = spec.aliases.get(split, split)
    if canonical not in spec.files:
        valid = list(spec.files) + list(spec.aliases)
        raise ValueError(f"unknown split={split!r} for data set {name!r}; choose one of {valid}")
    return spec, canonical


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str] | None]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        # numpy tries to unpickle a file that is not a zip archive, and raises ValueError because
        # allow_pickle=False.
        raise ValueError(f"{path} is not a readable .npz archive ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} contains a single array, not an .npz archive of named arrays")

    with archive:
        missing = {"images", "labels", "classes"} - set(archive.files)
        if missing:
            raise ValueError(
                f"{path} lacks the arrays {sorted(missing)}; it contains {archive.files}"
            )
        images = archive["images"]
        labels = archive["labels"].astype(np.int64)
        classes = [str(label) for label in archive["classes"]]
        wnids = [str(wnid) for wnid in archive["wnids"]] if "wnids" in archive.files else None

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"{path} has images of dtype {images.dtype} and shape {images.shape}; expected uint8 "
            f"of shape (N, H, W, 3)"
        )
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels, classes, wnids


def _dataset_from_batches(folder: Path, spec: _DatasetSpec, split: str) -> ImageDataset:
    images, labels, classes = read_cifar10_batches(folder, split)
    return ImageDataset(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        classes,
        mean=spec.mean,
        std=spec.std,
        name="cifar10",
        split=split,
        source=BATCH_FOLDER,
        path=folder,
    )


def _dataset_from_npz(path: Path, spec: _DatasetSpec, name: str, split: str) -> ImageDataset:
    images, labels, classes, wnids = _read_npz(path)
    return ImageDataset(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        classes,
        mean=spec.mean,
        std=spec.std,
        name=name,
        split=split,
        source="npz",
        path=path,
        wnids=wnids,
    )


def _missing_message(
    spec: _DatasetSpec,
    name: str,
    split: str,
    roots: list[DataRoot],
    tried: list[tuple[Path, str]],
) -> str:
    lines = [f"{spec.title} split {split!r} was not found. Paths tried, in order:"]
    lines += [f"  {path}  ({origin})" for path, origin in tried]
    if not any(root.origin == "FLEXHINM_DATA" for root in roots):
        lines.append("FLEXHINM_DATA is not set.")
    for root in roots:
        if root.origin == "FLEXHINM_DATA" and not root.path.is_absolute():
            lines.append(f"FLEXHINM_DATA={root.path} is read from the current folder {Path.cwd()}; "
                         f"an absolute path works from any folder.")
    file_name = Path(spec.files[split]).name
    for folder in [root.path for root in roots if (root.path / file_name).is_file()]:
        lines.append(f"{folder} is the data set's own folder: use its parent {folder.parent}.")
    lines.append(
        f"To fix it, pass root=<folder> to load_dataset, or set FLEXHINM_DATA=<folder>, where "
        f"<folder> contains {spec.files[split]}."
    )
    if name == "cifar10":
        lines.append(
            f"Or call load_dataset('cifar10', {split!r}, download=True) to fetch full CIFAR-10 "
            f"(about 170 MB) with torchvision into {roots[0].path / 'cifar10'}."
        )
    else:
        lines.append(f"{spec.title} is not downloaded automatically; copy the .npz file there.")
    return "\n".join(lines)


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    download: bool = False,
) -> ImageDataset:
    """Load a data set split into memory as uint8 NCHW images and int64 labels.

    Args:
        name: ``"cifar10"``, ``"imagenette"`` or ``"imagenet-sample"``.
        split: ``"train"``/``"test"`` for CIFAR-10, ``"train"``/``"val"`` for Imagenette
            (``"test"`` means ``"val"``), ``"all"`` for the ImageNet sample.
        root: folder searched first; see the module docstring for the layout and search order.
        download: for ``"cifar10"`` only, fetch full CIFAR-10 (50,000 / 10,000 images) with
            torchvision into ``<first data root>/cifar10``, unless that root already contains a
            ``cifar-10-batches-py`` folder. The first data root is ``root``, else
            ``$FLEXHINM_DATA``, else the user cache.

    Returns:
        An :class:`~flexhinm.data.ImageDataset`; ``.source`` is ``"cifar-10-batches-py"`` (full
        CIFAR-10) or ``"npz"``, ``.path`` the file or folder read, ``len()`` the image count.

    Raises:
        ValueError: for an unknown name or split, ``download=True`` with a data set other than
            CIFAR-10, or a file that is not a valid data set.
        FileNotFoundError: if no root contains the data; the message lists every path tried.

    Example:
        >>> train = load_dataset("cifar10", "train")  # doctest: +SKIP
        >>> train.images.shape, train.source  # doctest: +SKIP
        (torch.Size([10000, 3, 32, 32]), 'npz')
    """
    spec, split = _resolve(name, split)
    roots = data_roots(root)

    if download:
        if name != "cifar10":
            raise ValueError(
                f"download=True is supported only for 'cifar10', not {name!r}; {spec.title} has no "
                f"automatic download. Put its .npz file under a data root and call again with "
                f"download=False"
            )
        first_root = roots[0].path
        present = [first_root / "cifar10" / BATCH_FOLDER, first_root / BATCH_FOLDER]
        if not any(folder.is_dir() for folder in present):
            download_cifar10(first_root / "cifar10")

    tried = []
    for data_root in roots:
        if name == "cifar10":
            folders = (data_root.path / "cifar10" / BATCH_FOLDER, data_root.path / BATCH_FOLDER)
            for folder in folders:
                tried.append((folder, data_root.origin))
                if folder.is_dir():
                    return _dataset_from_batches(folder, spec, split)

        path = data_root.path / spec.files[split]
        tried.append((path, data_root.origin))
        if path.is_file():
            return _dataset_from_npz(path, spec, name, split)

    raise FileNotFoundError(_missing_message(spec, name, split, roots, tried))
