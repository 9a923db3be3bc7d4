"""Stage checkpoints of gradual pruning: written after every stage, read to resume exactly.

A stage checkpoint is an ordinary :func:`flexhinm.train.save_checkpoint` file. It contains the
model (dense weights and the hardened masks), the SGD state, the scheduler state when one cosine
spans the run, and the random state of every generator. Its ``extra["gradual"]`` entry contains
the rest, as tensors and plain values:

* ``config``, ``stages``, ``steps_per_epoch`` and ``fingerprint`` (a hash of the unpruned starting
  model): a resume must match all four;
* ``completed_stages`` and ``global_step``: where training continues;
* ``layouts``: every pruned layer's :class:`~flexhinm.RegionLayout` as a state dict. A layout
  contains the output row order and the grouping of the N:M columns, so the permutations are in
  it too;
* ``records``, ``trajectory``, ``top1_pruned`` and ``report``: what the run has recorded so far.

All of it loads with ``torch.load(..., weights_only=True)``. Files are named
``gradual-stage-<k>.pt`` with ``k`` counted from 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..prune_report import LayerPruning, PruneReport
from ..regions import RegionLayout
from ..train import apply_checkpoint, read_checkpoint, save_checkpoint
from ..train.model_state import model_state
from .config import GradualConfig
from .records import GateTracker, StageRecord
from .stages import Stage

__all__ = [
    "STAGE_STATE_FORMAT",
    "RunState",
    "check_resume",
    "clear_stage_checkpoints",
    "model_fingerprint",
    "read_stage_checkpoint",
    "report_from_state",
    "report_state",
    "resume_run",
    "stage_checkpoint_path",
    "stage_checkpoints",
    "write_stage_checkpoint",
]

_logger = logging.getLogger(__name__)

STAGE_STATE_FORMAT = "flexhinm-gradual-stage"
_STATE_VERSION = 1
_FILE_PATTERN = re.compile(r"^gradual-stage-(\d+)\.pt$")


def stage_checkpoint_path(directory: str | PathLike, completed_stages: int) -> Path:
    """Return the file of the checkpoint written after ``completed_stages`` stages (from 1)."""
    return Path(directory) / f"gradual-stage-{completed_stages:02d}.pt"


def stage_checkpoints(directory: str | PathLike) -> list[tuple[int, Path]]:
    """Return ``(completed stages, path)`` of every stage checkpoint in ``directory``, in order."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _FILE_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def model_fingerprint(model: nn.Module) -> str:
    """Return a SHA-256 hex digest of the model's state (names, dtypes, shapes and values).

    Masked weights count with their dense values and their masks, so the digest identifies the
    starting point of a run on any device.
    """
    state, masks = model_state(model)
    digest = hashlib.sha256()
    for group, values in (("state", state), ("masks", masks)):
        for name in sorted(values):
            value = values[name]
            digest.update(f"{group}:{name}".encode())
            if isinstance(value, torch.Tensor):
                tensor = value.detach().cpu().contiguous()
                digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()


def report_state(report: PruneReport) -> dict:
    """Return the report without masks and layouts, as plain values for a checkpoint."""
    return {
        "method": report.method,
        "score": report.score,
        "target_sparsity": report.target_sparsity,
        "n": report.n,
        "m": report.m,
        "layers": [dataclasses.asdict(layer) for layer in report.layers],
        "skipped": dict(report.skipped),
        "permutation": report.permutation,
    }


def report_from_state(state: Mapping[str, Any], layouts: Mapping[str, RegionLayout]) -> PruneReport:
    """Rebuild a :class:`~flexhinm.PruneReport` from :func:`report_state` and the final layouts."""
    layers = []
    for values in state["layers"]:
        values = dict(values)
        for key in ("shape", "gemm_shape", "counts"):
            if values[key] is not None:
                values[key] = tuple(values[key])
        layers.append(LayerPruning(**values))
    return PruneReport(
        method=state["method"], score=state["score"], target_sparsity=state["target_sparsity"],
        n=state["n"], m=state["m"], layers=layers, skipped=dict(state["skipped"]),
        masks={name: layout.mask() for name, layout in layouts.items()}, layouts=dict(layouts),
        permutation=state["permutation"],
    )


def write_stage_checkpoint(
    directory: str | PathLike,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    state: Mapping[str, Any],
) -> Path:
    """Write the checkpoint after ``state["completed_stages"]`` stages and return its path.

    Args:
        directory: folder of the stage checkpoints (created if missing).
        model: the model with hardened masks only (no gates).
        optimizer: the SGD optimizer of the weights.
        scheduler: the run-long cosine scheduler, or ``None`` when every stage has its own.
        state: the ``extra["gradual"]`` entry described in the module docstring.
    """
    path = stage_checkpoint_path(directory, state["completed_stages"])
    payload = {"format": STAGE_STATE_FORMAT, "version": _STATE_VERSION, **state}
    schedulers = [scheduler] if scheduler is not None else []
    save_checkpoint(path, model, optimizer=[optimizer], scheduler=schedulers, extra={"gradual": payload})
    _logger.info("wrote stage checkpoint %s", path)
    return path


def read_stage_checkpoint(path: str | PathLike) -> dict[str, Any]:
    """Read a stage checkpoint and return the whole checkpoint dict (see the module docstring).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a flexhinm checkpoint or has no gradual stage state.
    """
    checkpoint = read_checkpoint(path)
    state = checkpoint["extra"].get("gradual")
    if not isinstance(state, dict) or state.get("format") != STAGE_STATE_FORMAT:
        raise ValueError(
            f"{str(path)!r} is a flexhinm checkpoint but not a gradual stage checkpoint (no "
            f"extra['gradual'] entry); pass a file written by gradual_prune(checkpoint_dir=...)"
        )
    if state.get("version") != _STATE_VERSION:
        raise ValueError(f"{str(path)!r} has gradual state version {state.get('version')!r}; this "
                         f"flexhinm reads version {_STATE_VERSION}")
    return checkpoint


