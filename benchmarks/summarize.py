"""Print Markdown tables that summarise the committed benchmark results in benchmarks/results/.

Usage: python benchmarks/summarize.py [RESULTS_DIR]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def regions(payload: dict) -> list[str]:
    lines = ["| workload | method | target | retained fraction | v |", "|---|---|---|---|---|"]
    for row in payload["rows"]:
        v = row.get("vector_sparsity")
        lines.append(
            f"| {row['workload']} | {row['method']} | {row['target']:.3f} | "
            f"{row['retained_fraction']:.4f} | {'' if v is None else f'{v:.3f}'} |"
        )
    return lines


def permutation(payload: dict) -> list[str]:
    # Mean retained fraction and total CPU seconds per (workload family, method, target, permutation).
    groups = defaultdict(list)
    for row in payload["rows"]:
        family = "resnet20 layers" if row["workload"].startswith("resnet20") else row["workload"]
        groups[(family, row["method"], row["target"], row["permutation"])].append(row)
    lines = [
        "| workload | method | target | permutation | mean retained fraction | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for (family, method, target, perm), rows in groups.items():
        mean = sum(r["retained_fraction"] for r in rows) / len(rows)
        seconds = sum(r.get("cpu_seconds", r["seconds"]) for r in rows)
        lines.append(f"| {family} | {method} | {target:.3f} | {perm} | {mean:.4f} | {seconds:.2f} |")
    return lines


def tensor_cores(payload: dict) -> list[str]:
    lines = [
        "| shape | dtype | method | target | tokens | median ms | speedup over dense |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        if row["status"] != "ok" or row["method"] == "dense":
            continue
        lines.append(
            f"| {row['shape']} | {row['dtype']} | {row['method']} | {row['target_sparsity']:.3f} | "
            f"{row['tokens']} | {row['median_ms']:.3f} | {row['speedup']:.2f}x |"
        )
    return lines


def provenance(payload: dict) -> str:
    machine = payload.get("machine") or payload.get("meta", {}).get("environment", {})
    command = payload.get("machine", {}).get("command") or payload.get("meta", {}).get("command")
    date = machine.get("date_utc")
    hardware = machine.get("device_name") or machine.get("cpu")
    return f"Command `{command}`, {hardware}, torch {machine.get('torch') or machine.get('torch_version')}, {date}."


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results")
    for path in sorted(folder.glob("*.json")):
        payload = json.loads(path.read_text())
        if path.stem == "regions":
            table = regions(payload)
        elif path.stem == "permutation":
            table = permutation(payload)
        elif path.stem.startswith("tensor_cores"):
            table = tensor_cores(payload)
        else:
            continue
        sys.stdout.write(f"\n### {path.name}\n\n{provenance(payload)}\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
