"""Synthetic layouts, the benchmark library and the tensor-core benchmark script (CPU, tiny sizes)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from flexhinm.inference import (
    BenchmarkConfig,
    CompactHiNMLinear,
    SparseCapability,
    benchmark_layer,
    environment_info,
    run_benchmark,
    synthetic_counts,
    synthetic_layout,
)
from flexhinm.inference import benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tensor_cores.py"


def tiny_config(**overrides) -> BenchmarkConfig:
    """A CPU configuration that runs in well under a second per case."""
    settings = {"shapes": {"tiny": (64, 128)}, "tokens": (2,), "sparsities": (0.75,),
                "min_run_time": 0.01, "tile_rows": 16}
    settings.update(overrides)
    return BenchmarkConfig(**settings)


# ----------------------------------------------------------------------------- synthetic layouts
@pytest.mark.parametrize("method, sparsity, expected", [
    ("hinm", 0.75, (384, 384, 0)),
    ("hinm", 0.875, (576, 192, 0)),
    ("flexhinm", 0.75, (480, 192, 96)),
    ("flexhinm", 0.875, (624, 96, 48)),
    ("2:4", 0.9, (0, 768, 0)),
])
def test_synthetic_counts_table(method, sparsity, expected):
    """Counts for 768 columns follow the documented formulas."""
    assert synthetic_counts(768, method=method, sparsity=sparsity) == expected


def test_synthetic_counts_small_layer_rounds_to_group():
    """A 16-column layer rounds 2:4 counts to 4, not to 16, so HiNM at 75 % keeps 8 columns."""
    assert synthetic_counts(16, method="hinm", sparsity=0.75) == (8, 8, 0)


def test_synthetic_counts_rejects_bad_input():
    """Unknown methods, sparsity below 0.5 and column counts off the group size raise."""
    with pytest.raises(ValueError, match="method='ovw' is invalid"):
        synthetic_counts(768, method="ovw", sparsity=0.75)
    with pytest.raises(ValueError, match="below 0.5"):
        synthetic_counts(768, method="hinm", sparsity=0.3)
    with pytest.raises(ValueError, match="multiple of m=4"):
        synthetic_counts(30, method="hinm", sparsity=0.75)


@pytest.mark.parametrize("method", ["2:4", "hinm", "flexhinm"])
def test_synthetic_layout_reaches_sparsity(method):
    """The layout's sparsity is the target (0.5 for whole-layer 2:4)."""
    layout = synthetic_layout((128, 768), method=method, sparsity=0.875)
    expected = 0.5 if method == "2:4" else 0.875
    assert layout.sparsity == pytest.approx(expected, abs=1e-9)


def test_synthetic_layout_same_seed_same_layout():
    """The same seed gives the same layout; another seed gives another one."""
    first = synthetic_layout((64, 128), method="flexhinm", sparsity=0.75, tile_rows=16, seed=3)
    again = synthetic_layout((64, 128), method="flexhinm", sparsity=0.75, tile_rows=16, seed=3)
    other = synthetic_layout((64, 128), method="flexhinm", sparsity=0.75, tile_rows=16, seed=4)
    assert torch.equal(first.mask(), again.mask())
    assert not torch.equal(first.mask(), other.mask())


def test_synthetic_layout_identity_rows():
    """permute_rows=False keeps the rows in order."""
    layout = synthetic_layout((64, 128), method="hinm", sparsity=0.75, tile_rows=16, permute_rows=False)
    assert torch.equal(layout.row_order, torch.arange(64))


def test_synthetic_layout_rejects_tile_rows():
    """A tile size that does not divide the rows raises."""
    with pytest.raises(ValueError, match="tile_rows=48 does not divide the 64 output rows"):
        synthetic_layout((64, 128), method="hinm", sparsity=0.75, tile_rows=48)


