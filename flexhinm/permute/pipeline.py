"""Gyro-Permutation for one layer: output-channel phase, region allocation, input-channel phase.

:func:`gyro_permute` runs the steps in the order FlexHiNM-GP uses them:

1. the output-channel phase (:func:`~flexhinm.permute.gyro_output_permutation`) on the
   column-vector pruning objective at a fixed number of kept columns per tile;
2. the region allocation (:func:`flexhinm.allocate_regions`) with that row order; for FlexHiNM this
   includes the boundary search between the pruned, 2:4 and dense regions;
3. the input-channel phase (:func:`~flexhinm.permute.gyro_input_permutation`) on the N:M columns of
   every tile, which regroups them and recomputes ``nm_keep``;
4. for FlexHiNM with a searched split other than the HiNM split (the fewest pruned columns),
   steps 2 and 3 again at the HiNM split, keeping whichever layout retains more. The search in
   step 2 cannot see that the input phase may spread crowded important columns over different
   groups, after which 2:4 keeps them and the dense columns no longer pay.

The module also registers the permutation hooks ``"gyro"`` (region methods) and ``"channel24"``
(method ``"nm"``) of :func:`flexhinm.prune_model`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import torch

from .._checks import check_nm, check_sparsity
from ..masks import nm_mask
from ..prune import LayerRequest, register_permutation
from ..regions import RegionLayout, allocate_regions, region_counts
from ..regions.counts import check_region_method, select_vector_sparsity
from ..regions.tiles import check_scores
from .channel24 import channel_permutation_24, permuted_nm_mask
from .gyro import DEFAULT_SCHEDULE, gyro_input_permutation, gyro_output_permutation
from ._args import make_generator, single_torch_thread
from .stats import GyroStats, PhaseStats

__all__ = ["gyro_permute", "output_kept_columns"]


def output_kept_columns(
    columns: int,
    sparsity: float,
    method: str = "flexhinm",
    vector_sparsity: float | None = None,
    *,
    n: int = 2,
    m: int = 4,
) -> int:
    """Return the columns per tile that the output-channel phase keeps in its objective.

    The output phase runs before the boundary search, so FlexHiNM cannot know its final split yet.
    It uses the HiNM end of the feasible range (the fewest pruned columns, ``v = max(0, 2t - 1)``
    for 2:4), the split Gyro-Permutation was designed for. HiNM uses its own split, OVW keeps
    ``(1 - t)`` of the columns, and a FlexHiNM call with a given ``vector_sparsity`` uses that
    split.

    Example:
        >>> output_kept_columns(768, 0.75), output_kept_columns(768, 0.75, "ovw")
        (384, 192)
    """
    candidates = region_counts(columns, sparsity, method, n=n, m=m)
    if vector_sparsity is not None:
        counts = select_vector_sparsity(candidates, vector_sparsity, sparsity, n=n, m=m)
    else:
        counts = candidates[0]
    return counts.nm + counts.dense


@single_torch_thread
def gyro_permute(
    scores: torch.Tensor,
    sparsity: float,
    method: str = "flexhinm",
    tile_rows: int = 64,
    *,
    vector_sparsity: float | None = None,
    n: int = 2,
    m: int = 4,
    schedule: Sequence[int] = DEFAULT_SCHEDULE,
    out_failures: int = 1,
    in_failures: int = 3,
    output_columns: int | None = None,
    max_rounds: int = 1000,
    seed: int | torch.Generator = 0,
    fallback: bool = True,
    try_hinm_split: bool = True,
    progress: bool = False,
    return_stats: bool = False,
) -> RegionLayout | tuple[RegionLayout, GyroStats]:
    """Allocate the regions of one layer after Gyro-Permutation of its output and input channels.

    Args:
        scores: non-negative importance shaped like the weight (2-D, 3-D or 4-D), any float dtype.
        sparsity: target fraction of zeros ``t`` in ``[0, 1)``.
        method: ``"flexhinm"``, ``"hinm"`` or ``"ovw"`` (output phase only, OVW has no N:M region).
        tile_rows: rows per tile ``V``; it must divide the output rows.
        vector_sparsity: FlexHiNM only: a fixed fraction ``v`` of pruned column vectors (``None``
            searches it after the output phase).
        n: weights kept per N:M group.
        m: N:M group size; it must divide the GEMM row length.
        schedule: rows sampled per tile in each output-phase step, each in ``[1, tile_rows]``.
        out_failures: rejected rounds that end one step of the output phase.
        in_failures: rejected rounds after which a tile ends the input phase.
        output_columns: columns per tile kept by the output phase's objective; ``None`` uses
            :func:`output_kept_columns`.
        max_rounds: rounds at most per output-phase step and per tile in the input phase.
        seed: int seed or a CPU ``torch.Generator``; the same seed gives the same layout.
        fallback: also allocate without the output permutation and keep that row order instead
            when it retains more importance before the input phase. The output phase optimises the
            column-vector objective at one split, so on rare layers its order is worse for the
            split the allocation picks. With ``fallback`` the result never retains less than the
            unpermuted allocation.
        try_hinm_split: FlexHiNM with ``vector_sparsity=None`` only: when the searched split
            prunes more columns than the HiNM split (the fewest pruned columns that reach the
            target), also allocate and regroup at the HiNM split from the same row order and random
            state, and return that layout when it retains strictly more. For ``sparsity >= 0.5``
            the result then never retains less than ``gyro_permute(..., "hinm", seed=seed)`` with
            the same arguments. It costs a second input phase on such layers only.
        progress: show tqdm bars.
        return_stats: also return a :class:`~flexhinm.permute.GyroStats`.

    Returns:
        The :class:`~flexhinm.RegionLayout` (on the device of ``scores``). Its ``row_order`` is the
        output order and the order of ``nm_cols`` in each tile is the grouping; ``mask()`` is in
        the weight's original coordinates. With ``return_stats``, ``(layout, stats)``.

    Raises:
        ValueError: for an unknown method, a bad sparsity or ``vector_sparsity``, a tile size that
            does not divide the rows, an invalid schedule or failure limit, or NaN, infinite or
            negative scores.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> scores = torch.rand(32, 64) ** 4
        >>> layout, stats = gyro_permute(scores, 0.75, "hinm", tile_rows=8, return_stats=True)
        >>> layout.counts, layout.sparsity
        ((32, 32, 0), 0.75)
        >>> stats.retained >= stats.retained_unpermuted
        True
    """
    started = time.perf_counter()
    check_region_method(method)
    check_nm(n, m)
    sparsity = check_sparsity(sparsity)
    gemm = check_scores(scores, m=m)
    generator = make_generator(seed)
    if output_columns is None:
        output_columns = output_kept_columns(gemm.shape[1], sparsity, method, vector_sparsity,
                                             n=n, m=m)

    row_order, output_stats = gyro_output_permutation(
        scores, tile_rows, kept_columns=output_columns, schedule=schedule,
        max_failures=out_failures, max_rounds=max_rounds, seed=generator, progress=progress,
    )
    state = generator.get_state()

    def finish(vector: float | None) -> tuple[RegionLayout, float, bool, PhaseStats | None]:
        # Allocation with the output order (or the identity, when it retains more), then the
        # input phase. Every call starts from the same random state, so candidates compare fairly.
        generator.set_state(state)
        layout = allocate_regions(scores, sparsity, method, tile_rows, vector, n=n, m=m,
                                  row_order=row_order)
        unpermuted, order_used = float("nan"), True
        if fallback:
            plain = allocate_regions(scores, sparsity, method, tile_rows, vector, n=n, m=m)
            unpermuted = plain.retained_importance(scores)
            if unpermuted > layout.retained_importance(scores):
                layout, order_used = plain, False
        input_stats = None
        if method != "ovw" and layout.counts[1] > 0:
            layout, input_stats = gyro_input_permutation(
                scores, layout, max_failures=in_failures, max_rounds=max_rounds,
                seed=generator, progress=progress,
            )
        return layout, unpermuted, order_used, input_stats

    result = finish(vector_sparsity)
    hinm_split_used = False
    if try_hinm_split and method == "flexhinm" and vector_sparsity is None:
        hinm_end = region_counts(gemm.shape[1], sparsity, method, n=n, m=m)[0]
        if result[0].counts[0] != hinm_end.pruned:
            candidate = finish(hinm_end.pruned / hinm_end.columns)
            if candidate[0].retained_importance(scores) > result[0].retained_importance(scores):
                result, hinm_split_used = candidate, True
    layout, unpermuted, order_used, input_stats = result

    if not return_stats:
        return layout
    stats = GyroStats(
        output=output_stats, input=input_stats, retained_unpermuted=unpermuted,
        retained=layout.retained_importance(scores), output_order_used=order_used,
        seconds=time.perf_counter() - started, hinm_split_used=hinm_split_used,
    )
    return layout, stats


def _gyro_hook(request: LayerRequest) -> RegionLayout:
    """``prune_model(..., permutation="gyro")``: Gyro-Permutation for one region-method layer."""
    if request.method not in ("ovw", "hinm", "flexhinm"):
        raise ValueError(f"permutation='gyro' needs a region method ('ovw', 'hinm' or "
                         f"'flexhinm'), got method={request.method!r}; use 'channel24' for 'nm'")
    if request.previous is not None:
        # Gradual stages keep the permutation of the first stage. The monotone allocation keeps
        # its output order, and regrouping would break the N:M groups that survive.
        return request.allocate()
    return gyro_permute(
        request.scores, request.sparsity, request.method, request.tile_rows,
        vector_sparsity=request.vector_sparsity, n=request.n, m=request.m,
    )


def _channel24_hook(request: LayerRequest) -> torch.Tensor:
    """``prune_model(..., method="nm", permutation="channel24")``: permuted 2:4 mask of one layer."""
    if request.method != "nm":
        raise ValueError(f"permutation='channel24' applies to method='nm' only, got "
                         f"method={request.method!r}; use 'gyro' for region methods")
    channels = request.scores.shape[1]
    if channels % request.m or request.m > 4:
        warnings.warn(
            f"{request.name}: the 2:4 channel permutation needs m <= 4 dividing the {channels} "
            f"input channels, got m={request.m}; using the unpermuted N:M mask",
            UserWarning, stacklevel=2,
        )
        return nm_mask(request.scores, request.n, request.m)
    order, _ = channel_permutation_24(request.scores, n=request.n, m=request.m)
    return permuted_nm_mask(request.scores, order, n=request.n, m=request.m)


register_permutation("gyro", _gyro_hook)
register_permutation("channel24", _channel24_hook)
