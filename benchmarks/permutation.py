"""Retained importance and time of no permutation, the 2:4 channel permutation and Gyro-Permutation.

Workloads:

* every eligible layer of a ResNet-20. ``--model-checkpoint`` takes a file from
  ``flexhinm.train.save_checkpoint`` or a plain state dict. Without it the ResNet-20 is randomly
  initialised (seed ``--seed``), and its numbers tell little about trained layers. Its tiles have
  ``--resnet-tile-rows`` rows (16 by default): ResNet-20 layers have 16, 32 or 64 output rows, and
  with one tile per layer the output-channel phase has nothing to exchange;
* seeded random heavy-tailed matrices, 768 x 768, 768 x 3072 and 3072 x 768 (``|w|`` of Student-t
  weights with 3 degrees of freedom).

Scores are magnitudes ``|w|``. For each layer and target sparsity (75 % and 87.5 %) the script runs
OVW, HiNM and FlexHiNM without permutation (``allocate_regions``) and with Gyro-Permutation
(``gyro_permute``, default settings, seed ``--seed``). Once per layer it also runs 2:4 at its own
sparsity of 50 %, without permutation and with ``channel_permutation_24``. The retained fraction is
the summed score of the kept weights over the summed score of all weights of that layer.

Times are single runs: wall-clock seconds and CPU seconds of this process (the CPU time sums all
threads). The machine's load average is recorded before and after, because other jobs on a shared
machine inflate the wall-clock times.

Usage (from the repository root)::

    python benchmarks/permutation.py [--model-checkpoint PATH] [--threads 1] \\
        [--out benchmarks/results/permutation.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402 (after the path set-up, so that an uninstalled checkout works)

from flexhinm import eligibility_report, nm_mask  # noqa: E402
from flexhinm.system import load_average  # noqa: E402
from flexhinm.permute import channel_permutation_24, gyro_permute, permuted_nm_mask  # noqa: E402
from flexhinm.regions import allocate_regions  # noqa: E402

from _common import heavy_tailed, load_resnet20, machine_info  # noqa: E402

SPARSITIES = (0.75, 0.875)
METHODS = ("ovw", "hinm", "flexhinm")
MATRICES = {"random 768x768": (768, 768), "random 768x3072": (768, 3072),
            "random 3072x768": (3072, 768)}
TILE_FALLBACKS = (64, 32, 16, 8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-checkpoint", type=Path,
                        help="trained ResNet-20 checkpoint (default: random init)")
    parser.add_argument("--out", type=Path,
                        default=REPO_ROOT / "benchmarks" / "results" / "permutation.json",
                        help="JSON file to write")
    parser.add_argument("--tile-rows", type=int, default=64,
                        help="rows per tile of the random matrices (default 64)")
    parser.add_argument("--resnet-tile-rows", type=int, default=16,
                        help="rows per tile of the ResNet-20 layers (default 16)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, because 2 threads on a busy 2-core machine "
                             "ran small operations up to 15 times slower)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the matrices, the random init and the permutation searches")
    parser.add_argument("--skip-resnet", action="store_true", help="only the random matrices")
    parser.add_argument("--skip-matrices", action="store_true", help="only the ResNet-20 layers")
    return parser.parse_args(argv)


def timed(function):
    """Return ``(result, wall seconds, CPU seconds)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def tile_size(rows: int, requested: int) -> int | None:
    """Return ``requested`` if it divides ``rows``, else the largest smaller fallback that does."""
    for size in (requested, *[s for s in TILE_FALLBACKS if s < requested]):
        if rows % size == 0:
            return size
    return None


