"""The tiled GEMM behind the compact FlexHiNM layers: each tile multiplies only its kept columns.

A :class:`~flexhinm.regions.RegionLayout` splits the GEMM view ``(rows, columns)`` of a weight into
tiles of ``tile_rows`` output rows (taken in ``row_order``). Each tile has the same number of dense,
2:4 and pruned columns. The compact layer stores, per tile, only the dense and 2:4 columns:

* ``input_index`` ``(tiles, kept)``: the input features each tile reads, dense columns first, then
  2:4 columns in group order;
* ``weight_tiles`` ``(tiles, kept, tile_rows)``: the weights of those columns, with the dropped half
  of each 2:4 group set to zero. They are stored transposed because ``torch.bmm`` ran 15-30 %
  faster with a row-major right operand than with a transposed view (torch 2.14.1, one thread of
  a 2-core x86 CPU, 3072 x 768 and 768 x 3072 HiNM layers);
* ``output_index`` ``(rows,)``: where each original output row sits in the tile-ordered output, so
  the output permutation is undone by one gather.

Pruned columns are neither stored nor gathered nor multiplied. The forward pass has two backends:

``"masked_dense"``
    One gather of the input and one ``torch.bmm`` over all tiles, with the 2:4 columns multiplied as
    a masked dense GEMM. Runs everywhere.
``"semi_structured"``
    Dense columns as one ``torch.bmm``; the 2:4 columns of each tile packed with
    ``to_sparse_semi_structured`` (CUDA, compute capability 8.0+, fp16/bf16). torch offers only 2-D
    semi-structured matmuls, and every tile reads its own input columns, so the 2:4 part is a
    batched GEMM. Any single 2-D GEMM for it (a block-diagonal weight, or every tile against every
    tile's input) does ``tiles`` times the work. Tiles whose 2:4 column lists are identical are
    stacked into one packed matrix (so whole-layer 2:4 is one GEMM), and each distinct list costs
    one semi-structured GEMM; with per-tile regions that is one GEMM per tile.

``"auto"`` picks ``"semi_structured"`` when :func:`~flexhinm.inference.semi_structured_support`
accepts every packed matrix and ``"masked_dense"`` otherwise.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_tensor
from ..gemm import to_gemm
from ..regions.layout import RegionLayout
from . import semi_structured

__all__ = ["COMPACT_BACKENDS", "CompactHiNMBase"]

_logger = logging.getLogger(__name__)

COMPACT_BACKENDS = ("auto", "masked_dense", "semi_structured")

# Every tile gathers its own copy of its input columns, tiles x kept values per token in all. On
# the CPU the tiles run in chunks whose gathered input stays near this size, because one gather for
# all tiles at 1024 tokens took longer than the GEMM itself (torch 2.14.1, 2-core x86 machine).
CPU_GATHER_BYTES = 4 * 2**20


class CompactHiNMBase(nn.Module):
    """Shared storage and GEMM of the compact Linear and Conv2d layers (built by their ``from_*``)."""

    input_index: torch.Tensor
    weight_tiles: torch.Tensor
    output_index: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        layout: RegionLayout,
        *,
        feature_map: torch.Tensor | None,
        dtype: torch.dtype | None,
        backend: str,
        sparse_backend: str,
    ) -> None:
        super().__init__()
        _check_arguments(weight, bias, layout, backend, sparse_backend)
        dtype = weight.dtype if dtype is None else dtype
        device = weight.device

        matrix = to_gemm(weight.detach())
        tiles = layout.tile_row_indices.to(device)
        dense_cols = layout.dense_cols.to(device)
        nm_cols = layout.nm_cols.to(device)
        columns = torch.cat((dense_cols, nm_cols), dim=1)

        # Gather every tile's kept columns: (tiles, tile_rows, dense + 2:4).
        gathered = matrix[tiles[:, :, None], columns[:, None, :]]
        n_dense = dense_cols.shape[1]
        keep = layout.nm_keep.to(device)
        gathered[:, :, n_dense:] = torch.where(keep, gathered[:, :, n_dense:], 0)

        # Conv2d reads the im2col matrix, whose feature order differs from the GEMM view's.
        input_index = columns if feature_map is None else feature_map.to(device)[columns]

        self.register_buffer("input_index", input_index.contiguous())
        self.register_buffer("weight_tiles", gathered.transpose(1, 2).to(dtype).contiguous())
        self.register_buffer("output_index", torch.argsort(layout.row_order.to(device)))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).contiguous())

        self.rows, self.columns = matrix.shape
        self.tile_rows = layout.tile_rows
        self.num_tiles = layout.num_tiles
        self.counts = layout.counts
        self.n_nm, self.n_dense = layout.counts[1], layout.counts[2]
        self.n, self.m = layout.n, layout.m
        self.backend = backend
        self.sparse_backend = sparse_backend
        self.rows_permuted = not torch.equal(layout.row_order.cpu(), torch.arange(self.rows))
        self._packed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._decision: tuple[object, str | None] | None = None

    # ----------------------------------------------------------------------------- counts
    @property
    def kept_columns(self) -> int:
        """Columns each tile stores and multiplies: dense plus 2:4 (pruned ones are skipped)."""
        return self.n_nm + self.n_dense

    def multiply_adds(self, tokens: int = 1) -> int:
        """Multiply-adds of one forward pass over ``tokens`` GEMM rows on the masked dense path."""
        return tokens * self.rows * self.kept_columns

    # ----------------------------------------------------------------------------- backend
    def resolved_backend(self) -> str:
        """Return the backend the next forward pass uses on the current device and dtype.

        Raises:
            ValueError: if ``backend="semi_structured"`` was requested and packing is not possible.
        """
        if self.backend == "masked_dense":
            return "masked_dense"
        reason = self.semi_structured_reason()
        if reason is None:
            return "semi_structured"
        if self.backend == "semi_structured":
            raise ValueError(f"backend='semi_structured' is not possible: {reason}; use backend='auto'")
        return "masked_dense"

    def semi_structured_reason(self) -> str | None:
        """Return why the 2:4 columns cannot run on Sparse Tensor Cores here, or None if they can."""
        key = (self.weight_tiles.device, self.weight_tiles.dtype, self.sparse_backend)
        if self._decision is None or self._decision[0] != key:
            self._decision = (key, self._find_reason())
        return self._decision[1]

    def _find_reason(self) -> str | None:
        if (self.n, self.m) != (2, 4):
            return f"the layout is {self.n}:{self.m}, and Sparse Tensor Cores run 2:4 only"
        if self.n_nm == 0:
            return "the layout has no 2:4 columns"
        for size in set(self._tile_groups()[1].bincount().tolist()):
            reason = semi_structured.semi_structured_support(
                (size * self.tile_rows, self.n_nm), self.weight_tiles.dtype,
                self.weight_tiles.device, backend=self.sparse_backend, pattern=(2, 4))
            if reason is not None:
                return reason
        return None

    def _tile_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the distinct 2:4 input lists ``(groups, n_nm)`` and each tile's group id."""
        nm_index = self.input_index[:, self.n_dense:]
        lists, group_of_tile = torch.unique(nm_index, dim=0, return_inverse=True)
        return lists, group_of_tile

    def pack(self) -> None:
        """Pack the 2:4 columns for Sparse Tensor Cores now (forward packs on first use otherwise).

        Raises:
            ValueError: if packing is not possible here, or a tile breaks the 2:4 pattern.
        """
        reason = self.semi_structured_reason()
        if reason is not None:
            raise ValueError(f"cannot pack the 2:4 columns: {reason}")

        n_dense = self.n_dense
        lists, group_of_tile = self._tile_groups()
        packed = []
        for group, columns in enumerate(lists):
            tiles = torch.nonzero(group_of_tile == group).flatten()
            # Rows of the stacked tiles, each a (tile_rows, n_nm) 2:4 matrix: (tiles * tile_rows, n_nm).
            stacked = self.weight_tiles[tiles, n_dense:, :].transpose(1, 2)
            stacked = stacked.reshape(-1, columns.numel())
            matrix = semi_structured.to_semi_structured(stacked, backend=self.sparse_backend)
            packed.append((tiles, columns.contiguous(), matrix))
        _logger.debug("packed %d tiles into %d semi-structured matrices", self.num_tiles, len(packed))
        self._packed = packed

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (torch's signature)
        # .to(), .cuda() and .half() replace the buffers, so packed copies are stale afterwards.
        self._packed = None
        self._decision = None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 (torch's signature)
        # load_state_dict copies new values into the buffers, so packed copies are stale afterwards.
        self._packed = None
        self._decision = None
        super()._load_from_state_dict(*args, **kwargs)

    # ----------------------------------------------------------------------------- GEMM
    def _gemm(self, inputs: torch.Tensor) -> torch.Tensor:
        """Multiply ``(batch, features)`` inputs; return ``(batch, rows)`` in original row order."""
        if self.resolved_backend() == "semi_structured":
            if self._packed is None:
                self.pack()
            tiles_out = self._semi_structured_tiles(inputs)
        else:
            tiles_out = _batched_tiles(inputs, self.input_index, self.weight_tiles)

        batch = inputs.shape[0]
        output = tiles_out.transpose(0, 1).reshape(batch, self.rows)
        if self.rows_permuted:
            output = output.index_select(1, self.output_index)
        if self.bias is not None:
            output = output + self.bias
        return output

    def _semi_structured_tiles(self, inputs: torch.Tensor) -> torch.Tensor:
        """Return ``(tiles, batch, tile_rows)``: dense columns by bmm, 2:4 columns packed."""
        n_dense = self.n_dense
        batch = inputs.shape[0]
        if n_dense:
            tiles_out = _batched_tiles(inputs, self.input_index[:, :n_dense],
                                       self.weight_tiles[:, :n_dense, :])
        else:
            tiles_out = inputs.new_zeros(self.num_tiles, batch, self.tile_rows)

        # NOTE: tests run this path on the CPU with packing faked by dense matrices; with real
        # packed matrices it has not run yet. The benchmark checks its output on every GPU case.
        assert self._packed is not None
        for tiles, columns, matrix in self._packed:
            part = F.linear(inputs.index_select(1, columns), matrix)
            part = part.reshape(batch, tiles.numel(), self.tile_rows).transpose(0, 1)
            tiles_out.index_add_(0, tiles, part)
        return tiles_out

    def extra_repr(self) -> str:
        pruned, nm, dense = self.counts
        return (
            f"rows={self.rows}, columns={self.columns}, tiles={self.num_tiles}x{self.tile_rows}, "
            f"per tile: pruned={pruned} {self.n}:{self.m}={nm} dense={dense}, "
            f"dtype={self.weight_tiles.dtype}, backend={self.backend!r}"
        )


def _batched_tiles(inputs: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Return ``(tiles, batch, tile_rows)``: inputs gathered by ``index`` ``(tiles, kept)`` times
    ``weights`` ``(tiles, kept, tile_rows)``."""
    tiles, kept = index.shape
    batch = inputs.shape[0]
    chunk = tiles
    if inputs.device.type == "cpu":
        tile_bytes = max(batch * kept * inputs.element_size(), 1)
        chunk = max(1, min(tiles, CPU_GATHER_BYTES // tile_bytes))
    if chunk == tiles:
        gathered = inputs.index_select(1, index.reshape(-1)).reshape(batch, tiles, kept)
        return torch.bmm(gathered.transpose(0, 1), weights)

    output = inputs.new_empty(tiles, batch, weights.shape[2])
    for start in range(0, tiles, chunk):
        stop = min(tiles, start + chunk)
        gathered = inputs.index_select(1, index[start:stop].reshape(-1))
        gathered = gathered.reshape(batch, stop - start, kept).transpose(0, 1)
        torch.bmm(gathered, weights[start:stop], out=output[start:stop])
    return output


def _check_arguments(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    layout: RegionLayout,
    backend: str,
    sparse_backend: str,
) -> None:
    """Raise ``TypeError``/``ValueError`` for arguments the compact layers cannot use."""
    check_tensor(weight, "weight", dims=(2, 4))
    if not isinstance(layout, RegionLayout):
        raise TypeError(f"layout must be a flexhinm.RegionLayout, got {type(layout).__name__}")
    if tuple(weight.shape) != tuple(layout.shape):
        raise ValueError(
            f"weight has shape {tuple(weight.shape)} but the layout was built for shape "
            f"{tuple(layout.shape)}; pass the weight the layout describes"
        )
    if bias is not None:
        check_tensor(bias, "bias", dims=(1,))
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"bias has {bias.shape[0]} entries but the weight has {weight.shape[0]} output "
                f"rows; pass one bias value per output channel or bias=None"
            )
    if backend not in COMPACT_BACKENDS:
        raise ValueError(f"backend={backend!r} is invalid; choose one of {list(COMPACT_BACKENDS)}")
    allowed = ("auto",) + semi_structured.SEMI_STRUCTURED_BACKENDS
    if sparse_backend not in allowed:
        raise ValueError(f"sparse_backend={sparse_backend!r} is invalid; choose one of {list(allowed)}")
