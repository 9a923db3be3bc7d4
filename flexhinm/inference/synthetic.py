"""Random region layouts with chosen column counts, for timing and for tests.

Speed depends mainly on the number of columns in each region, not on which ones, so the benchmark
uses random layouts with the counts of HiNM and FlexHiNM at a target sparsity. For a layer with
``C`` columns at sparsity ``s``:

* whole-layer 2:4 keeps every column as 2:4 (sparsity 0.5);
* HiNM prunes ``C (2 s - 1)`` columns and keeps the rest as 2:4;
* FlexHiNM keeps ``C (1 - s) / 2`` dense and ``C (1 - s)`` 2:4 columns and prunes the rest,
  one of many mixes with sparsity ``s``, chosen so the three regions all have work.

Counts are rounded (2:4 counts to ``align``, dense counts to ``m``), so the achieved sparsity in
``layout.sparsity`` can differ slightly from the target.
"""

from __future__ import annotations

import torch

from .._checks import check_sparsity
from ..gemm import gemm_shape
from ..regions.layout import RegionLayout

__all__ = ["LAYOUT_METHODS", "synthetic_counts", "synthetic_layout"]

LAYOUT_METHODS = ("2:4", "hinm", "flexhinm")


def synthetic_counts(columns: int, *, method: str, sparsity: float, m: int = 4,
                  align: int = 16) -> tuple[int, int, int]:
    """Return ``(pruned, nm, dense)`` columns per tile for ``method`` at ``sparsity`` (2:4 groups).

    Args:
        columns: columns of the GEMM view; a multiple of ``m``.
        method: ``"2:4"``, ``"hinm"`` or ``"flexhinm"``.
        sparsity: target fraction of zeros, at least 0.5 for ``"hinm"`` and ``"flexhinm"``
            (ignored for ``"2:4"``).
        m: group size.
        align: the 2:4 count is rounded to a multiple of this when it is at least ``align``
            (16 fits the cuSPARSELt shape rule), and to a multiple of ``m`` otherwise.

    Example:
        >>> synthetic_counts(768, method="flexhinm", sparsity=0.75)
        (480, 192, 96)
        >>> synthetic_counts(768, method="hinm", sparsity=0.875)
        (576, 192, 0)
    """
    if method not in LAYOUT_METHODS:
        raise ValueError(f"method={method!r} is invalid; choose one of {list(LAYOUT_METHODS)}")
    if columns <= 0 or columns % m:
        raise ValueError(f"columns={columns} must be a positive multiple of m={m}")
    if method == "2:4":
        return 0, columns, 0

    sparsity = check_sparsity(sparsity)
    if sparsity < 0.5:
        raise ValueError(
            f"sparsity={sparsity} is below 0.5; {method} layouts start at the 50 % of 2:4 (use "
            f"method='2:4' for 0.5)"
        )

    if method == "hinm":
        dense = 0
        target = 2 * columns * (1 - sparsity)
    else:
        dense = _round_to(columns * (1 - sparsity) / 2, m)
        target = columns * (1 - sparsity)

    # Small layers round to m, since a multiple of align could be far from the target.
    step = max(align, m) if target >= align else m
    nm = min(_round_to(target, step), columns - dense)
    return columns - nm - dense, nm, dense


def _round_to(value: float, step: int) -> int:
    """Round ``value`` to the nearest multiple of ``step`` (halves round up)."""
    return int(value / step + 0.5) * step


def synthetic_layout(
    shape: tuple[int, ...],
    *,
    method: str,
    sparsity: float,
    tile_rows: int = 64,
    permute_rows: bool = True,
    seed: int = 0,
    align: int = 16,
) -> RegionLayout:
    """Build a random 2:4 region layout of ``shape`` with the counts of :func:`synthetic_counts`.

    Every tile gets its own random choice of columns for each region, the 2:4 columns get random
    groups and random kept pairs, and with ``permute_rows`` the rows are randomly reordered.

    Args:
        shape: weight shape (2-D, 3-D or 4-D).
        method: ``"2:4"``, ``"hinm"`` or ``"flexhinm"``.
        sparsity: target sparsity (ignored for ``"2:4"``).
        tile_rows: rows per tile; must divide the output rows.
        permute_rows: randomly reorder rows before tiling (as an output-channel permutation does).
        seed: seed of the CPU generator; the same seed gives the same layout.
        align: rounding of the 2:4 count, see :func:`synthetic_counts`.

    Returns:
        A validated :class:`~flexhinm.RegionLayout` on the CPU.

    Example:
        >>> layout = synthetic_layout((8, 16), method="hinm", sparsity=0.75, tile_rows=4)
        >>> layout.counts, layout.sparsity
        ((8, 8, 0), 0.75)
    """
    rows, columns = gemm_shape(shape)
    pruned, nm, dense = synthetic_counts(columns, method=method, sparsity=sparsity, align=align)
    if tile_rows <= 0 or rows % tile_rows:
        raise ValueError(f"tile_rows={tile_rows} does not divide the {rows} output rows of shape {shape}")
    tiles = rows // tile_rows
    generator = torch.Generator().manual_seed(seed)

    row_order = torch.randperm(rows, generator=generator) if permute_rows else torch.arange(rows)
    column_order = torch.rand(tiles, columns, generator=generator).argsort(dim=1)
    dense_cols = column_order[:, :dense]
    nm_cols = column_order[:, dense:dense + nm]
    pruned_cols = column_order[:, dense + nm:]

    # Keep the two slots with the smallest random keys in every group of 4.
    keys = torch.rand(tiles, tile_rows, nm // 4, 4, generator=generator)
    ranks = keys.argsort(dim=-1).argsort(dim=-1)
    nm_keep = (ranks < 2).reshape(tiles, tile_rows, nm)

    return RegionLayout(
        shape=tuple(shape), tile_rows=tile_rows, row_order=row_order, pruned_cols=pruned_cols,
        nm_cols=nm_cols, dense_cols=dense_cols, nm_keep=nm_keep, n=2, m=4, method=method,
        target_sparsity=0.5 if method == "2:4" else float(sparsity),
    )
