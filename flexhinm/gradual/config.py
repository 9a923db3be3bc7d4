"""Settings of a gradual pruning run, checked once before any training starts.

:class:`GradualConfig` gathers every setting that changes the trained weights. A stage checkpoint
stores :meth:`GradualConfig.to_dict`, and a resume compares it with the current settings, so a run
never continues with other settings than the ones it started with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from .._checks import check_nm
from ..hardconcrete import HardConcrete
from ..importance import SCORE_METHODS
from ..regions import REGION_METHODS

__all__ = ["BOUNDARIES", "LR_SCHEDULES", "GradualConfig"]

BOUNDARIES = {
    "final": "search the FlexHiNM boundary once at the final target and keep its relative "
    "position in every stage",
    "stage": "search the boundary at every stage among the splits that only remove weights",
}

LR_SCHEDULES = {
    "stage": "cosine from lr to 0 within every stage (restarts at each new target)",
    "run": "one cosine from lr to 0 over all stages together",
}


_FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "gate_lr", "lambda_sparse", "lambda_constraint",
                 "init_log_alpha", "temperature", "temperature_factor", "temperature_floor",
                 "gamma", "zeta", "log_alpha_limit")


def _number(value: object, name: str, *, low: float, allow_low: bool, rule: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    above = value >= low if allow_low else value > low
    if not math.isfinite(value) or not above:
        raise ValueError(f"{name}={value} is invalid; {rule}")
    return value


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value} is invalid; it must be an int >= {minimum}")
    return value


@dataclass(frozen=True)
class GradualConfig:
    """Settings of :func:`flexhinm.gradual.gradual_prune`; see its docstring for each field.

    Raises:
        ValueError: for an unknown method, permutation or learning-rate schedule, and for a
            non-positive learning rate or temperature, ``gamma >= 0``, ``zeta <= 1``, negative
            loss weights, a temperature factor outside ``(0, 1]`` or a floor above the initial
            temperature. Also for other values outside their ranges; the message names the
            argument, its value and the rule.
        TypeError: for a value of the wrong type.
    """

    method: str = "flexhinm"
    permutation: str | None = "gyro"
    boundary: str = "final"
    learn_masks: bool = True
    score: str = "magnitude"
    score_options: dict = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    include_head: bool = False
    tile_rows: int = 64
    n: int = 2
    m: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    lr_schedule: str = "stage"
    gate_lr: float = 1e-2
    lambda_sparse: float = 0.0
    lambda_constraint: float = 1.0
    init_log_alpha: float = 2.0
    temperature: float = 2.0 / 3.0
    temperature_factor: float = 0.8
    temperature_updates: int = 4
    temperature_floor: float = 0.1
    gamma: float = -0.1
    zeta: float = 1.1
    log_alpha_limit: float = 4.6
    seed: int = 0
    track: tuple[str, ...] = field(default=())
    track_every: int = 10
    track_groups: int = 4

    def __post_init__(self) -> None:
        for name in ("exclude", "track"):
            if isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a list of names, got the string "
                                f"{getattr(self, name)!r}; write [{getattr(self, name)!r}]")
        # Lists from to_dict() or a caller become tuples, so equal settings compare equal.
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "track", tuple(self.track))
        if isinstance(self.score_options, Mapping):
            object.__setattr__(self, "score_options", dict(self.score_options))
        if self.method not in REGION_METHODS:
            raise ValueError(
                f"method={self.method!r} is not a region method; gradual pruning needs one of "
                f"{sorted(REGION_METHODS)} (use flexhinm.prune_model for 'nm' or 'unstructured')"
            )
        if self.permutation not in (None, "gyro"):
            raise ValueError(
                f"permutation={self.permutation!r} is invalid; use 'gyro' (Gyro-Permutation once, "
                f"before the first stage) or None (no permutation)"
            )
        if self.boundary not in BOUNDARIES:
            choices = "; ".join(f"{name!r}: {text}" for name, text in BOUNDARIES.items())
            raise ValueError(f"boundary={self.boundary!r} is invalid; choose {choices}")
        if self.lr_schedule not in LR_SCHEDULES:
            choices = "; ".join(f"{name!r}: {text}" for name, text in LR_SCHEDULES.items())
            raise ValueError(f"lr_schedule={self.lr_schedule!r} is invalid; choose {choices}")
        for name in ("learn_masks", "nesterov", "include_head"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.score not in SCORE_METHODS:
            raise ValueError(f"score={self.score!r} is invalid; choose one of {sorted(SCORE_METHODS)}")
        plain = (int, float, str, bool, type(None))
        if not isinstance(self.score_options, dict) or not all(
                isinstance(key, str) and type(value) in plain
                for key, value in self.score_options.items()):
            raise TypeError(f"score_options must be a dict of keyword arguments for "
                            f"compute_scores with plain values (int, float, str, bool, None), "
                            f"got {self.score_options!r}")
        if not all(isinstance(name, str) for name in self.exclude):
            raise TypeError(f"exclude must be a list of module names, got {list(self.exclude)!r}")
        check_nm(self.n, self.m)
        _count(self.tile_rows, "tile_rows", 1)

        positive = "it must be a positive finite number"
        _number(self.lr, "lr", low=0.0, allow_low=False, rule=positive)
        _number(self.gate_lr, "gate_lr", low=0.0, allow_low=False, rule=positive)
        _number(self.weight_decay, "weight_decay", low=0.0, allow_low=True,
                rule="it must be a finite number >= 0")
        momentum = _number(self.momentum, "momentum", low=0.0, allow_low=True,
                           rule="use a value in [0, 1) such as 0.9")
        if momentum >= 1.0:
            raise ValueError(f"momentum={momentum} is invalid; use a value in [0, 1) such as 0.9")
        for name in ("lambda_sparse", "lambda_constraint"):
            _number(getattr(self, name), name, low=0.0, allow_low=True,
                    rule="loss weights must be finite and >= 0 (a negative weight rewards the "
                    "penalty it should minimise)")
        _number(self.init_log_alpha, "init_log_alpha", low=0.0, allow_low=True,
                rule="it must be a finite number >= 0 (open gates start at +init_log_alpha)")
        _number(self.log_alpha_limit, "log_alpha_limit", low=0.0, allow_low=False,
                rule="log_alpha is clamped to [-limit, limit], so the limit must be positive "
                "(4.6 is about log 100)")

        temperature = _number(self.temperature, "temperature", low=0.0, allow_low=False,
                              rule="the Hard Concrete temperature must be a positive finite "
                              "number (2/3 is the usual start)")
        factor = _number(self.temperature_factor, "temperature_factor", low=0.0, allow_low=False,
                         rule="annealing multiplies the temperature by a factor in (0, 1]")
        if factor > 1.0:
            raise ValueError(f"temperature_factor={factor} is invalid; annealing lowers the "
                             f"temperature, so use a factor in (0, 1], for example 0.8")
        floor = _number(self.temperature_floor, "temperature_floor", low=0.0, allow_low=False,
                        rule="the lowest temperature must be a positive finite number")
        if floor > temperature:
            raise ValueError(f"temperature_floor={floor} is above temperature={temperature}; "
                             f"choose a floor <= the initial temperature")
        _count(self.temperature_updates, "temperature_updates", 1)

        # HardConcrete checks gamma < 0 < 1 < zeta with its own messages.
        HardConcrete((), temperature=temperature, gamma=self.gamma, zeta=self.zeta)

        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed={self.seed!r} is invalid; use an int in [0, 2**32)")
        if not all(isinstance(name, str) for name in self.track):
            raise TypeError(f"track must be a list of parameter names, got {list(self.track)!r}")
        _count(self.track_every, "track_every", 1)
        _count(self.track_groups, "track_groups", 1)

        # NumPy floats pass the checks above but would not load with weights_only=True.
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, float(getattr(self, name)))

    def to_dict(self) -> dict:
        """Return the settings as a dict of plain values (``exclude`` and ``track`` as lists)."""
        values = asdict(self)
        values["exclude"] = list(self.exclude)
        values["track"] = list(self.track)
        return values