def check_resume(
    state: Mapping[str, Any],
    *,
    config: Mapping[str, Any],
    stages: Sequence[Stage],
    steps_per_epoch: int,
    fingerprint: str,
    path: str | PathLike,
) -> None:
    """Raise ``ValueError`` unless the saved run has the same settings, plan, data and model."""
    differences = []
    saved_config = dict(state["config"])
    for key in sorted(set(saved_config) | set(config)):
        if saved_config.get(key) != config.get(key):
            differences.append(f"{key}: saved {saved_config.get(key)!r}, now {config.get(key)!r}")
    plan = [[stage.sparsity, stage.steps] for stage in stages]
    if [list(item) for item in state["stages"]] != plan:
        differences.append(f"stages: saved {state['stages']}, now {plan}")
    if state["steps_per_epoch"] != steps_per_epoch:
        differences.append(f"batches per epoch: saved {state['steps_per_epoch']}, now {steps_per_epoch}")
    if state["fingerprint"] != fingerprint:
        differences.append(
            "the starting model's weights differ from the saved run's (a run prunes and trains "
            "the model in place, so resume with a fresh copy of the dense model it started from)"
        )
    if differences:
        raise ValueError(
            f"stage checkpoint {str(path)!r} belongs to another run ({'; '.join(differences)}); "
            f"pass the same model and settings, resume=False to start over, or another "
            f"checkpoint_dir"
        )


def clear_stage_checkpoints(directory: str | PathLike) -> None:
    """Delete the stage checkpoints in ``directory`` (a fresh run would mix with them)."""
    found = stage_checkpoints(directory)
    if found:
        warnings.warn(
            f"resume=False: deleting {len(found)} stage checkpoint(s) of an earlier run in "
            f"{str(directory)!r}",
            UserWarning,
            stacklevel=3,
        )
    for _, path in found:
        path.unlink()


class RunState:
    """Everything of a run that changes from stage to stage, and that a stage checkpoint stores.

    Attributes:
        completed: stages finished.
        global_step: batches trained so far.
        layouts: parameter name to the current (hardened) layout.
        positions: parameter name to the relative FlexHiNM boundary kept in every stage (empty
            unless ``boundary="final"`` with method ``"flexhinm"``).
        records: one :class:`~flexhinm.gradual.StageRecord` per finished stage.
        tracker: the gate trajectory recorder.
        top1_pruned: accuracy right after the first stage's masks, before training.
        report: the last stage's :class:`~flexhinm.PruneReport` (``None`` before the first stage).
    """

    def __init__(self, tracker: GateTracker) -> None:
        self.completed = 0
        self.global_step = 0
        self.layouts: dict[str, RegionLayout] = {}
        self.positions: dict[str, float] = {}
        self.records: list[StageRecord] = []
        self.tracker = tracker
        self.top1_pruned: float | None = None
        self.report: PruneReport | None = None

    def state(self, config: GradualConfig, plan: Sequence[Stage], steps_per_epoch: int,
              fingerprint: str) -> dict:
        """Return the ``extra["gradual"]`` entry of a stage checkpoint."""
        return {
            "completed_stages": self.completed,
            "global_step": self.global_step,
            "config": config.to_dict(),
            "stages": [[stage.sparsity, stage.steps] for stage in plan],
            "steps_per_epoch": steps_per_epoch,
            "fingerprint": fingerprint,
            "layouts": {name: layout.state_dict() for name, layout in self.layouts.items()},
            "positions": dict(self.positions),
            "records": [record.to_dict() for record in self.records],
            "trajectory": list(self.tracker.entries),
            "top1_pruned": self.top1_pruned,
            "report": report_state(self.report) if self.report is not None else None,
        }

    def load(self, state: Mapping) -> None:
        """Restore the fields from the ``extra["gradual"]`` entry of a stage checkpoint."""
        self.completed = int(state["completed_stages"])
        self.global_step = int(state["global_step"])
        self.layouts = {name: RegionLayout.from_state_dict(values)
                        for name, values in state["layouts"].items()}
        self.positions = {name: float(value) for name, value in state["positions"].items()}
        self.records = [StageRecord.from_dict(values) for values in state["records"]]
        self.tracker.entries = list(state["trajectory"])
        self.top1_pruned = state["top1_pruned"]
        self.report = None
        if state["report"] is not None:
            self.report = report_from_state(state["report"], self.layouts)


def resume_run(
    directory: str | PathLike,
    run: RunState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    **expected: Any,
) -> str | None:
    """Load the latest stage checkpoint of ``directory`` into the objects given; return its path.

    Model, optimizer, scheduler (when given) and every random generator get the saved state, and
    ``run`` the saved progress. ``expected`` contains the keywords of :func:`check_resume`. Returns
    ``None`` when the folder has no stage checkpoint.

    Raises:
        ValueError: if the checkpoint belongs to another run or is not a stage checkpoint.
    """
    found = stage_checkpoints(directory)
    if not found:
        return None
    path = found[-1][1]
    checkpoint = read_stage_checkpoint(path)
    state = checkpoint["extra"]["gradual"]
    check_resume(state, path=path, **expected)
    apply_checkpoint(checkpoint, model, [optimizer], [scheduler] if scheduler is not None else [],
                     restore_rng=True)
    run.load(state)
    _logger.info("resumed from %s after stage %d", path, run.completed)
    return str(path)
