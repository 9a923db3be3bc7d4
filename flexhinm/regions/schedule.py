"""Gradual pruning stages: target sparsities that only go up, and monotone layouts for each of them.

The ramp is the cubic schedule of Zhu and Gupta ("To prune, or not to prune", 2017): sparsity rises
fast at first, while many weights are redundant, and slowly near the end. Stage layouts are chained
with ``allocate_regions(..., previous=layout)`` so that every stage only removes weights (see
:mod:`flexhinm.regions.monotone`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import check_sparsity
from .allocation import allocate_regions
from .layout import RegionLayout

__all__ = ["allocate_stages", "check_stages", "cubic_sparsity", "cubic_stages"]


def cubic_sparsity(
    step: int | float,
    *,
    initial_sparsity: float,
    final_sparsity: float,
    start_step: int | float,
    end_step: int | float,
    power: int | float = 3,
) -> float:
    """Return the sparsity of the cubic ramp at ``step``.

    .. math::

        s(t) = s_f + (s_i - s_f) \\left(1 - \\frac{t - t_0}{t_1 - t_0}\\right)^{p}
        \\quad \\text{for } t_0 \\le t \\le t_1,

    with ``s(t) = s_i`` before ``t_0 = start_step`` and ``s(t) = s_f`` after ``t_1 = end_step``.
    ``p = power`` is 3 in Zhu and Gupta's schedule.

    Args:
        step: the current step (any unit: iterations, epochs or stage index).
        initial_sparsity: ``s_i`` in ``[0, 1)``.
        final_sparsity: ``s_f`` in ``[initial_sparsity, 1)``.
        start_step: ``t_0``.
        end_step: ``t_1 > t_0``.
        power: exponent ``p > 0``.

    Raises:
        ValueError: for sparsities outside ``[0, 1)``, a final sparsity below the initial one,
            ``end_step <= start_step`` or ``power <= 0``.

    Example:
        >>> cubic_sparsity(5, initial_sparsity=0.5, final_sparsity=0.9, start_step=0, end_step=10)
        0.85
    """
    initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
    final_sparsity = check_sparsity(final_sparsity, "final_sparsity")
    if final_sparsity < initial_sparsity:
        raise ValueError(
            f"final_sparsity={final_sparsity} is below initial_sparsity={initial_sparsity}; "
            f"a pruning ramp only adds zeros"
        )
    if not end_step > start_step:
        raise ValueError(f"end_step={end_step} must be greater than start_step={start_step}")
    if not power > 0:
        raise ValueError(f"power={power} must be positive (3 gives the cubic ramp)")

    if step <= start_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    remaining = 1 - (step - start_step) / (end_step - start_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * remaining**power


def cubic_stages(
    initial_sparsity: float, final_sparsity: float, num_stages: int, *, power: int | float = 3
) -> list[float]:
    """Return ``num_stages`` targets on the cubic ramp, the first ``initial_sparsity``, the last ``final_sparsity``.

    Stage ``k`` gets ``cubic_sparsity(k, start_step=0, end_step=num_stages - 1)``; one stage gives
    ``[final_sparsity]``.

    Example:
        >>> [round(s, 4) for s in cubic_stages(0.5, 0.75, 4)]
        [0.5, 0.6759, 0.7407, 0.75]
    """
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 1:
        raise ValueError(f"num_stages={num_stages!r} must be a positive int")
    if num_stages == 1:
        check_sparsity(initial_sparsity, "initial_sparsity")
        return [check_sparsity(final_sparsity, "final_sparsity")]
    return [
        cubic_sparsity(
            stage,
            initial_sparsity=initial_sparsity,
            final_sparsity=final_sparsity,
            start_step=0,
            end_step=num_stages - 1,
            power=power,
        )
        for stage in range(num_stages)
    ]


def check_stages(stages: Sequence[float]) -> list[float]:
    """Return ``stages`` as floats after checking each is in ``[0, 1)`` and none decreases.

    Raises:
        ValueError: if ``stages`` is empty, a value is outside ``[0, 1)`` or a target is lower than
            the one before it.
    """
    values = [check_sparsity(value, f"stages[{index}]") for index, value in enumerate(stages)]
    if not values:
        raise ValueError("stages is empty; pass at least one target sparsity, e.g. [0.5, 0.75]")
    for index in range(1, len(values)):
        if values[index] < values[index - 1]:
            raise ValueError(
                f"stages[{index}]={values[index]} is lower than stages[{index - 1}]="
                f"{values[index - 1]}; gradual stages only add zeros, so sort the targets"
            )
    return values


def allocate_stages(
    scores: torch.Tensor | Sequence[torch.Tensor],
    stages: Sequence[float],
    method: str = "flexhinm",
    tile_rows: int = 64,
    *,
    n: int = 2,
    m: int = 4,
    row_order: torch.Tensor | None = None,
) -> list[RegionLayout]:
    """Return one monotone layout per stage of one layer.

    Args:
        scores: weight-shaped non-negative importance, either one tensor for every stage or one per
            stage (scores usually change while the model trains between stages).
        stages: non-decreasing target sparsities, e.g. ``cubic_stages(0.5, 0.75, 4)``.
        method: ``"ovw"``, ``"hinm"`` or ``"flexhinm"`` (see :func:`flexhinm.allocate_regions`).
        tile_rows: rows per tile ``V``.
        n: weights kept per N:M group.
        m: N:M group size.
        row_order: output row order of the first stage, kept by every later stage.

    Raises:
        ValueError: for decreasing or out-of-range stages, a scores list whose length differs from
            ``stages``, or any error of :func:`flexhinm.allocate_regions`.

    Example:
        >>> scores = torch.rand(8, 32, generator=torch.Generator().manual_seed(0))
        >>> [layout.counts for layout in allocate_stages(scores, [0.5, 0.75], tile_rows=4)]
        [(4, 24, 4), (16, 16, 0)]
    """
    targets = check_stages(stages)
    if isinstance(scores, torch.Tensor):
        per_stage = [scores] * len(targets)
    else:
        per_stage = list(scores)
        if len(per_stage) != len(targets):
            raise ValueError(
                f"got {len(per_stage)} score tensors for {len(targets)} stages; pass one tensor "
                f"for all stages or one per stage"
            )

    layouts: list[RegionLayout] = []
    for stage_scores, target in zip(per_stage, targets):
        previous = layouts[-1] if layouts else None
        layouts.append(
            allocate_regions(
                stage_scores, target, method, tile_rows, n=n, m=m,
                row_order=row_order if previous is None else None, previous=previous,
            )
        )
    return layouts
