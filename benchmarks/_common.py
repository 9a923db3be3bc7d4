"""Helpers shared by the benchmark scripts: machine facts, the ResNet-20 weights, test matrices."""

from __future__ import annotations

import datetime
import os
import shlex
import sys
from pathlib import Path

import torch

from flexhinm import create_model
from flexhinm.system import cpu_name, load_average
from flexhinm.train import load_checkpoint

__all__ = ["heavy_tailed", "load_resnet20", "machine_info"]


def machine_info(threads: int) -> dict:
    """Return CPU, core count, load, torch and Python versions, thread count, date and command."""
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_start": load_average(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "torch_threads": threads,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


def load_resnet20(checkpoint: Path | None, seed: int) -> tuple[torch.nn.Module, str]:
    """Return a ResNet-20 (trained weights from ``checkpoint``, else seeded random init) and its description."""
    torch.manual_seed(seed)
    model = create_model("resnet20")
    if checkpoint is None:
        return model, f"random init (seed {seed})"
    try:
        load_checkpoint(checkpoint, model)
    except ValueError:
        # A plain state dict rather than a flexhinm checkpoint.
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model, f"checkpoint {checkpoint}"


def heavy_tailed(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """Return ``|w|`` of Student-t (3 degrees of freedom) weights, seeded."""
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(shape, generator=generator)
    chi_square = torch.randn(3, *shape, generator=generator).square().sum(0)
    return (normal / (chi_square / 3).sqrt()).abs()
