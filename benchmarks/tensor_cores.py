"""Time dense, 2:4, HiNM and FlexHiNM layers on GEMM shapes of ResNet-50, ViT-B/BERT-base and Llama-7B.

On a CPU it compares the dense GEMM with the compact layers in fp32 (pruned columns skipped, 2:4
columns as masked dense GEMMs). On a CUDA GPU it times fp16 and bf16, adds whole-layer 2:4 on
Sparse Tensor Cores and runs the compact layers both with packed 2:4 columns and as masked dense
GEMMs. Every case is checked against the masked dense reference before it is timed; a wrong or
failing case is recorded and the run goes on.

Usage (from the repository root)::

    python benchmarks/tensor_cores.py --quick                       # CPU, a few minutes
    python benchmarks/tensor_cores.py --device cuda --out benchmarks/results/tensor_cores_<gpu>.json

The table goes to stdout, progress to stderr, and the JSON to ``--out``. The JSON contains the
device, driver, torch and cuSPARSELt versions, the date, the command, the configuration and one row
per case. It is rewritten after every batch size, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402 (after the path set-up, so that an uninstalled checkout works)

from flexhinm.inference import GEMM_SHAPES, BenchmarkConfig, environment_info, iter_benchmark  # noqa: E402

_logger = logging.getLogger("tensor_cores")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; unset options keep the defaults of ``BenchmarkConfig.for_device``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA device such as 'cuda' or 'cuda:1'")
    parser.add_argument("--quick", action="store_true", help="three shapes and three or four batch sizes")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: "
                        "OUT_DIR/tensor_cores_<device>.json)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                        help="folder of the default JSON file (default: benchmarks/results)")
    parser.add_argument("--shapes", nargs="+", choices=sorted(GEMM_SHAPES), help="GEMM shapes to time")
    parser.add_argument("--tokens", nargs="+", type=int, help="batch sizes (rows of the input)")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--methods", nargs="+", choices=["dense", "2:4", "hinm", "flexhinm"])
    parser.add_argument("--sparsities", nargs="+", type=float, help="HiNM/FlexHiNM target sparsities")
    parser.add_argument("--backends", nargs="+", choices=["auto", "masked_dense", "semi_structured"],
                        help="backends of the compact layers, each timed separately")
    parser.add_argument("--tile-rows", type=int, help="rows per tile (default 64)")
    parser.add_argument("--min-run-time", type=float, help="seconds of timing per case, at least")
    parser.add_argument("--threads", type=int, help="CPU threads while timing (default 1)")
    parser.add_argument("--max-gflop", type=float,
                        help="skip cases whose dense GEMM needs more GFLOP (0: no limit; CPU default 10)")
    parser.add_argument("--seed", type=int, help="seed of weights, inputs and layouts (default 0)")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> BenchmarkConfig:
    """Return the device defaults with the options given on the command line applied."""
    config = BenchmarkConfig.for_device(args.device, quick=args.quick)
    overrides = {
        "tokens": tuple(args.tokens) if args.tokens else None,
        "dtypes": tuple(args.dtypes) if args.dtypes else None,
        "methods": tuple(args.methods) if args.methods else None,
        "sparsities": tuple(args.sparsities) if args.sparsities else None,
        "compact_backends": tuple(args.backends) if args.backends else None,
        "tile_rows": args.tile_rows,
        "min_run_time": args.min_run_time,
        "num_threads": args.threads,
        "seed": args.seed,
    }
    if args.shapes:
        overrides["shapes"] = {name: GEMM_SHAPES[name] for name in args.shapes}
    if args.max_gflop is not None:
        overrides["max_gflop"] = args.max_gflop if args.max_gflop > 0 else None
    return replace(config, **{key: value for key, value in overrides.items() if value is not None})


def default_output(environment: dict, folder: Path) -> Path:
    """Return ``folder/tensor_cores_<gpu or cpu>.json``, e.g. ``tensor_cores_nvidia_h200.json``."""
    name = environment.get("device_name") or "cpu"
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return folder / f"tensor_cores_{slug}.json"


def format_table(rows: list[dict]) -> str:
    """Return the rows as a fixed-width text table."""
    header = (f"{'shape':<24} {'tokens':>6} {'dtype':<8} {'method':<8} {'sparsity':>8} "
              f"{'backend':<15} {'median ms':>10} {'IQR ms':>8} {'speedup':>7} {'max err':>8}  status")
    lines = [header, "-" * len(header)]
    for row in rows:
        tokens = "-" if row.get("tokens") is None else str(row["tokens"])
        sparsity = row.get("sparsity", row.get("target_sparsity"))
        median = f"{row['median_ms']:.4f}" if "median_ms" in row else "-"
        iqr = f"{row['iqr_ms']:.4f}" if "iqr_ms" in row else "-"
        speedup = f"{row['speedup']:.2f}x" if "speedup" in row else "-"
        error = f"{row['max_error']:.1e}" if row.get("max_error") is not None else "-"
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row.get('error')}"
        lines.append(
            f"{row['shape']:<24} {tokens:>6} {row['dtype']:<8} {row['method']:<8} "
            f"{sparsity:>8.4f} {row.get('backend', row.get('requested_backend', '-')):<15} "
            f"{median:>10} {iqr:>8} {speedup:>7} {error:>8}  {status}"
        )
    return "\n".join(lines)


def write_json(path: Path, meta: dict, rows: list[dict]) -> None:
    """Write ``{"meta": ..., "rows": ...}`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n", encoding="utf-8")


def _case_group(row: dict) -> tuple:
    """Return the shape, dtype and batch size of a row; rows of one group come out together."""
    return row["shape"], row["dtype"], row.get("tokens")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        _logger.error("--device %s was requested but CUDA is not available here", args.device)
        return 2

    config = build_config(args)
    environment = environment_info(args.device)
    out = args.out or default_output(environment, args.out_dir)
    arguments = sys.argv[1:] if argv is None else argv
    meta = {
        "environment": environment,
        "command": shlex.join(["python", "benchmarks/tensor_cores.py", *arguments]),
        "config": {**asdict(config), "shapes": {k: list(v) for k, v in config.shapes.items()}},
    }
    _logger.info("%s", environment["summary"])

    rows: list[dict] = []
    started = time.perf_counter()
    status = 0
    try:
        for row in iter_benchmark(config):
            if rows and _case_group(row) != _case_group(rows[-1]):
                write_json(out, meta, rows)
            rows.append(row)
    except KeyboardInterrupt:
        # Ctrl-C or `timeout --signal=INT`. The rows of a batch size arrive only once all of its
        # cases are timed, so every row kept here is complete.
        meta["stopped_early"] = True
        _logger.warning("interrupted; the JSON keeps the %d cases timed so far", len(rows))
        status = 130
    meta["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_json(out, meta, rows)

    print(f"# {environment['summary']}")
    print(f"# torch {environment['torch_version']}, {config.num_threads} thread(s), "
          f"{meta['wall_seconds']} s, {meta['command']}")
    print(format_table(rows))
    counts = {name: sum(row["status"] == name for row in rows)
              for name in ("ok", "wrong", "failed", "skipped")}
    print(f"# cases: {counts}; JSON written to {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
