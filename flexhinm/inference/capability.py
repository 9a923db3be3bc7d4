"""Detection of 2:4 support: GPU model, compute capability, cuSPARSELt and the backend to use.

Sparse Tensor Cores exist from compute capability 8.0 (A100) on. torch 2.14.1 reaches them through
two backends of ``torch.sparse.to_sparse_semi_structured``:

* cuSPARSELt, NVIDIA's library, the torch default; it runs on 8.x, 9.0 (H100, H200) and newer,
  and Linux wheels depend on it (``nvidia-cusparselt``). Windows wheels are built without it.
* CUTLASS kernels compiled into torch for compute capability 8.x only (8.0, 8.6, 8.9), and left
  out of Windows builds.

Below 8.0 (T4, V100) and without CUDA, 2:4 weights can only run as masked dense GEMMs.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass

import torch

__all__ = [
    "SEMI_STRUCTURED_BACKENDS",
    "SparseCapability",
    "choose_backend",
    "detect_capability",
]

_logger = logging.getLogger(__name__)

SEMI_STRUCTURED_BACKENDS = ("cusparselt", "cutlass")

_NO_SPARSE_CORES = "no Sparse Tensor Cores; 2:4 runs as masked dense GEMMs"
_WINDOWS_NOTE = "Windows wheels of torch ship without cuSPARSELt and without the CUTLASS 2:4 kernels"


@dataclass(frozen=True)
class SparseCapability:
    """Sparse Tensor Core support of one device, as detected by :func:`detect_capability`.

    Attributes:
        device_name: GPU model, or None without a CUDA device.
        compute_capability: ``(major, minor)``, or None without a CUDA device.
        cuda_version: CUDA runtime torch was built with (``torch.version.cuda``), or None.
        driver_version: NVIDIA driver version read from ``nvidia-smi``, or None.
        torch_version: ``torch.__version__``.
        platform: ``sys.platform`` (``"linux"``, ``"win32"``, ...).
        cusparselt_available: whether this torch build has cuSPARSELt.
        cusparselt_version: cuSPARSELt version such as ``"0.8.1"``, or None.
        backends: semi-structured backends usable here, preferred first.
        backend: the preferred backend, ``"cusparselt"``, ``"cutlass"`` or ``"none"``.
        reason: why that backend was chosen, in plain words.
    """

    device_name: str | None
    compute_capability: tuple[int, int] | None
    cuda_version: str | None
    driver_version: str | None
    torch_version: str
    platform: str
    cusparselt_available: bool
    cusparselt_version: str | None
    backends: tuple[str, ...]
    backend: str
    reason: str

    @property
    def has_sparse_tensor_cores(self) -> bool:
        """Whether the GPU has Sparse Tensor Cores (compute capability 8.0 or newer)."""
        return self.compute_capability is not None and self.compute_capability >= (8, 0)

    def summary(self) -> str:
        """Describe the device and the 2:4 backend in one line of plain words.

        Example:
            >>> capability = choose_backend(None, cusparselt_available=False, platform="linux")
            >>> SparseCapability(None, None, None, None, "2.14.1", "linux", False, None,
            ...                  *capability).summary()
            'no CUDA device: no Sparse Tensor Cores; 2:4 runs as masked dense GEMMs'
        """
        if self.compute_capability is None:
            return f"{self.reason}: {_NO_SPARSE_CORES}"

        major, minor = self.compute_capability
        device = f"{self.device_name} (compute capability {major}.{minor})"
        if self.backend == "none":
            cores = "no Sparse Tensor Cores"
            if self.has_sparse_tensor_cores:
                cores = "Sparse Tensor Cores present but unusable"
            return f"{device}: {cores}; 2:4 runs as masked dense GEMMs because {self.reason}"

        name = "cuSPARSELt" if self.backend == "cusparselt" else "CUTLASS"
        if self.backend == "cusparselt" and self.cusparselt_version:
            name = f"cuSPARSELt {self.cusparselt_version}"
        text = f"{device}: Sparse Tensor Cores; 2:4 runs on {name}"
        others = [b for b in self.backends if b != self.backend]
        if others:
            text += f" (also available: {', '.join(others)})"
        return text


def choose_backend(
    compute_capability: tuple[int, int] | None,
    *,
    cusparselt_available: bool,
    platform: str = sys.platform,
    rocm: bool = False,
) -> tuple[tuple[str, ...], str, str]:
    """Pick the semi-structured backends for a device; the rules without any hardware query.

    Args:
        compute_capability: ``(major, minor)`` of the GPU, or None without a CUDA device.
        cusparselt_available: whether torch was built with cuSPARSELt.
        platform: ``sys.platform`` of the machine.
        rocm: True for a ROCm (HIP) build of torch.

    Returns:
        ``(backends, backend, reason)``: the usable backends (preferred first), the preferred one
        (``"none"`` if there is none) and the reason in plain words.

    Example:
        >>> choose_backend((9, 0), cusparselt_available=True, platform="linux")[:2]
        (('cusparselt',), 'cusparselt')
        >>> choose_backend((7, 5), cusparselt_available=True)[1]
        'none'
    """
    if compute_capability is None:
        return (), "none", "no CUDA device"
    major, minor = compute_capability
    if rocm:
        return (), "none", "this is a ROCm build, and this package drives only NVIDIA backends"
    if (major, minor) < (8, 0):
        return (), "none", (
            f"compute capability {major}.{minor} is below 8.0, the first with Sparse Tensor Cores")

    windows = platform.startswith("win")
    backends = []
    if cusparselt_available:
        backends.append("cusparselt")
    if major == 8 and not windows:
        backends.append("cutlass")

    if not backends:
        if windows:
            return (), "none", _WINDOWS_NOTE
        return (), "none", (
            f"this torch build has no cuSPARSELt, and torch builds its CUTLASS 2:4 kernels for "
            f"compute capability 8.x only, not {major}.{minor}")
    if major == 8:
        reason = (f"compute capability {major}.{minor}: both backends run here, and cuSPARSELt is "
                  f"the torch default")
        if len(backends) == 1:
            reason = f"compute capability {major}.{minor}: only {backends[0]} is in this build"
        if windows:
            reason += f" ({_WINDOWS_NOTE})"
        return tuple(backends), backends[0], reason
    return tuple(backends), backends[0], (
        f"compute capability {major}.{minor}: cuSPARSELt only, because torch builds its CUTLASS "
        f"2:4 kernels for 8.x")


def detect_capability(
    device: torch.device | str | int | None = None, *, query_driver: bool = True
) -> SparseCapability:
    """Detect the GPU, cuSPARSELt and the 2:4 backend of a device.

    Args:
        device: a CUDA device (``"cuda:0"``, 0, ...), ``"cpu"``, or None for the current CUDA
            device when there is one and the CPU otherwise.
        query_driver: run ``nvidia-smi`` (at most 10 s) to read the driver version.

    Returns:
        A :class:`SparseCapability`. Without CUDA its ``summary()`` contains "no Sparse Tensor
        Cores".

    Raises:
        ValueError: if ``device`` names a CUDA device index that does not exist.

    Example:
        >>> "Sparse Tensor Cores" in detect_capability("cpu").summary()
        True
    """
    cusparselt_available, cusparselt_version = _cusparselt_info()
    common = {
        "torch_version": torch.__version__,
        "platform": sys.platform,
        "cusparselt_available": cusparselt_available,
        "cusparselt_version": cusparselt_version,
        "cuda_version": torch.version.cuda,
    }

    device = _resolve_device(device)
    if device.type != "cuda":
        backends, backend, reason = choose_backend(None, cusparselt_available=cusparselt_available)
        if torch.cuda.is_available():
            reason = f"device {device} is not a CUDA device"
        return SparseCapability(None, None, driver_version=None, backends=backends, backend=backend,
                                reason=reason, **common)

    index = device.index if device.index is not None else torch.cuda.current_device()
    capability = tuple(torch.cuda.get_device_capability(index))
    backends, backend, reason = choose_backend(
        capability, cusparselt_available=cusparselt_available,
        rocm=getattr(torch.version, "hip", None) is not None,
    )
    return SparseCapability(
        device_name=torch.cuda.get_device_name(index),
        compute_capability=capability,
        driver_version=_driver_version() if query_driver else None,
        backends=backends,
        backend=backend,
        reason=reason,
        **common,
    )


@functools.lru_cache(maxsize=None)
def cached_capability(index: int | None) -> SparseCapability:
    """Return :func:`detect_capability` for CUDA device ``index`` once per process (no driver query)."""
    if not torch.cuda.is_available():
        return detect_capability("cpu", query_driver=False)
    return detect_capability(torch.device("cuda", index) if index is not None else "cuda",
                             query_driver=False)


def _resolve_device(device: torch.device | str | int | None) -> torch.device:
    """Turn the ``device`` argument into a torch.device, checking CUDA indices."""
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if isinstance(device, int):
        device = torch.device("cuda", device)
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return torch.device("cpu") if device.type == "cuda" else device

    count = torch.cuda.device_count()
    if device.index is not None and not 0 <= device.index < count:
        raise ValueError(
            f"device={device} does not exist: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}"
        )
    return device


def _cusparselt_info() -> tuple[bool, str | None]:
    """Return whether torch has cuSPARSELt and its version as ``"major.minor.patch"``."""
    module = getattr(torch.backends, "cusparselt", None)
    if module is None:
        return False, None
    try:
        available = bool(module.is_available())
        number = module.version() if available else None
    except (RuntimeError, AttributeError) as error:
        _logger.debug("cuSPARSELt query failed: %s", error)
        return False, None
    if number is None:
        return available, None

    # cuSPARSELt encodes its version as major * 1000 + minor * 100 + patch (801 is 0.8.1).
    number = int(number)
    return available, f"{number // 1000}.{number % 1000 // 100}.{number % 100}"


def _driver_version() -> str | None:
    """Return the NVIDIA driver version from ``nvidia-smi``, or None if it cannot be read."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        result = subprocess.run(
            [executable, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        _logger.debug("nvidia-smi failed: %s", error)
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0].strip() if lines else None
