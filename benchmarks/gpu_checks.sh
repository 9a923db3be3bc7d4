#!/usr/bin/env bash
# Run every GPU check of the project once, on a machine with a CUDA GPU, and keep the outputs.
#
# Usage, from the repository root:  bash benchmarks/gpu_checks.sh [OUT_DIR]
#
# It needs a python3 with torch (CUDA build), scipy, tqdm, matplotlib and pytest; the package is
# imported from this checkout, so nothing is installed. OUT_DIR (default benchmarks/results)
# receives gpu_info.txt, gpu_tests.log, gpu_benchmark.log and tensor_cores_<gpu name>.json, the
# file chapter 6 plots. The JSON is rewritten after every batch size, so a run stopped by the
# time limit keeps what it measured.
#
# By default the benchmark times three shapes (--quick) for at least 0.05 s a case, within
# BENCH_TIMEOUT seconds (default 420). FULL=1 times every shape instead.
# NOTE: neither part has run on a GPU yet. The time limits are estimates from the rules of torch's
# timer, not measurements.
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

# A test module whose imports are missing on this machine must not stop the GPU tests of the others.
"$python" -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors tests 2>&1 \
    | tee "$out/gpu_tests.log"
tests_status=${PIPESTATUS[0]}

scope="--quick"
if [[ "${FULL:-0}" == 1 ]]; then
    scope=""
fi
timeout --signal=INT "${BENCH_TIMEOUT:-420}" \
    "$python" benchmarks/tensor_cores.py --device cuda --min-run-time 0.05 $scope --out-dir "$out" \
    2>&1 | tee "$out/gpu_benchmark.log"
bench_status=${PIPESTATUS[0]}

echo "gpu tests: exit $tests_status; tensor-core benchmark: exit $bench_status (124: stopped at the time limit)"
exit $(( tests_status || bench_status ))
