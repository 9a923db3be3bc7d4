"""The region layout of one layer: tiles of output rows, each split into pruned, 2:4 and dense columns.

Vocabulary, on the GEMM view ``(rows, columns)`` of a weight (see :mod:`flexhinm.gemm`):

* a *tile* is ``tile_rows`` output rows, taken in the order ``row_order`` (the identity unless an
  output-channel permutation moved rows between tiles);
* inside a tile, each column is a ``tile_rows x 1`` *column vector*, and every column vector is in
  exactly one region: *pruned* (0:4, all zeros), *N:M* (2:4 along each row) or *dense* (4:4);
* the N:M columns of a tile are stored in group order: entries ``4g .. 4g+3`` of ``nm_cols[t]`` form
  group ``g``, and ``nm_keep[t, r, j]`` says whether row ``r`` of the tile keeps column
  ``nm_cols[t, j]``.

Every tile of a layer has the same number of columns in each region, and each count is a multiple of
``m``. The layout stores only integers and tensors, so it saves and loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike

import torch

from ..gemm import from_gemm, gemm_shape, to_gemm

__all__ = ["RegionLayout"]


@dataclass
class RegionLayout:
    """Pruned / N:M / dense columns of every tile of one layer, and the N:M choices in each group.

    Attributes:
        shape: shape of the original weight (2-D, 3-D or 4-D).
        tile_rows: rows per tile ``V``; it divides the number of output rows.
        row_order: ``(rows,)`` int64 permutation; tile ``t`` is rows ``row_order[t*V:(t+1)*V]``.
        pruned_cols: ``(tiles, n_pruned)`` int64 column indices of the pruned region.
        nm_cols: ``(tiles, n_nm)`` int64 column indices of the N:M region, in group order.
        dense_cols: ``(tiles, n_dense)`` int64 column indices of the dense region.
        nm_keep: ``(tiles, tile_rows, n_nm)`` bool; exactly ``n`` of every ``m`` entries are True.
        n: weights kept per N:M group.
        m: N:M group size.
        method: name of the method that produced the layout (``"ovw"``, ``"hinm"``, ``"flexhinm"``).
        target_sparsity: the sparsity that was asked for.
    """

    shape: tuple[int, ...]
    tile_rows: int
    row_order: torch.Tensor
    pruned_cols: torch.Tensor
    nm_cols: torch.Tensor
    dense_cols: torch.Tensor
    nm_keep: torch.Tensor
    n: int = 2
    m: int = 4
    method: str = "flexhinm"
    target_sparsity: float = field(default=float("nan"))

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.validate()

    # ----------------------------------------------------------------------------- sizes
    @property
    def rows(self) -> int:
        """Output rows of the GEMM view."""
        return gemm_shape(self.shape)[0]

    @property
    def columns(self) -> int:
        """Columns (reduction length) of the GEMM view."""
        return gemm_shape(self.shape)[1]

    @property
    def num_tiles(self) -> int:
        """Number of tiles, ``rows // tile_rows``."""
        return self.rows // self.tile_rows

    @property
    def counts(self) -> tuple[int, int, int]:
        """Columns per tile in the ``(pruned, N:M, dense)`` regions."""
        return self.pruned_cols.shape[1], self.nm_cols.shape[1], self.dense_cols.shape[1]

    @property
    def vector_sparsity(self) -> float:
        """Fraction of column vectors that are pruned, ``v``."""
        return self.counts[0] / self.columns

    @property
    def sparsity(self) -> float:
        """Fraction of zeros in the mask: ``(n_pruned + n_nm * (m - n) / m) / columns``."""
        pruned, nm, _ = self.counts
        return (pruned + nm * (self.m - self.n) / self.m) / self.columns

    @property
    def tile_row_indices(self) -> torch.Tensor:
        """``(tiles, tile_rows)`` GEMM row indices of each tile."""
        return self.row_order.reshape(self.num_tiles, self.tile_rows)

    # ----------------------------------------------------------------------------- masks
    def mask_gemm(self) -> torch.Tensor:
        """Return the bool mask on the GEMM view, ``(rows, columns)``."""
        rows = self.tile_row_indices[:, :, None]
        mask = torch.zeros(self.rows, self.columns, dtype=torch.bool, device=self.row_order.device)
        mask[rows, self.dense_cols[:, None, :]] = True
        mask[rows, self.nm_cols[:, None, :]] = self.nm_keep
        return mask

    def mask(self) -> torch.Tensor:
        """Return the bool mask in the weight's own shape (``True`` = kept)."""
        return from_gemm(self.mask_gemm(), self.shape)

    def region_map(self) -> torch.Tensor:
        """Return ``(rows, columns)`` int8 codes on the GEMM view: 0 pruned, 1 N:M, 2 dense."""
        rows = self.tile_row_indices[:, :, None]
        codes = torch.zeros(self.rows, self.columns, dtype=torch.int8, device=self.row_order.device)
        codes[rows, self.nm_cols[:, None, :]] = 1
        codes[rows, self.dense_cols[:, None, :]] = 2
        return codes

    def retained_importance(self, scores: torch.Tensor) -> float:
        """Return the summed ``scores`` (weight-shaped) of the weights the mask keeps."""
        return float((to_gemm(scores).double() * self.mask_gemm()).sum())

    # ----------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ``ValueError`` if the layout breaks one of its invariants."""
        rows, columns = gemm_shape(self.shape)
        if self.tile_rows <= 0 or rows % self.tile_rows:
            raise ValueError(
                f"tile_rows={self.tile_rows} does not divide the {rows} output rows of a weight of "
                f"shape {self.shape}; choose a divisor such as 64, 32, 16 or 8"
            )
        tiles = rows // self.tile_rows
        if sorted(self.row_order.tolist()) != list(range(rows)):
            raise ValueError("row_order is not a permutation of the output rows")

        parts = (self.pruned_cols, self.nm_cols, self.dense_cols)
        for label, part in zip(("pruned_cols", "nm_cols", "dense_cols"), parts):
            if part.dim() != 2 or part.shape[0] != tiles or part.shape[1] % self.m:
                raise ValueError(
                    f"{label} has shape {tuple(part.shape)}; expected ({tiles}, a multiple of "
                    f"m={self.m})"
                )
        union = torch.cat(parts, dim=1).sort(dim=1).values
        if not torch.equal(union, torch.arange(columns, device=union.device).expand(tiles, -1)):
            raise ValueError("the three regions of every tile must partition its columns exactly")

        expected = (tiles, self.tile_rows, self.nm_cols.shape[1])
        if tuple(self.nm_keep.shape) != expected or self.nm_keep.dtype != torch.bool:
            raise ValueError(f"nm_keep must be bool of shape {expected}, got "
                             f"{self.nm_keep.dtype} {tuple(self.nm_keep.shape)}")
        kept = self.nm_keep.reshape(tiles, self.tile_rows, -1, self.m).sum(dim=-1)
        if not bool((kept == self.n).all()):
            raise ValueError(f"nm_keep must keep exactly n={self.n} of every m={self.m} entries")

    # ----------------------------------------------------------------------------- saving
    def state_dict(self) -> dict:
        """Return a dict of ints, floats, strings and tensors (``weights_only``-safe)."""
        return {
            "shape": list(self.shape),
            "tile_rows": self.tile_rows,
            "row_order": self.row_order.cpu(),
            "pruned_cols": self.pruned_cols.cpu(),
            "nm_cols": self.nm_cols.cpu(),
            "dense_cols": self.dense_cols.cpu(),
            "nm_keep": self.nm_keep.cpu(),
            "n": self.n,
            "m": self.m,
            "method": self.method,
            "target_sparsity": self.target_sparsity,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> RegionLayout:
        """Rebuild a layout from :meth:`state_dict` output (checked again on the way in)."""
        return cls(**{**state, "shape": tuple(state["shape"])})

    def save(self, path: str | PathLike) -> None:
        """Write the layout with ``torch.save``."""
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | PathLike) -> RegionLayout:
        """Read a layout written by :meth:`save` with ``torch.load(..., weights_only=True)``."""
        return cls.from_state_dict(torch.load(path, weights_only=True))
