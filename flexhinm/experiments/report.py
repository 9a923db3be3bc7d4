"""Tables, JSON files and plots of comparison results."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path

import torch

from ..system import cpu_name

__all__ = ["format_table", "machine_info", "plot_results", "write_json"]


def machine_info() -> dict:
    """Return the facts a reader needs to judge a measured number: hardware and versions."""
    from .. import __version__

    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "flexhinm": __version__,
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def format_table(rows: Sequence[dict]) -> str:
    """Return a fixed-width text table: method, target and achieved sparsity, weights, top-1.

    "top-1 pruned" is the accuracy right after one-shot pruning, before fine-tuning; gradual
    methods have none and show ``n/a``.

    Example:
        >>> print(format_table([{"label": "2:4", "target_sparsity": 0.5, "sparsity": 0.5,
        ...                      "kept_weights": 100, "pruned_layer_weights": 200,
        ...                      "top1_pruned": 40.0, "top1": 80.25}]))
        method           target  sparsity  weights kept       top-1 pruned  top-1
        2:4               50.0%     50.0%  100 / 200                 40.00  80.25
    """
    header = (
        f"{'method':<16} {'target':>6}  {'sparsity':>8}  {'weights kept':<18} "
        f"{'top-1 pruned':>12}  {'top-1':>5}"
    )
    lines = [header]
    for row in rows:
        weights = f"{row['kept_weights']:,} / {row['pruned_layer_weights']:,}"
        pruned = "n/a" if row["top1_pruned"] is None else f"{row['top1_pruned']:.2f}"
        lines.append(
            f"{row['label']:<16} {row['target_sparsity']:>6.1%}  {row['sparsity']:>8.1%}  "
            f"{weights:<18} {pruned:>12}  {row['top1']:>5.2f}"
        )
    return "\n".join(lines)


def write_json(path: str | PathLike, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, creating parent folders; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def plot_results(
    rows: Sequence[dict],
    path: str | PathLike | None = None,
    *,
    title: str = "",
    dense_top1: float | None = None,
):
    """Plot top-1 against sparsity, one line per method; save to ``path`` if given.

    Args:
        rows: result rows as :func:`flexhinm.experiments.run_method` returns them.
        path: PNG file to write, or ``None``.
        title: figure title.
        dense_top1: top-1 of the dense model in percent, drawn as a dashed line when ``rows`` has
            no dense row.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    dense = [(row["label"], row["top1"]) for row in rows if row["method"] == "dense"]
    if not dense and dense_top1 is not None:
        dense = [("Dense", dense_top1)]
    for label, top1 in dense:
        axes.axhline(top1, color="0.4", linestyle="--", label=f"{label} ({top1:.1f} %)")

    labels = [row["label"] for row in rows if row["method"] != "dense"]
    markers = "osD^vP*Xh<>"
    for index, label in enumerate(dict.fromkeys(labels)):
        points = sorted(
            (row["sparsity"], row["top1"]) for row in rows if row["label"] == label
        )
        xs = [100 * x for x, _ in points]
        ys = [y for _, y in points]
        # Methods drawn earlier get bigger markers and wider lines, so a later method with the
        # same results (FlexHiNM on top of HiNM, for example) leaves them visible.
        axes.plot(xs, ys, marker=markers[index % len(markers)], markersize=max(4.0, 10 - 0.8 * index),
                  linewidth=max(1.0, 3.2 - 0.35 * index), linestyle=("-", "--", "-.", ":")[index % 4],
                  label=label)

    axes.set_xlabel("sparsity of the pruned layers (%)")
    axes.set_ylabel("top-1 accuracy after fine-tuning (%)")
    if title:
        axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    return figure