# ----------------------------------------------------------------------------- benchmark library
def test_run_benchmark_rows_on_cpu():
    """Dense and compact cases are checked, timed and compared with dense on the CPU."""
    rows = run_benchmark(tiny_config())
    assert [row["method"] for row in rows] == ["dense", "hinm", "flexhinm"]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["max_error"] <= row["tolerance"], row
        assert row["median_ms"] > 0
        assert row["speedup"] > 0
    assert rows[0]["speedup"] == 1.0
    assert rows[1]["backend"] == "masked_dense"
    assert rows[1]["counts"] == [64, 64, 0]


def test_run_benchmark_speedup_with_dense_last():
    """Speedups are filled in even when the dense case is timed after the compact ones."""
    rows = run_benchmark(tiny_config(methods=("flexhinm", "dense")))
    assert [row["method"] for row in rows] == ["flexhinm", "dense"]
    assert rows[0]["speedup"] == pytest.approx(rows[1]["median_ms"] / rows[0]["median_ms"])


def test_run_benchmark_rejects_unknown_names():
    """Unknown dtype, method and backend names raise before anything runs."""
    with pytest.raises(ValueError, match="dtype 'half_float' is invalid"):
        run_benchmark(tiny_config(dtypes=("half_float",)))
    with pytest.raises(ValueError, match=r"methods \['ovw'\] are invalid"):
        run_benchmark(tiny_config(methods=("ovw",)))
    with pytest.raises(ValueError, match=r"compact_backends \['fast'\] are invalid"):
        run_benchmark(tiny_config(compact_backends=("fast",)))


def test_run_benchmark_skips_whole_layer_24_on_cpu():
    """Whole-layer 2:4 is skipped on the CPU with a reason that names Sparse Tensor Cores."""
    rows = run_benchmark(tiny_config(methods=("2:4",)))
    assert len(rows) == 1
    assert rows[0]["status"] == "skipped"
    assert "Sparse Tensor Cores" in rows[0]["error"]


def test_run_benchmark_skips_forced_semi_structured_on_cpu():
    """A forced semi-structured compact layer is skipped on the CPU with its reason."""
    rows = run_benchmark(tiny_config(methods=("hinm",), compact_backends=("semi_structured",)))
    assert [row["status"] for row in rows] == ["skipped"]
    assert "CUDA device" in rows[0]["error"]


def test_run_benchmark_records_wrong_output(monkeypatch):
    """A layer whose output is off is recorded as wrong and not timed."""
    original = CompactHiNMLinear.forward
    monkeypatch.setattr(CompactHiNMLinear, "forward", lambda self, x: original(self, x) + 1.0)
    rows = run_benchmark(tiny_config(methods=("dense", "hinm")))
    wrong = rows[1]
    assert wrong["status"] == "wrong"
    assert "median_ms" not in wrong
    assert "differs from the masked dense reference" in wrong["error"]


def test_run_benchmark_records_wrong_shape(monkeypatch):
    """An output that would broadcast against the reference is recorded as wrong, not compared."""
    original = CompactHiNMLinear.forward
    monkeypatch.setattr(CompactHiNMLinear, "forward", lambda self, x: original(self, x)[:1])
    rows = run_benchmark(tiny_config(methods=("hinm",)))
    assert rows[0]["status"] == "wrong"
    assert rows[0]["error"] == "output has shape (1, 64), the masked dense reference (2, 64)"


@pytest.mark.parametrize("backend, expected", [("cusparselt", 16), ("cutlass", 64), ("none", 16)])
def test_column_align_follows_backend(monkeypatch, backend, expected):
    """Synthetic 2:4 counts are rounded to the column multiple of the GPU's preferred backend."""
    capability = SparseCapability("fake GPU", (8, 0), None, None, torch.__version__, "linux", True,
                                  None, ("cutlass",), backend, "test")
    monkeypatch.setattr(benchmark, "cached_capability", lambda index: capability)
    assert benchmark._column_align(torch.zeros(64, 128, dtype=torch.float16)) == 16

    # Only the device and dtype are read, so a stand-in for a CUDA weight is enough.
    cuda_weight = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float16)
    assert benchmark._column_align(cuda_weight) == expected


