"""Region allocation for the stages of gradual pruning.

The first stage allocates every eligible layer at its target; with ``permutation="gyro"`` it also
permutes the layer's output rows and regroups its N:M columns. Later stages pass the previous
stage's hardened layout to :func:`flexhinm.allocate_regions`, whose monotone allocation keeps the
row order, keeps every surviving N:M group with its columns and choice, and only removes weights.

**Boundary between the regions (FlexHiNM).** At target ``t`` the vector sparsity ``v`` may lie
anywhere in ``[lo(t), t]``, with ``lo(t) = max(0, 2t - 1)`` for 2:4 (the HiNM end). With
``boundary="final"`` (the default) the boundary search runs once, at the final target, before
the first stage. Its relative position ``p = (v - lo) / (t - lo)`` in that interval is then kept
at every stage: ``v_k = lo(t_k) + p * (t_k - lo(t_k))``. For 2:4 and ``t >= 0.5`` the dense
fraction is then ``p * (1 - t)``, and the N:M fraction is ``2 (1 - p)(1 - t)``. Both shrink as
``t`` grows, so each stage takes columns out of the dense region and removes N:M groups. Whether
a dense column moves into the N:M region (with fresh gates) or is pruned is decided by the
monotone allocation, which values a new group at ``n/m`` of its summed importance; on a synthetic
matrix with outlier columns most leaving columns were pruned, and stages after the first created
0 or 1 new groups. With
``boundary="stage"`` every stage searches its own boundary among the monotone candidates. On
magnitude scores, a first target of 50 % then puts every column into the N:M region, because
2:4 everywhere keeps more importance than pruning half the columns. No dense column is left for
later stages, and the run ends as HiNM.

With Gyro-Permutation the searched split is checked once more after the input phase, as in
:func:`flexhinm.permute.gyro_permute`. When the HiNM split (the fewest pruned columns) retains more
once its N:M columns are regrouped, the run uses it: ``p = 0`` with ``"final"``, or the HiNM split
of the first stage with ``"stage"``.

**Gyro-Permutation** runs once, before the first stage. Its output phase optimises the row order
for the run's final target, not for the first stage's. The output phase decides which column
vectors each tile can prune, so its row order is only as good as the kept-column count it
optimises for. At a first target of 50 %, HiNM prunes no column vector at all. The input phase
regroups the N:M columns of the first stage's layout, choosing among groupings by the final
layout each leads to (see :mod:`flexhinm.gradual.lookahead`). Groups that enter the N:M region
later are formed from dense columns in column order, without regrouping, because regrouping
would move the columns of hardened groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from ..eligibility import eligibility_report
from ..importance import compute_scores
from ..permute import gyro_output_permutation, output_kept_columns
from ..prune import prune_model
from ..prune_report import PruneReport
from ..regions import RegionLayout, allocate_regions, feasible_vector_range
from .config import GradualConfig
from .lookahead import best_after_regrouping, choose_first_grouping

__all__ = [
    "boundary_position",
    "changed_choices",
    "first_stage_layouts",
    "measured_report",
    "next_stage_layouts",
    "score_layers",
    "vector_sparsity_at",
]


def boundary_position(vector_sparsity: float, sparsity: float, *, n: int = 2, m: int = 4) -> float:
    """Return ``(v - lo) / (t - lo)``, where ``v`` lies in its feasible range ``[lo, t]`` (0 = HiNM end).

    Example:
        >>> boundary_position(0.625, 0.75)
        0.5
    """
    low, high = feasible_vector_range(sparsity, n, m)
    if high - low <= 1e-12:
        return 0.0
    return min(1.0, max(0.0, (vector_sparsity - low) / (high - low)))


def vector_sparsity_at(position: float, sparsity: float, *, n: int = 2, m: int = 4) -> float:
    """Return the vector sparsity at relative ``position`` of the feasible range of ``sparsity``.

    Example:
        >>> vector_sparsity_at(0.5, 0.5)
        0.25
    """
    low, high = feasible_vector_range(sparsity, n, m)
    return low + position * (high - low)


def score_layers(
    model: nn.Module, config: GradualConfig, *, loader: Iterable | None
) -> dict[str, torch.Tensor]:
    """Return the importance scores of every eligible layer (masked weights count as masked).

    The model must carry masks only, no gates: reading a gated weight draws gates.
    """
    eligibility = eligibility_report(model, m=config.m, include_head=config.include_head,
                                     exclude=config.exclude)
    names = eligibility.eligible
    if not names:
        raise ValueError(f"the model has no layer that can be pruned; skipped: {eligibility.skipped}")
    unknown = sorted(set(config.track) - set(names))
    if unknown:
        raise ValueError(
            f"track names {unknown} are not prunable weights of the model; choose from {names[:5]}"
            f"{' ...' if len(names) > 5 else ''}"
        )
    return compute_scores(model, names, config.score, loader=loader, **config.score_options)


def first_stage_layouts(
    model: nn.Module,
    sparsity: float,
    final_sparsity: float,
    *,
    config: GradualConfig,
    scores: Mapping[str, torch.Tensor],
    progress: bool = False,
) -> tuple[PruneReport, dict[str, RegionLayout], dict[str, float]]:
    """Allocate the first stage of every eligible layer.

    With ``progress`` and Gyro-Permutation, a tqdm bar advances once per layer, because the
    permutation can take minutes on a large network.

    Returns:
        ``(report, layouts, positions)``. ``report`` is the unpermuted :func:`flexhinm.prune_model`
        report, which fixes the layers and tile sizes. ``layouts`` maps parameter names to the
        first stage's layouts. ``positions`` maps names to the relative boundary that later stages
        keep (FlexHiNM with ``boundary="final"`` only).
    """
    report = prune_model(
        model, config.method, sparsity, score=config.score, tile_rows=config.tile_rows,
        n=config.n, m=config.m, exclude=config.exclude, include_head=config.include_head,
        scores=scores, apply=False,
    )
    method, n, m = config.method, config.n, config.m
    fixed_boundary = method == "flexhinm" and config.boundary == "final"
    layouts, positions = {}, {}
    bar = tqdm(report.layouts.items(), desc="Gyro-Permutation", unit="layer", leave=False,
               disable=not (progress and config.permutation == "gyro"))
    for name, unpermuted in bar:
        layer_scores, tile_rows = scores[name], unpermuted.tile_rows
        generator = torch.Generator().manual_seed(config.seed)

        def allocate(
            target: float, order: torch.Tensor | None, vector: float | None = None
        ) -> RegionLayout:
            return allocate_regions(layer_scores, target, method, tile_rows, vector, n=n, m=m,
                                    row_order=order)

        gyro = config.permutation == "gyro"
        order = None
        final = allocate(final_sparsity, None)
        if gyro:
            kept = output_kept_columns(unpermuted.columns, final_sparsity, method, n=n, m=m)
            permuted_order, _ = gyro_output_permutation(layer_scores, tile_rows, kept_columns=kept,
                                                        seed=generator)
            permuted_final = allocate(final_sparsity, permuted_order)
            # Like gyro_permute(fallback=True): keep the identity when it retains more.
            if permuted_final.retained_importance(layer_scores) >= final.retained_importance(layer_scores):
                order, final = permuted_order, permuted_final

        vector = None
        if fixed_boundary:
            if gyro:
                hinm = allocate(final_sparsity, order, vector_sparsity_at(0.0, final_sparsity, n=n, m=m))
                if hinm.counts != final.counts:
                    final, _ = best_after_regrouping(layer_scores, [final, hinm], generator)
            positions[name] = boundary_position(final.vector_sparsity, final_sparsity, n=n, m=m)
            vector = vector_sparsity_at(positions[name], sparsity, n=n, m=m)

        layout = allocate(sparsity, order, vector)
        if gyro:
            candidates = [layout]
            if method == "flexhinm" and not fixed_boundary:
                hinm = allocate(sparsity, order, vector_sparsity_at(0.0, sparsity, n=n, m=m))
                if hinm.counts != layout.counts:
                    candidates.append(hinm)
            layout, regrouped = best_after_regrouping(layer_scores, candidates, generator)
            final_vector = None
            if fixed_boundary:
                final_vector = vector_sparsity_at(positions[name], final_sparsity, n=n, m=m)
            layout = choose_first_grouping(layer_scores, layout, regrouped, final_sparsity,
                                           final_vector, generator)
        layouts[name] = layout
    return report, layouts, positions


def next_stage_layouts(
    sparsity: float,
    *,
    previous: Mapping[str, RegionLayout],
    positions: Mapping[str, float],
    scores: Mapping[str, torch.Tensor],
    config: GradualConfig,
) -> dict[str, RegionLayout]:
    """Allocate a later stage of every layer of ``previous``, monotone from it."""
    layouts = {}
    for name, layout in previous.items():
        vector = None
        if name in positions:
            vector = vector_sparsity_at(positions[name], sparsity, n=config.n, m=config.m)
        layouts[name] = allocate_regions(
            scores[name], sparsity, config.method, layout.tile_rows, vector, n=config.n,
            m=config.m, previous=layout,
        )
    return layouts


def measured_report(
    report: PruneReport,
    sparsity: float,
    layouts: Mapping[str, RegionLayout],
    scores: Mapping[str, torch.Tensor],
    permutation: str | None,
) -> PruneReport:
    """Return ``report`` with target, masks, layouts and per-layer numbers taken from ``layouts``.

    Zeros, counts and vector sparsity come from the final layouts. Kept and total importance are
    measured against ``scores``, the scores of the stage's allocation, in which weights pruned in
    earlier stages score 0.
    """
    layers = []
    for row in report.layers:
        layout = layouts.get(row.name)
        if layout is None:
            layers.append(row)
            continue
        mask = layout.mask()
        score = scores[row.name].double()
        layers.append(dataclasses.replace(
            row,
            zeros=int((~mask).sum()),
            retained=float((score * mask.to(score.device)).sum()),
            total=float(score.sum()),
            tile_rows=layout.tile_rows,
            counts=tuple(layout.counts),
            vector_sparsity=layout.vector_sparsity,
        ))
    return dataclasses.replace(
        report, target_sparsity=float(sparsity), layers=layers,
        masks={name: layout.mask() for name, layout in layouts.items()},
        layouts=dict(layouts), permutation=permutation,
    )


def changed_choices(
    before: RegionLayout, after: RegionLayout, live_groups: torch.Tensor
) -> tuple[int, int]:
    """Return ``(changed, total)`` rows of ``m`` gated weights whose kept set differs.

    Args:
        before: the layout whose ``nm_keep`` the gates started from.
        after: the hardened layout.
        live_groups: ``(tiles, groups)`` bool, the gated groups.
    """
    tiles, tile_rows, m = before.num_tiles, before.tile_rows, before.m
    old = before.nm_keep.reshape(tiles, tile_rows, -1, m).cpu()
    new = after.nm_keep.reshape(tiles, tile_rows, -1, m).cpu()
    differs = (old != new).any(dim=-1)
    live = live_groups.cpu()[:, None, :].expand_as(differs)
    return int((differs & live).sum()), int(live.sum())
