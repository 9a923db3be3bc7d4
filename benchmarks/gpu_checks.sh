#!/usr/bin/env bash
# Run every GPU check of the project once, on a machine with a CUDA GPU, and keep the outputs.
#
# Usage, from the repository root:  bash benchmarks/gpu_checks.sh [OUT_DIR]
#
# It needs a python3 with torch (CUDA build), scipy, tqdm, matplotlib and pytest; the package is
# imported from this checkout, so nothing is installed. OUT_DIR (default benchmarks/results)
# receives gpu_tests.log, gpu_info.txt and tensor_cores_<gpu>.json, the file chapter 6 plots.
# NOTE: no GPU was available while this was written, so neither part has run on one yet and
# the benchmark's length is unknown. With little GPU time, set QUICK=--quick for three shapes.
set -uo pipefail

out="${1:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"

if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_checks.sh: torch finds no CUDA GPU; run it on a machine with one" >&2
    exit 2
fi

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
    "$python" -m flexhinm.cli info
} 2>&1 | tee "$out/gpu_info.txt"

"$python" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$out/gpu_tests.log"
tests_status=${PIPESTATUS[0]}

gpu=$("$python" -c "import torch; print(torch.cuda.get_device_name(0).split()[-1].lower())")
"$python" benchmarks/tensor_cores.py --device cuda --min-run-time 0.2 ${QUICK:-} \
    --out "$out/tensor_cores_${gpu}.json" 2>&1 | tee "$out/gpu_benchmark.log"
bench_status=${PIPESTATUS[0]}

echo "gpu tests: exit $tests_status; tensor-core benchmark: exit $bench_status"
exit $(( tests_status || bench_status ))
