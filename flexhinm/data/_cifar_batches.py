"""Read and download full CIFAR-10 in the ``cifar-10-batches-py`` format that torchvision uses.

The folder contains five training batches ``data_batch_1`` ... ``data_batch_5`` (10,000 images
each), one ``test_batch`` (10,000 images) and ``batches.meta`` with the class names. Each batch is a
pickled dict. Its ``data`` entry is a ``(n, 3072)`` uint8 array, and each row contains the 1024
red, then 1024 green, then 1024 blue pixels of a 32 x 32 image in row-major order. Its ``labels``
entry is a list of n ints. Because pickles can run code, they are read with an unpickler that
accepts only the numpy array types such a file contains.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np

__all__ = ["BATCH_FOLDER", "batch_files", "download_cifar10", "read_cifar10_batches"]

_logger = logging.getLogger(__name__)

BATCH_FOLDER = "cifar-10-batches-py"
_SPLIT_FILES = {
    "train": tuple(f"data_batch_{index}" for index in range(1, 6)),
    "test": ("test_batch",),
}
_META_FILE = "batches.meta"

# Globals that a pickled numpy array may reference. Files written by numpy 1.x name the module
# ``numpy.core``, which numpy 2 renamed to ``numpy._core``. Python 3 writes bytes in protocol 2
# pickles as ``_codecs.encode(text, "latin1")``.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that loads plain containers and numpy arrays and rejects every other global."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR-10 batch file"
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = module.replace("numpy.core.", "numpy._core.", 1)
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(
            f"{path} is not a valid CIFAR-10 batch file ({error}); delete the "
            f"{BATCH_FOLDER} folder and download it again"
        ) from error
    if not isinstance(content, dict):
        raise ValueError(
            f"{path} contains a {type(content).__name__}, expected a dict; "
            f"it is not a CIFAR-10 batch file"
        )
    return content


def batch_files(folder: Path, split: str) -> list[Path]:
    """Return the files that ``split`` ("train" or "test") needs inside ``folder``, meta first."""
    return [folder / _META_FILE] + [folder / name for name in _SPLIT_FILES[split]]


def read_cifar10_batches(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one split of a ``cifar-10-batches-py`` folder.

    Args:
        folder: the ``cifar-10-batches-py`` folder.
        split: ``"train"`` (all five data batches) or ``"test"`` (the test batch).

    Returns:
        ``(images, labels, classes)``: uint8 images of shape ``(N, 3, 32, 32)`` (RGB, NCHW),
        int64 labels of shape ``(N,)`` and the class names in label order.

    Raises:
        FileNotFoundError: if a batch or the meta file is missing.
        ValueError: if a file is not a valid batch.
    """
    files = batch_files(folder, split)
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the CIFAR-10 folder {folder} is incomplete: missing {', '.join(missing)}; delete it "
            f"and run load_dataset('cifar10', '{split}', download=True) to fetch it again"
        )

    meta = _load_pickle(files[0])
    if "label_names" not in meta:
        raise ValueError(f"{files[0]} has no 'label_names' entry; keys are {sorted(meta)}")
    classes = [str(name) for name in meta["label_names"]]

    images, labels = [], []
    for path in files[1:]:
        batch = _load_pickle(path)
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"{path} needs 'data' and 'labels' entries; keys are {sorted(batch)}")
        data = np.asarray(batch["data"], dtype=np.uint8)
        batch_labels = np.asarray(batch["labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != len(data):
            raise ValueError(
                f"{path} has data of shape {data.shape} and {len(batch_labels)} labels; expected "
                f"(n, 3072) and n labels"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)

    return np.concatenate(images), np.concatenate(labels), classes


def download_cifar10(folder: Path) -> Path:
    """Download and extract full CIFAR-10 (about 170 MB) into ``folder`` with torchvision.

    torchvision skips the download when a verified copy is already there.

    Returns:
        The ``cifar-10-batches-py`` folder inside ``folder``.

    Raises:
        ImportError: if torchvision is not installed.
        RuntimeError: if the download or the checksum verification fails.
    """
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as error:
        raise ImportError(
            "download=True fetches CIFAR-10 with torchvision, which is not installed; "
            "run `pip install torchvision`"
        ) from error

    folder.mkdir(parents=True, exist_ok=True)
    _logger.info("downloading CIFAR-10 (about 170 MB) into %s", folder)
    try:
        # One archive contains both splits, so a single call fetches the test batch too.
        CIFAR10(root=str(folder), train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise RuntimeError(
            f"downloading CIFAR-10 into {folder} failed ({error}); check the network "
            f"connection, or put an extracted {BATCH_FOLDER} folder there by hand"
        ) from error
    return folder / BATCH_FOLDER
