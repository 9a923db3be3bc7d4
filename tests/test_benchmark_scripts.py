"""The benchmark scripts run end to end and write the JSON their readers expect."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(script, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )


@pytest.mark.slow
def test_regions_benchmark_writes_json(tmp_path):
    """benchmarks/regions.py prints its table and records every method with its machine."""
    out = tmp_path / "regions.json"
    result = _run("regions.py", "--out", str(out), "--repeats", "1")
    payload = json.loads(out.read_text())
    methods = {row["method"] for row in payload["rows"]}
    assert {"2:4", "unstructured", "ovw", "hinm", "flexhinm"} <= methods
    assert payload["machine"]["torch"]
    assert "flexhinm" in result.stdout


@pytest.mark.slow
def test_permutation_benchmark_writes_json(tmp_path):
    """benchmarks/permutation.py on ResNet-20 layers records each variant's retained importance."""
    out = tmp_path / "permutation.json"
    _run("permutation.py", "--skip-matrices", "--out", str(out))
    payload = json.loads(out.read_text())
    assert payload["rows"], "no rows written"
    assert payload["machine"]["command"]
