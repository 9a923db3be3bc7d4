"""Choose the first stage's N:M grouping by the layout it leads to at the final target.

Later stages keep every surviving N:M group with its columns and remove whole groups (see
:func:`flexhinm.regions.monotone.allocate_monotone`), so the grouping chosen in the first stage is
also the one from which the last stage prunes. Regrouping for the first target alone spreads the
important columns of a tile over many groups, one or two per group, because 2:4 then keeps them
all. At a high final target whole groups are pruned, and the important columns in them go too.
One case: a 64 x 64 layer with 8 important columns, FlexHiNM to 87.5 % in four stages. The final
masks kept 31 % of the weight magnitude with that grouping, 43 % without Gyro-Permutation, and
47 % with the choice below (``tests/test_gradual_lookahead.py`` rebuilds the case).

:func:`choose_first_grouping` therefore compares three groupings of the first stage's N:M columns:
regrouped for the first target, the final target's regrouped groups placed first, and the
grouping as allocated. For each it runs the monotone allocation straight to the final target on
the same scores and keeps the grouping whose final layout retains the most importance. A tie goes
to the earlier one in that list, so a single-stage run keeps the first-target regrouping.
"""

from __future__ import annotations

import dataclasses

import torch

from ..gemm import to_gemm
from ..permute import gyro_input_permutation
from ..regions import RegionLayout, allocate_regions, nm_keep_for

__all__ = ["best_after_regrouping", "choose_first_grouping", "lead_with_groups"]


def best_after_regrouping(
    scores: torch.Tensor, candidates: list[RegionLayout], generator: torch.Generator
) -> tuple[RegionLayout, RegionLayout]:
    """Regroup every candidate's N:M columns and return the best as ``(layout, regrouped)``.

    Each candidate is regrouped from the generator's current state, which is restored after, so
    a later input phase draws the same numbers whichever candidate wins. A later candidate wins
    only if it retains strictly more, and a layout without N:M columns is kept as it is.
    """
    state = generator.get_state()
    best = None
    for layout in candidates:
        generator.set_state(state)
        regrouped = layout
        if layout.counts[1] > 0:
            regrouped, _ = gyro_input_permutation(scores, layout, seed=generator)
        retained = regrouped.retained_importance(scores)
        if best is None or retained > best[2]:
            best = (layout, regrouped, retained)
    generator.set_state(state)
    return best[0], best[1]


def lead_with_groups(scores: torch.Tensor, layout: RegionLayout, planned: RegionLayout) -> RegionLayout:
    """Return ``layout`` with the N:M groups of ``planned`` that fit its N:M columns placed first.

    Args:
        scores: importance shaped like the weight; it sets the new ``nm_keep`` (top ``n`` per group).
        layout: the layout whose N:M columns are reordered; nothing else changes.
        planned: a layout of the same tiles, usually at a higher sparsity. Each of its groups whose
            columns are all N:M columns of ``layout`` becomes a group of the result, in tile order.

    Returns:
        A :class:`~flexhinm.RegionLayout` with the same regions per tile as ``layout``. The
        remaining N:M columns follow the planned groups in their old order.
    """
    m = layout.m
    columns = []
    for tile in range(layout.num_tiles):
        available = layout.nm_cols[tile].tolist()
        free = set(available)
        lead = []
        for group in planned.nm_cols[tile].reshape(-1, m).tolist():
            if free.issuperset(group):
                lead.extend(group)
                free.difference_update(group)
        columns.append(lead + [column for column in available if column in free])

    nm_cols = torch.tensor(columns, dtype=torch.int64).reshape(layout.nm_cols.shape)
    nm_cols = nm_cols.to(layout.nm_cols.device)
    keep = nm_keep_for(to_gemm(scores).to(nm_cols.device), layout, nm_cols, n=layout.n, m=m)
    return dataclasses.replace(layout, nm_cols=nm_cols, nm_keep=keep)


def choose_first_grouping(
    scores: torch.Tensor,
    layout: RegionLayout,
    regrouped: RegionLayout,
    final_sparsity: float,
    final_vector: float | None,
    generator: torch.Generator,
) -> RegionLayout:
    """Return the grouping of the first stage whose monotone final layout retains the most.

    Args:
        scores: importance shaped like the weight.
        layout: the first stage's layout as allocated (row order already chosen).
        regrouped: ``layout`` regrouped for the first target.
        final_sparsity: the run's final target.
        final_vector: the vector sparsity the final stage will use, or None to search it.
        generator: the input phase's generator; its state is restored after use.

    Returns:
        ``regrouped``, ``layout`` with the final target's groups first, or ``layout`` itself.
    """
    if layout.counts[1] == 0:
        return regrouped

    def reach(first: RegionLayout) -> RegionLayout:
        return allocate_regions(scores, final_sparsity, layout.method, layout.tile_rows,
                                final_vector, n=layout.n, m=layout.m, previous=first)

    candidates = [regrouped]
    final = allocate_regions(scores, final_sparsity, layout.method, layout.tile_rows, final_vector,
                             n=layout.n, m=layout.m, row_order=layout.row_order)
    if final.counts[1] > 0:
        state = generator.get_state()
        final, _ = gyro_input_permutation(scores, final, seed=generator)
        generator.set_state(state)
        candidates.append(lead_with_groups(scores, layout, final))
    candidates.append(layout)

    retained = [reach(candidate).retained_importance(scores) for candidate in candidates]
    return candidates[max(range(len(candidates)), key=lambda index: (retained[index], -index))]