def test_run_benchmark_records_failure(monkeypatch):
    """An exception inside a case is recorded and the run continues."""
    def broken(self, x):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(CompactHiNMLinear, "forward", broken)
    rows = run_benchmark(tiny_config(methods=("hinm", "dense")))
    assert rows[0]["status"] == "failed"
    assert rows[0]["error"] == "RuntimeError: kernel exploded"
    assert rows[1]["status"] == "ok"


def test_run_benchmark_max_gflop_skips_large_cases():
    """Cases above max_gflop are skipped with the GFLOP count in the reason."""
    rows = run_benchmark(tiny_config(methods=("dense",), tokens=(2, 4096), max_gflop=0.01))
    assert [row["status"] for row in rows] == ["ok", "skipped"]
    assert "GFLOP" in rows[1]["error"]


def test_benchmark_layer_shape_name():
    """benchmark_layer names the shape after its size and applies overrides."""
    rows = benchmark_layer(32, 64, tokens=(1,), methods=("dense",), min_run_time=0.01)
    assert rows[0]["shape"] == "32x64"
    assert rows[0]["tokens"] == 1


def test_environment_info_fields():
    """The environment contains the versions, the date and the plain-words summary."""
    info = environment_info("cpu")
    for key in ("torch_version", "cusparselt_version", "driver_version", "date_utc", "summary",
                "cusparselt_package"):
        assert key in info
    assert "no Sparse Tensor Cores" in info["summary"]


# ----------------------------------------------------------------------------- script
def test_tensor_cores_script_writes_json(tmp_path, capsys):
    """The script prints a table and writes JSON with the command, environment and rows."""
    spec = importlib.util.spec_from_file_location("tensor_cores_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    out = tmp_path / "result.json"
    status = script.main(["--shapes", "vit_b.attn.proj", "--tokens", "1", "--sparsities", "0.875",
                          "--min-run-time", "0.01", "--out", str(out)])
    assert status == 0

    result = json.loads(out.read_text())
    assert result["meta"]["command"].startswith("python benchmarks/tensor_cores.py --shapes")
    assert result["meta"]["environment"]["torch_version"] == torch.__version__
    assert [row["status"] for row in result["rows"]] == ["ok", "ok", "ok"]
    assert "median ms" in capsys.readouterr().out


def load_script():
    """Import benchmarks/tensor_cores.py as a module."""
    spec = importlib.util.spec_from_file_location("tensor_cores_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_script_keeps_rows_on_interrupt(tmp_path, monkeypatch, capsys):
    """An interrupt (the time limit of gpu_checks.sh) keeps the timed rows and returns 130."""
    script = load_script()
    finished = [{"shape": "s", "dtype": "float16", "tokens": tokens, "method": "dense",
                 "target_sparsity": 0.0, "status": "skipped", "error": "test"} for tokens in (1, 64)]

    def interrupted(config):
        yield from finished
        raise KeyboardInterrupt

    monkeypatch.setattr(script, "iter_benchmark", interrupted)
    status = script.main(["--shapes", "vit_b.attn.proj", "--out-dir", str(tmp_path)])
    assert status == 130

    result = json.loads((tmp_path / "tensor_cores_cpu.json").read_text())
    assert result["meta"]["stopped_early"] is True
    assert result["rows"] == finished
    assert "'skipped': 2" in capsys.readouterr().out


def test_script_writes_json_per_batch_size(tmp_path, monkeypatch):
    """The JSON on disk grows with every finished batch size, before the run ends."""
    script = load_script()
    out = tmp_path / "result.json"
    seen = []

    def rows_with_checks(config):
        for tokens in (1, 16, 64):
            seen.append(len(json.loads(out.read_text())["rows"]) if out.exists() else 0)
            yield {"shape": "s", "dtype": "float16", "tokens": tokens, "method": "dense",
                   "target_sparsity": 0.0, "status": "skipped", "error": "test"}

    monkeypatch.setattr(script, "iter_benchmark", rows_with_checks)
    assert script.main(["--out", str(out)]) == 0
    assert seen == [0, 0, 1]
    assert len(json.loads(out.read_text())["rows"]) == 3