def layer_rows(name: str, scores: torch.Tensor, requested_tile: int, seed: int) -> list[dict]:
    """Measure 2:4 and every region method, with and without permutation, on one layer."""
    total = float(scores.sum(dtype=torch.float64))
    tile_rows = tile_size(scores.shape[0], requested_tile)
    base = {"workload": name.removesuffix('.weight'), "shape": list(scores.shape), "tile_rows": tile_rows}

    def fraction(mask: torch.Tensor) -> float:
        return float((scores.double() * mask).sum()) / total

    mask, wall, cpu = timed(lambda: nm_mask(scores))
    rows = [{**base, "method": "2:4", "target": 0.5, "permutation": "none",
             "retained_fraction": fraction(mask), "seconds": wall, "cpu_seconds": cpu}]
    if scores.shape[1] % 4 == 0:
        (order, stats), wall, cpu = timed(lambda: channel_permutation_24(scores, seed=seed))
        rows.append({**base, "method": "2:4", "target": 0.5, "permutation": "channel24",
                     "retained_fraction": fraction(permuted_nm_mask(scores, order)),
                     "seconds": wall, "cpu_seconds": cpu, "rounds": stats.rounds})
    if tile_rows is None:
        return rows

    for target in SPARSITIES:
        for method in METHODS:
            layout, wall, cpu = timed(lambda: allocate_regions(scores, target, method, tile_rows))
            rows.append({**base, "method": method, "target": target, "permutation": "none",
                         "retained_fraction": fraction(layout.mask()), "counts": list(layout.counts),
                         "seconds": wall, "cpu_seconds": cpu})

            (layout, stats), wall, cpu = timed(lambda: gyro_permute(
                scores, target, method, tile_rows, seed=seed, return_stats=True))
            phases = {"output_seconds": stats.output.seconds,
                      "output_accepted": stats.output.accepted,
                      "output_order_used": stats.output_order_used}
            if stats.input is not None:
                phases.update(input_seconds=stats.input.seconds, input_rounds=stats.input.rounds,
                              input_accepted=stats.input.accepted)
            rows.append({**base, "method": method, "target": target, "permutation": "gyro",
                         "retained_fraction": fraction(layout.mask()), "counts": list(layout.counts),
                         "seconds": wall, "cpu_seconds": cpu, **phases})
    return rows


def format_table(rows: list[dict]) -> str:
    """Return one text line per row."""
    header = (f"{'workload':<30} {'shape':<16} {'V':>3} {'method':<9} {'target':>6} "
              f"{'permutation':<11} {'retained':>8} {'wall s':>7} {'cpu s':>7}")
    lines = [header, "-" * len(header)]
    for row in rows:
        shape = "x".join(str(size) for size in row["shape"])
        lines.append(
            f"{row['workload']:<30} {shape:<16} {row['tile_rows'] or '-':>3} {row['method']:<9} "
            f"{row['target']:>6.3f} {row['permutation']:<11} {row['retained_fraction']:>8.4f} "
            f"{row['seconds']:>7.2f} {row['cpu_seconds']:>7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every workload, print the table and write the JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads)
    rows = []

    weights = None
    if not args.skip_resnet:
        model, weights = load_resnet20(args.model_checkpoint, args.seed)
        parameters = dict(model.named_parameters())
        for name in eligibility_report(model).eligible:
            scores = parameters[name].detach().abs()
            rows.extend(layer_rows(f"resnet20 {name}", scores, args.resnet_tile_rows, args.seed))
            print(f"done {name}", file=sys.stderr, flush=True)

    if not args.skip_matrices:
        for offset, (name, shape) in enumerate(MATRICES.items()):
            scores = heavy_tailed(shape, args.seed + offset)
            rows.extend(layer_rows(name, scores, args.tile_rows, args.seed))
            print(f"done {name}", file=sys.stderr, flush=True)

    machine["load_average_end"] = load_average()
    print(f"ResNet-20 weights: {weights}; scores |w|; torch threads={args.threads}; "
          f"load average {machine['load_average_start'][0]:.1f} -> "
          f"{machine['load_average_end'][0]:.1f} on {machine['cpu_count']} CPUs")
    print(format_table(rows))
    result = {
        "machine": machine,
        "settings": {"tile_rows": args.tile_rows, "resnet_tile_rows": args.resnet_tile_rows,
                     "seed": args.seed, "score": "magnitude",
                     "sparsities": list(SPARSITIES), "resnet20_weights": weights,
                     "gyro": "gyro_permute defaults", "channel24": "channel_permutation_24 defaults"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
