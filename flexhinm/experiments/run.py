"""The main job: train a dense baseline, prune copies with each method, fine-tune, compare."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..train.distributed import init_distributed, is_main_process
from .baseline import data_loaders, pretrained_baseline
from .budgets import Budget
from .compare import MethodContext, planned_runs, run_method
from .report import format_table, machine_info, plot_results, write_json

__all__ = ["Comparison", "run_comparison"]

_logger = logging.getLogger(__name__)


@dataclass
class Comparison:
    """Result of :func:`run_comparison`: one row per (method, sparsity) and the run's facts."""

    rows: list
    baseline: dict
    meta: dict

    def table(self) -> str:
        """Return the comparison as a text table."""
        return format_table(self.rows)

    def to_dict(self) -> dict:
        """Return everything as a JSON-ready dict."""
        return {"meta": self.meta, "baseline": self.baseline, "rows": self.rows}


def run_comparison(
    *,
    model_name: str = "resnet20",
    dataset: str = "cifar10",
    budget: Budget,
    methods: Sequence[str],
    sparsities: Sequence[float],
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool = False,
    device: torch.device | str | None = None,
    use_cache: bool = True,
    progress: bool = True,
    tile_rows: int = 64,
    score: str = "magnitude",
    out_dir: str | os.PathLike | None = None,
    command: str | None = None,
) -> Comparison:
    """Train (or load) the dense baseline, then run every method at every sparsity.

    Args:
        model_name: model registry name, e.g. ``"resnet20"``.
        dataset: ``"cifar10"`` or ``"imagenette"``.
        budget: epochs, learning rates and data sizes (see :data:`flexhinm.experiments.BUDGETS`).
        methods: names from :data:`flexhinm.experiments.METHODS`.
        sparsities: target sparsities for methods whose sparsity is free.
        seed: seeds the baseline, the data order and every fine-tune.
        root: data root; ``download`` fetches full CIFAR-10 if it is missing.
        device: default CUDA when available.
        use_cache: reuse a cached baseline trained with the same settings.
        progress: tqdm bars.
        tile_rows: rows per tile of the region methods (falls back to 32, 16, 8 per layer).
        score: importance score of every method: ``"magnitude"``, ``"taylor"``, ``"fisher"``...
        out_dir: if given, ``results.json`` and ``results.png`` are written there (rank 0).
        command: the command line, stored in the JSON.

    Returns:
        A :class:`Comparison`.
    """
    start = time.perf_counter()
    runs = planned_runs(methods, sparsities)
    distributed = init_distributed()

    loaders = data_loaders(
        dataset, budget, root=root, download=download, seed=seed, distributed=distributed
    )
    baseline = pretrained_baseline(
        model_name,
        dataset,
        budget,
        seed=seed,
        device=device,
        use_cache=use_cache,
        progress=progress,
        loaders=loaders,
    )
    context = MethodContext(
        loaders[0], loaders[1], budget, seed, device, progress, tile_rows=tile_rows, score=score
    )

    rows = []
    for index, (spec, sparsity) in enumerate(runs, start=1):
        step = ": evaluating" if spec.run is None else f" at {100 * sparsity:.1f} %: pruning and fine-tuning"
        _logger.info("[%d/%d] %s%s", index, len(runs), spec.label, step)
        rows.append(run_method(spec, baseline.model, sparsity, context))

    train_data, eval_data = loaders[0].dataset, loaders[1].dataset
    meta = {
        **machine_info(),
        "command": command,
        "model": model_name,
        "dataset": dataset,
        "data_source": train_data.source,
        "train_images": len(train_data),
        "eval_images": len(eval_data),
        "budget": budget.to_dict(),
        "tile_rows": tile_rows,
        "score": score,
        "seed": seed,
        "seconds": time.perf_counter() - start,
    }
    comparison = Comparison(rows, baseline.record, meta)

    if out_dir is not None and is_main_process():
        out = Path(out_dir)
        write_json(out / "results.json", comparison.to_dict())
        title = (
            f"{model_name} on {dataset} ({len(train_data):,} train / {len(eval_data):,} test "
            f"images), budget {budget.name}"
        )
        plot_results(rows, out / "results.png", title=title, dense_top1=baseline.test_top1)
    return comparison
