"""The main job and the book's shared experiments: budgets, a cached dense baseline, comparisons."""

from .baseline import Baseline, cache_dir, data_loaders, pretrained_baseline
from .budgets import BUDGETS, Budget, get_budget
from .compare import (
    METHODS,
    MethodContext,
    MethodSpec,
    finetune,
    planned_runs,
    register_method,
    run_method,
)
from .report import format_table, machine_info, plot_results, write_json
from .run import Comparison, run_comparison

__all__ = [
    "BUDGETS",
    "Baseline",
    "Budget",
    "Comparison",
    "METHODS",
    "MethodContext",
    "MethodSpec",
    "cache_dir",
    "data_loaders",
    "finetune",
    "format_table",
    "get_budget",
    "machine_info",
    "planned_runs",
    "plot_results",
    "pretrained_baseline",
    "register_method",
    "run_comparison",
    "run_method",
    "write_json",
]
