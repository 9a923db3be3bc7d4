"""Capability detection: GPU, compute capability, cuSPARSELt and the 2:4 backend in plain words."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flexhinm.inference import SparseCapability, capability, choose_backend, detect_capability


def fake_capability(name, compute_capability, *, cusparselt=True, platform="linux"):
    """A SparseCapability for a GPU this machine does not have."""
    backends, backend, reason = choose_backend(compute_capability, cusparselt_available=cusparselt,
                                               platform=platform)
    return SparseCapability(name, compute_capability, "13.0", "580.1", "2.14.1", platform, cusparselt,
                            "0.8.1" if cusparselt else None, backends, backend, reason)


# ----------------------------------------------------------------------------- this machine
def test_detect_cpu_reports_no_sparse_tensor_cores():
    """On the CPU the summary reports no Sparse Tensor Cores and masked dense 2:4."""
    found = detect_capability("cpu")
    assert "no Sparse Tensor Cores" in found.summary()
    assert "masked dense GEMMs" in found.summary()
    assert found.backend == "none"
    assert not found.has_sparse_tensor_cores


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the wording on a machine without CUDA")
def test_detect_default_without_cuda():
    """Without CUDA the default device gives the exact plain-words line."""
    found = detect_capability()
    assert found.summary() == "no CUDA device: no Sparse Tensor Cores; 2:4 runs as masked dense GEMMs"
    assert found.device_name is None
    assert found.compute_capability is None


def test_detect_records_versions():
    """The torch version and the cuSPARSELt flag of this build are recorded."""
    found = detect_capability("cpu")
    assert found.torch_version == torch.__version__
    assert found.cusparselt_available == torch.backends.cusparselt.is_available()


def test_cusparselt_version_decoded(monkeypatch):
    """cuSPARSELt's integer version 602 reads as 0.6.2."""
    monkeypatch.setattr(torch.backends.cusparselt, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cusparselt, "version", lambda: 602)
    assert detect_capability("cpu").cusparselt_version == "0.6.2"


def test_driver_version_missing_tool(monkeypatch):
    """Without nvidia-smi the driver version is None instead of an error."""
    monkeypatch.setattr(capability.shutil, "which", lambda name: None)
    assert capability._driver_version() is None


# ----------------------------------------------------------------------------- backend rules
@pytest.mark.parametrize("compute, cusparselt, platform, backends, backend", [
    (None, True, "linux", (), "none"),
    ((7, 5), True, "linux", (), "none"),                                   # T4
    ((7, 0), True, "linux", (), "none"),                                   # V100
    ((8, 0), True, "linux", ("cusparselt", "cutlass"), "cusparselt"),      # A100
    ((8, 6), False, "linux", ("cutlass",), "cutlass"),
    ((8, 9), True, "linux", ("cusparselt", "cutlass"), "cusparselt"),      # L4
    ((8, 0), False, "win32", (), "none"),
    ((9, 0), True, "linux", ("cusparselt",), "cusparselt"),                # H100, H200
    ((9, 0), False, "linux", (), "none"),
    ((10, 0), True, "linux", ("cusparselt",), "cusparselt"),               # B200
])
def test_choose_backend_table(compute, cusparselt, platform, backends, backend):
    """Backends follow the compute capability, the build and the platform."""
    chosen = choose_backend(compute, cusparselt_available=cusparselt, platform=platform)
    assert chosen[:2] == (backends, backend)


def test_choose_backend_rocm():
    """A ROCm build gets no backend and a reason naming ROCm."""
    backends, backend, reason = choose_backend((9, 4), cusparselt_available=True, rocm=True)
    assert backend == "none"
    assert "ROCm" in reason


def test_choose_backend_windows_note():
    """On Windows without cuSPARSELt the reason names the Windows wheels."""
    _, _, reason = choose_backend((8, 6), cusparselt_available=False, platform="win32")
    assert "Windows wheels" in reason


# ----------------------------------------------------------------------------- summaries
def test_summary_a100():
    """An A100 summary names cuSPARSELt with its version and CUTLASS as the alternative."""
    text = fake_capability("NVIDIA A100-SXM4-80GB", (8, 0)).summary()
    assert text == ("NVIDIA A100-SXM4-80GB (compute capability 8.0): Sparse Tensor Cores; 2:4 runs "
                    "on cuSPARSELt 0.8.1 (also available: cutlass)")


def test_summary_t4():
    """A T4 summary reports no Sparse Tensor Cores."""
    text = fake_capability("Tesla T4", (7, 5)).summary()
    assert "Tesla T4 (compute capability 7.5): no Sparse Tensor Cores" in text


def test_summary_h100_without_cusparselt():
    """An H100 without cuSPARSELt has the cores but no usable backend."""
    found = fake_capability("NVIDIA H100", (9, 0), cusparselt=False)
    assert found.has_sparse_tensor_cores
    assert "present but unusable" in found.summary()


def test_capability_is_frozen():
    """The detected capability cannot be changed by accident."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        detect_capability("cpu").backend = "cutlass"


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_detect_gpu_names_device():
    """On a GPU the name and compute capability are read, and the summary starts with the name."""
    found = detect_capability("cuda")
    assert found.device_name == torch.cuda.get_device_name()
    assert found.compute_capability == torch.cuda.get_device_capability()
    assert found.summary().startswith(found.device_name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_detect_gpu_rejects_missing_index():
    """A CUDA index past the last device raises."""
    with pytest.raises(ValueError, match="does not exist"):
        detect_capability(torch.cuda.device_count())
