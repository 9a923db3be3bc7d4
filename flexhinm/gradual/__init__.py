"""Gradual pruning of FlexHiNM-GP: monotone stages, Hard Concrete 2:4 masks, exact resume.

* :func:`gradual_prune`: the driver. Each stage allocates regions at a higher target, gates the
  N:M groups that entered the N:M region, trains weights and gates, hardens the gates and writes a
  checkpoint.
* :class:`Stage`, :func:`default_stage_plan`, :func:`check_stage_plan`, :func:`split_steps`: stage
  plans counted in optimizer steps, so a fixed fine-tuning budget can be split into stages.
* :func:`stage_temperature`: the gate temperature schedule, scaled to the stage length.
* :class:`GradualResult`, :class:`StageRecord`, :class:`GateTracker`: what a run records.
* :mod:`flexhinm.gradual.state`: stage checkpoints that load with
  ``torch.load(..., weights_only=True)``.
"""

from .config import LR_SCHEDULES, GradualConfig
from .stages import Stage, check_stage_plan, default_stage_plan, split_steps, stage_temperature
from .records import QUANTILES, GateTracker, GradualResult, StageRecord
from .state import read_stage_checkpoint, stage_checkpoint_path, stage_checkpoints
from .driver import gradual_prune

__all__ = [
    "LR_SCHEDULES",
    "QUANTILES",
    "GateTracker",
    "GradualConfig",
    "GradualResult",
    "Stage",
    "StageRecord",
    "check_stage_plan",
    "default_stage_plan",
    "gradual_prune",
    "read_stage_checkpoint",
    "split_steps",
    "stage_checkpoint_path",
    "stage_checkpoints",
    "stage_temperature",
]
