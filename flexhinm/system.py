"""Facts about the machine that belong next to every measured number."""

from __future__ import annotations

import os
import platform

__all__ = ["cpu_name", "load_average"]


def cpu_name() -> str:
    """Return the CPU model (from ``/proc/cpuinfo`` on Linux), else what ``platform`` reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15-minute load averages, or ``None`` where the system has none.

    Other work on a machine slows CPU timings; recording the load lets a reader judge them.
    """
    if hasattr(os, "getloadavg"):
        return [round(value, 2) for value in os.getloadavg()]
    return None
