"""The machine a benchmark ran on: device, driver, library versions, date and load, as a dict."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
from dataclasses import asdict

import torch

from ..system import cpu_name, load_average
from .capability import detect_capability

__all__ = ["cusparselt_package", "environment_info"]


def environment_info(device: str = "cpu") -> dict:
    """Return the device, driver, CUDA, torch and cuSPARSELt versions, the date and the load.

    Args:
        device: ``"cpu"`` or a CUDA device such as ``"cuda:0"``.

    Returns:
        The fields of :class:`~flexhinm.inference.SparseCapability` plus ``summary``, ``date_utc``
        (ISO 8601), ``python``, ``machine``, ``cpu``, ``cpu_count``, ``torch_threads``,
        ``load_average`` and ``cusparselt_package``. ``load_average`` is the 1-minute load, or
        None where it is unknown. Other work on the machine slows CPU timings.

    Example:
        >>> info = environment_info("cpu")
        >>> info["backend"], info["torch_version"] == torch.__version__
        ('none', True)
    """
    capability = detect_capability(device)
    info = asdict(capability)
    info.update({
        "summary": capability.summary(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": (load_average() or [None])[0],
        "cusparselt_package": cusparselt_package(),
    })
    return info


def cusparselt_package() -> str | None:
    """Return the installed cuSPARSELt wheel as ``"name version"``, or None if there is none.

    ``cusparselt_version`` comes from torch and may be the version torch was built against. Linux
    builds of torch load the library from this wheel (``nvidia-cusparselt-cu12`` and similar).
    """
    found = []
    for distribution in importlib.metadata.distributions():
        name = (distribution.metadata["Name"] or "").lower()
        if name.startswith("nvidia-cusparselt"):
            found.append(f"{name} {distribution.version}")
    return ", ".join(sorted(set(found))) or None
