"""Column counts per tile for a target sparsity: pruned ``n_p``, N:M ``n_q`` and dense ``n_d``.

A tile row of ``C`` columns with ``n_p`` pruned columns, ``n_q`` N:M columns and ``n_d`` dense columns
has ``n_p + n_q * (m - n) / m`` zeros. For 2:4 and a target sparsity ``t`` the exact solution is

    n_q = 2 (t C - n_p),    n_d = C + n_p - 2 t C,    kept per row = n_d + n_q / 2 = (1 - t) C,

for any ``n_p`` in ``[max(0, 2t - 1) C, t C]``. Every count must be a multiple of ``m``, so ``t C`` is
usually not reachable exactly. The rounding rule used here:

1. among all count triples the method allows, find the zero count per row ``z`` closest to ``t C``
   (a tie goes to the larger ``z``, so the layer is never less sparse than asked in a tie);
2. the candidates are all allowed triples with exactly that ``z``, so every candidate of a layer
   has the same sparsity, and the boundary search compares only the split between regions;
3. a ``z`` that would prune every column is replaced by the closest one that keeps a weight,
   because a layer of zeros cuts the network at that point.

Apart from rule 3, the sparsity reached differs from the target by at most half of the smallest
step the method can take per row: one column for FlexHiNM and HiNM with 2:4, two columns (half a
group of 4) for OVW. Both are within one group of ``m`` columns per tile row. Rule 3 only applies
to narrow layers at high sparsity, e.g. 8 columns at HiNM 87.5 % reach 75 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["REGION_METHODS", "RegionCounts", "check_region_method", "feasible_vector_range",
           "region_counts", "select_vector_sparsity"]

REGION_METHODS = {
    "ovw": "outer-vector-wise: prune whole column vectors only (v = t, no N:M region)",
    "hinm": "hierarchical N:M: prune v = 2t - 1 of the column vectors, 2:4 on the rest (no dense region)",
    "flexhinm": "three regions per tile (pruned, 2:4, dense) with v searched or given",
}

_TIE = 1e-9


@dataclass(frozen=True)
class RegionCounts:
    """Columns per tile in the pruned, N:M and dense regions (each a multiple of ``m``)."""

    pruned: int
    nm: int
    dense: int

    @property
    def columns(self) -> int:
        """Total columns per tile."""
        return self.pruned + self.nm + self.dense

    def sparsity(self, n: int = 2, m: int = 4) -> float:
        """Fraction of zeros in a tile with these counts."""
        return (self.pruned + self.nm * (m - n) / m) / self.columns


def check_region_method(method: object) -> str:
    """Return ``method`` if it names a region method, else raise ``ValueError`` listing them."""
    if method not in REGION_METHODS:
        choices = ", ".join(f"{name!r} ({text})" for name, text in REGION_METHODS.items())
        raise ValueError(f"unknown region method {method!r}; choose one of {choices}")
    return method


def feasible_vector_range(sparsity: float, n: int = 2, m: int = 4) -> tuple[float, float]:
    """Return the interval ``[max(0, (t - f) / (1 - f)), t]`` of vector sparsity ``v``, ``f = 1 - n/m``.

    For 2:4 (``f = 0.5``) this is ``[max(0, 2t - 1), t]``.

    Example:
        >>> feasible_vector_range(0.75)
        (0.5, 0.75)
    """
    nm_zeros = 1 - n / m
    return max(0.0, (sparsity - nm_zeros) / (1 - nm_zeros)), sparsity


def _nearest(target: float, options: list[int]) -> int:
    # The closest option; a tie goes to the larger one.
    best = options[0]
    for option in options[1:]:
        gap, best_gap = abs(option - target), abs(best - target)
        if gap < best_gap - _TIE or (abs(gap - best_gap) <= _TIE and option > best):
            best = option
    return best


def region_counts(
    columns: int, sparsity: float, method: str = "flexhinm", *, n: int = 2, m: int = 4
) -> list[RegionCounts]:
    """Return every allowed count triple of ``method`` at ``sparsity``, by increasing ``pruned``.

    Args:
        columns: columns per tile (the GEMM row length), a multiple of ``m``.
        sparsity: target fraction of zeros ``t`` in ``[0, 1)``.
        method: ``"ovw"`` (one triple, no N:M columns), ``"hinm"`` (one triple, no dense columns) or
            ``"flexhinm"`` (every split with the same, closest reachable sparsity).
        n: weights kept per N:M group.
        m: group size; every count is a multiple of ``m``.

    Returns:
        A non-empty list of :class:`RegionCounts`, all with the same sparsity (see the module
        docstring for the rounding rule).

    Raises:
        ValueError: for an unknown method, or ``method="hinm"`` with ``sparsity < 1 - n/m``.

    Example:
        >>> [c.pruned for c in region_counts(64, 0.75)]
        [32, 36, 40, 44, 48]
        >>> region_counts(64, 0.75, "hinm")
        [RegionCounts(pruned=32, nm=32, dense=0)]
    """
    check_region_method(method)
    groups = columns // m
    zeros_per_group = m - n
    target = sparsity * columns

    if method == "ovw":
        pruned = _nearest(target / m, [math.floor(target / m), math.ceil(target / m)])
        pruned = min(max(pruned, 0), groups - 1)
        return [RegionCounts(pruned * m, 0, (groups - pruned) * m)]

    if method == "hinm":
        if sparsity < 1 - n / m - _TIE:
            raise ValueError(
                f"method='hinm' needs sparsity >= {1 - n / m} (got sparsity={sparsity}): HiNM prunes "
                f"v = (t - {1 - n / m}) / {n / m} of the column vectors and applies {n}:{m} to all "
                f"others, so it cannot be less sparse than {n}:{m}; use method='flexhinm' or 'nm'"
            )
        exact = (target - zeros_per_group * groups) / n
        pruned = _nearest(exact, [math.floor(exact), math.ceil(exact)])
        pruned = min(max(pruned, 0), groups - 1)
        return [RegionCounts(pruned * m, (groups - pruned) * m, 0)]

    # FlexHiNM: for each pruned group count the closest zero count, then the best over all.
    reachable = set()
    for pruned in range(groups + 1):
        exact = (target - m * pruned) / zeros_per_group
        for nm in (math.floor(exact), math.ceil(exact)):
            nm = min(max(nm, 0), groups - pruned)
            reachable.add(m * pruned + zeros_per_group * nm)
    zeros = _nearest(target, sorted(reachable - {columns}))

    candidates = []
    for pruned in range(groups + 1):
        rest = zeros - m * pruned
        if rest < 0 or rest % zeros_per_group:
            continue
        nm = rest // zeros_per_group
        if nm <= groups - pruned:
            candidates.append(RegionCounts(pruned * m, nm * m, (groups - pruned - nm) * m))
    assert candidates, (columns, sparsity, n, m)
    return candidates


def select_vector_sparsity(
    candidates: list[RegionCounts], vector_sparsity: float, sparsity: float, *, n: int = 2, m: int = 4
) -> RegionCounts:
    """Return the candidate whose pruned fraction is closest to ``vector_sparsity``.

    A tie goes to the candidate with fewer pruned columns. Values up to one group of ``m`` columns
    outside the feasible range are accepted and end at the nearest candidate, because rounding the
    counts to groups can move the ends of the range by that much.

    Raises:
        TypeError: if ``vector_sparsity`` is not a number.
        ValueError: if ``vector_sparsity`` lies outside the feasible range of ``sparsity``.
    """
    if isinstance(vector_sparsity, bool) or not isinstance(vector_sparsity, (int, float)):
        raise TypeError(f"vector_sparsity must be a number or None, got {vector_sparsity!r}")
    low, high = feasible_vector_range(sparsity, n, m)
    slack = m / candidates[0].columns + _TIE
    if math.isnan(vector_sparsity) or not low - slack <= vector_sparsity <= high + slack:
        raise ValueError(
            f"vector_sparsity={vector_sparsity} is outside the feasible range [{low:.4g}, "
            f"{high:.4g}] for sparsity={sparsity} with {n}:{m}; v = t gives OVW and "
            f"v = max(0, (t - {1 - n / m}) / {n / m}) gives HiNM"
        )
    columns = candidates[0].columns
    gaps = [round(abs(c.pruned / columns - vector_sparsity), 12) for c in candidates]
    return candidates[min(range(len(candidates)), key=lambda i: (gaps[i], i))]
