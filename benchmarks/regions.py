"""Retained importance of unstructured, 2:4, OVW, HiNM and FlexHiNM masks, and the time of the search.

Workloads:

* every eligible layer of a ResNet-20. ``--model-checkpoint`` takes a file from
  ``flexhinm.train.save_checkpoint`` or a plain state dict. Without it the ResNet-20 is randomly
  initialised (seed 0), and its numbers tell little about trained layers;
* seeded random heavy-tailed matrices, 768 x 768 and 768 x 3072 (``|w|`` of Student-t weights with
  3 degrees of freedom), tiles of 64 rows.

Scores are magnitudes ``|w|``. The retained fraction is the summed score of the kept weights over the
summed score of all weights, over the pruned layers. 2:4 is measured at its own sparsity, 50 %. The
search time is the median of ``--repeats`` runs of ``search_boundary`` with ``--threads`` torch
threads (1 by default). The allocation time is one run of the full mask construction.

Usage (from the repository root)::

    python benchmarks/regions.py [--model-checkpoint PATH] [--out benchmarks/results/regions.json]

The table goes to stdout; the JSON (machine, torch version, threads, date, command, settings, one row
per workload, method and sparsity, and the FlexHiNM retained-importance curves) goes to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402 (after the path set-up, so that an uninstalled checkout works)

from flexhinm import (  # noqa: E402
    compute_scores,
    eligibility_report,
    nm_mask,
    prune_model,
    search_boundary,
    unstructured_mask,
)
from flexhinm.regions import allocate_regions  # noqa: E402

from _common import heavy_tailed, load_resnet20, machine_info  # noqa: E402

SPARSITIES = (0.75, 0.875, 0.9)
REGION_METHODS = ("ovw", "hinm", "flexhinm")
MATRICES = {"random 768x768": (768, 768), "random 768x3072": (768, 3072)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-checkpoint", type=Path, help="trained ResNet-20 checkpoint (default: random init)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "regions.json",
                        help="JSON file to write")
    parser.add_argument("--tile-rows", type=int, default=64, help="rows per tile (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each search (median kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random matrices and the random init")
    return parser.parse_args(argv)


def median_time(function, repeats: int) -> tuple[float, object]:
    """Return the median wall time of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def curve_summary(result) -> dict:
    """Return the FlexHiNM curve and whether it is concave in v (second differences <= 0)."""
    retained = result.retained_fraction
    second = retained[2:] - 2 * retained[1:-1] + retained[:-2]
    return {
        "vector_sparsity": result.vector_sparsity.tolist(),
        "retained_fraction": retained.tolist(),
        "concave": bool((second <= 1e-12).all()) if len(second) else True,
        "best_vector_sparsity": float(result.vector_sparsity[result.best]),
    }


def matrix_rows(name: str, scores: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    """Measure every method on one score matrix."""
    total = float(scores.sum(dtype=torch.float64))
    rows = []

    def add(method, target, mask, seconds, **extra):
        retained = float((scores.double() * mask).sum()) / total
        sparsity = float((~mask).sum()) / mask.numel()
        rows.append({"workload": name, "method": method, "target": target, "sparsity": sparsity,
                     "retained_fraction": retained, "seconds": seconds, **extra})

    start = time.perf_counter()
    add("2:4", 0.5, nm_mask(scores), time.perf_counter() - start)
    for target in SPARSITIES:
        start = time.perf_counter()
        add("unstructured", target, unstructured_mask(scores, target), time.perf_counter() - start)
        for method in REGION_METHODS:
            start = time.perf_counter()
            layout = allocate_regions(scores, target, method, args.tile_rows)
            seconds = time.perf_counter() - start
            extra = {"vector_sparsity": layout.vector_sparsity, "counts": list(layout.counts)}
            if method == "flexhinm":
                search_seconds, result = median_time(
                    lambda: search_boundary(scores, target, tile_rows=args.tile_rows), args.repeats)
                extra.update(search_seconds=search_seconds, candidates=len(result.candidates),
                             curve=curve_summary(result))
            add(method, target, layout.mask(), seconds, **extra)
    return rows


def resnet_rows(model: torch.nn.Module, weights: str, args: argparse.Namespace) -> list[dict]:
    """Measure every method on all eligible ResNet-20 layers together, with per-layer detail."""
    rows = []
    names = eligibility_report(model).eligible
    scores = compute_scores(model, names, "magnitude")
    runs = [("2:4", "nm", None)] + [
        (label, method, target) for target in SPARSITIES
        for label, method in [("unstructured", "unstructured")] + [(m, m) for m in REGION_METHODS]
    ]
    for label, method, target in runs:
        start = time.perf_counter()
        report = prune_model(model, method, target, tile_rows=args.tile_rows, scores=scores, apply=False)
        seconds = time.perf_counter() - start
        layers = [layer.to_dict() for layer in report.layers]
        if method == "flexhinm":
            for layer, row in zip(report.layers, layers):
                result = search_boundary(scores[layer.name], target, tile_rows=layer.tile_rows)
                row["curve"] = curve_summary(result)
        rows.append({
            "workload": f"resnet20 ({len(report.layers)} layers)", "weights": weights, "method": label,
            "target": report.target_sparsity, "sparsity": report.sparsity,
            "retained_fraction": report.retained_fraction, "seconds": seconds,
            "layers": layers, "skipped": report.skipped,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """Return one text line per row: workload, method, target, sparsity, v, retained, times."""
    header = (f"{'workload':<26} {'method':<13} {'target':>6} {'sparsity':>8} {'v':>6} "
              f"{'retained':>8} {'time s':>7} {'search s':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        v = row.get("vector_sparsity")
        if v is None and row.get("layers") and row["layers"][0].get("vector_sparsity") is not None:
            v = statistics.mean(layer["vector_sparsity"] for layer in row["layers"])
        search = row.get("search_seconds")
        lines.append(
            f"{row['workload']:<26} {row['method']:<13} {row['target']:>6.3f} {row['sparsity']:>8.4f} "
            f"{'' if v is None else f'{v:.3f}':>6} {row['retained_fraction']:>8.4f} {row['seconds']:>7.3f} "
            f"{'' if search is None else f'{search:.3f}':>8}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every workload, print the table and write the JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    model, weights = load_resnet20(args.model_checkpoint, args.seed)
    rows = resnet_rows(model, weights, args)
    for offset, (name, shape) in enumerate(MATRICES.items()):
        rows.extend(matrix_rows(name, heavy_tailed(shape, args.seed + offset), args))

    print(f"ResNet-20 weights: {weights}; scores |w|; tile_rows={args.tile_rows}; "
          f"torch threads={args.threads}; v of ResNet-20 rows is the mean over layers")
    print(format_table(rows))
    result = {
        "machine": machine_info(args.threads),
        "settings": {"tile_rows": args.tile_rows, "repeats": args.repeats, "seed": args.seed,
                     "score": "magnitude", "sparsities": list(SPARSITIES), "resnet20_weights": weights},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
