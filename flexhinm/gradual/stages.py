"""Stage plans of gradual pruning: target sparsities that only go up, each trained for some steps.

A plan is a list of :class:`Stage` objects. Stage lengths are counted in optimizer steps, not in
epochs. A fixed fine-tuning budget (``epochs * len(train_loader)`` steps) can then be shared out
over any number of stages. For example, four stages fit inside one epoch on a CPU, or take
20 epochs each on a GPU. :func:`default_stage_plan` places the targets on the cubic ramp of Zhu and
Gupta ("To prune, or not to prune", 2017) and splits the steps evenly. :func:`stage_temperature`
anneals the Hard Concrete temperature in a fixed number of drops per stage, so the anneal scales
with the stage length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .._checks import check_sparsity
from ..gates import temperature_at
from ..regions import cubic_stages

__all__ = [
    "Stage",
    "check_stage_plan",
    "default_stage_plan",
    "split_steps",
    "stage_temperature",
]


@dataclass(frozen=True)
class Stage:
    """One gradual pruning stage: prune to ``sparsity``, then train for ``steps`` optimizer steps.

    Attributes:
        sparsity: target fraction of zeros of every pruned layer, in ``[0, 1)``.
        steps: optimizer steps (batches) of training at this target, ``>= 1``.
    """

    sparsity: float
    steps: int


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name}={value} is invalid; it must be an int >= {minimum}")
    return value


def check_stage_plan(stages: Sequence[Stage | tuple[float, int]]) -> list[Stage]:
    """Return ``stages`` as :class:`Stage` objects after checking targets and lengths.

    Consecutive equal targets are allowed: a last stage at the final target then only fine-tunes
    the hardened masks.

    Args:
        stages: :class:`Stage` objects or ``(sparsity, steps)`` pairs, in training order.

    Returns:
        A new list of :class:`Stage`.

    Raises:
        TypeError: if an entry is neither a :class:`Stage` nor a pair, or its steps are not an int.
        ValueError: if ``stages`` is empty, a target lies outside ``[0, 1)``, a target is lower
            than the one before it, or a stage has fewer than 1 step.

    Example:
        >>> check_stage_plan([(0.5, 10), Stage(0.75, 5)])
        [Stage(sparsity=0.5, steps=10), Stage(sparsity=0.75, steps=5)]
    """
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
        raise TypeError(f"stages must be a list of Stage or (sparsity, steps) pairs, got {stages!r}")
    if not stages:
        raise ValueError("stages is empty; pass at least one stage, e.g. [Stage(0.75, 100)]")

    plan = []
    for index, entry in enumerate(stages):
        if isinstance(entry, Stage):
            sparsity, steps = entry.sparsity, entry.steps
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            sparsity, steps = entry
        else:
            raise TypeError(
                f"stages[{index}] must be a Stage or a (sparsity, steps) pair, got {entry!r}"
            )
        sparsity = check_sparsity(sparsity, f"stages[{index}].sparsity")
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"stages[{index}].steps must be an int, got {steps!r}")
        if steps < 1:
            raise ValueError(
                f"stages[{index}].steps={steps} is invalid; every stage trains for at least 1 "
                f"step, so give each stage a positive number of steps"
            )
        if plan and sparsity < plan[-1].sparsity:
            raise ValueError(
                f"stages[{index}].sparsity={sparsity} is lower than stages[{index - 1}].sparsity="
                f"{plan[-1].sparsity}; gradual pruning only adds zeros, so sort the targets "
                f"in increasing order"
            )
        plan.append(Stage(sparsity, steps))
    return plan


def split_steps(total_steps: int, num_stages: int) -> list[int]:
    """Split ``total_steps`` into ``num_stages`` lengths that differ by at most 1 step.

    The earlier stages get the extra steps, so the lengths sum to ``total_steps`` exactly.

    Raises:
        ValueError: if ``num_stages < 1`` or ``total_steps < num_stages``.

    Example:
        >>> split_steps(15, 4)
        [4, 4, 4, 3]
    """
    _check_count(num_stages, "num_stages", 1)
    _check_count(total_steps, "total_steps", 1)
    if total_steps < num_stages:
        raise ValueError(
            f"total_steps={total_steps} is fewer than num_stages={num_stages}; every stage needs "
            f"at least 1 step, so train longer or use fewer stages"
        )
    base, extra = divmod(total_steps, num_stages)
    return [base + 1 if index < extra else base for index in range(num_stages)]


def default_stage_plan(
    final_sparsity: float,
    total_steps: int,
    *,
    num_stages: int = 4,
    initial_sparsity: float | None = None,
    power: float = 3,
) -> list[Stage]:
    """Return ``num_stages`` stages on the cubic ramp to ``final_sparsity``, sharing ``total_steps``.

    Stage ``k`` gets the target ``cubic_sparsity(k)`` of :func:`flexhinm.cubic_stages` and a
    length from :func:`split_steps`. The default first target is ``min(0.5, 2/3 * final)``. For a
    final target of 75 % that is 50 %, the 2:4 level. Above that, the first target is capped at
    50 %, because HiNM's smallest sparsity with 2:4 is 50 %. Below 75 %, two thirds of the final
    target keep the first stage clearly less sparse than the last. This rule is the library's
    choice, not a published schedule.

    Args:
        final_sparsity: target of the last stage, in ``[0, 1)``.
        total_steps: optimizer steps of the whole run, e.g. ``epochs * len(train_loader)``.
        num_stages: number of stages, ``>= 1``.
        initial_sparsity: target of the first stage, at most ``final_sparsity``; default above.
        power: exponent of the ramp (3 for the cubic ramp, 1 for a linear one).

    Returns:
        A list of :class:`Stage` whose steps sum to ``total_steps``.

    Raises:
        ValueError: for a sparsity outside ``[0, 1)``, an initial target above the final one,
            ``num_stages < 1``, ``total_steps < num_stages`` or ``power <= 0``.

    Example:
        >>> [(round(stage.sparsity, 4), stage.steps) for stage in default_stage_plan(0.75, 15)]
        [(0.5, 4), (0.6759, 4), (0.7407, 4), (0.75, 3)]
    """
    final_sparsity = check_sparsity(final_sparsity, "final_sparsity")
    if initial_sparsity is None:
        initial_sparsity = min(0.5, 2.0 * final_sparsity / 3.0)
    initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
    if initial_sparsity > final_sparsity:
        raise ValueError(
            f"initial_sparsity={initial_sparsity} is above final_sparsity={final_sparsity}; "
            f"gradual pruning only adds zeros, so start at or below the final target"
        )
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
        raise ValueError(f"power={power!r} is invalid; use a positive number (3 for the cubic ramp)")

    lengths = split_steps(total_steps, num_stages)
    targets = cubic_stages(initial_sparsity, final_sparsity, num_stages, power=power)
    return [Stage(float(target), steps) for target, steps in zip(targets, lengths)]


def stage_temperature(
    step: int,
    stage_steps: int,
    *,
    initial: float = 2.0 / 3.0,
    factor: float = 0.8,
    updates: int = 4,
    floor: float = 0.1,
) -> float:
    """Return the gate temperature at ``step`` of a stage of ``stage_steps`` steps.

    The stage is cut into ``updates`` equal periods, and the temperature is multiplied by
    ``factor`` at the start of each period after the first:
    ``max(floor, initial * factor ** floor(step * updates / stage_steps))``. With 20-epoch stages
    and ``updates = 4`` this lowers the temperature every 5 epochs, the pace FlexHiNM uses. Fresh
    gates of a new stage start again at ``initial``.

    Args:
        step: steps done in this stage, in ``[0, stage_steps)``.
        stage_steps: length of the stage, ``>= 1``.
        initial: temperature of the first period, ``> 0``.
        factor: multiplier per period, in ``(0, 1]``.
        updates: number of periods per stage, ``>= 1``.
        floor: lowest temperature, in ``(0, initial]``.

    Raises:
        ValueError: if an argument is outside its range.

    Example:
        >>> [round(stage_temperature(s, 8), 4) for s in range(8)]
        [0.6667, 0.6667, 0.5333, 0.5333, 0.4267, 0.4267, 0.3413, 0.3413]
    """
    _check_count(stage_steps, "stage_steps", 1)
    _check_count(updates, "updates", 1)
    _check_count(step, "step", 0)
    if step >= stage_steps:
        raise ValueError(f"step={step} is outside the stage of {stage_steps} steps; count from 0")
    period = math.floor(step * updates / stage_steps)
    return temperature_at(period, initial=initial, factor=factor, every=1, floor=floor)
