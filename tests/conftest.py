"""Shared test set-up: one torch thread, and the offline data found next to the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# The machine is shared and noisy; one thread keeps tests predictable.
torch.set_num_threads(1)

if "FLEXHINM_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["FLEXHINM_DATA"] = str(SHARED_DATA)

# The book build runs its kernels in book/, so relative folders (FLEXHINM_DATA=../shared/data, as
# in the README) are made absolute here, where they were meant.
for variable in ("FLEXHINM_DATA", "FLEXHINM_CACHE"):
    if os.environ.get(variable):
        os.environ[variable] = str(Path(os.environ[variable]).expanduser().resolve())


@pytest.fixture
def data_root() -> Path:
    """Folder holding ``cifar10/`` and ``imagenet-subset/``; skips the test when it is missing."""
    if "FLEXHINM_DATA" not in os.environ:
        pytest.skip(f"offline data not found at {SHARED_DATA}; set FLEXHINM_DATA to run this test")
    root = Path(os.environ["FLEXHINM_DATA"])
    if not (root / "cifar10" / "train.npz").is_file():
        pytest.fail(f"FLEXHINM_DATA={root} has no cifar10/train.npz; point it at the data folder")
    return root
