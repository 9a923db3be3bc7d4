"""The compressed 2:4 format on the CPU: kept values plus 2-bit position metadata.

A 2:4 matrix of shape ``(rows, columns)`` is stored by Sparse Tensor Cores as

* ``values``: ``(rows, columns / 2)``, the two kept values of every group of 4, in column order;
* metadata: for each kept value, its position 0..3 inside its group (2 bits). The two positions
  of a group form a 4-bit nibble ``first | second << 2``, and four consecutive groups share one
  16-bit word, group ``4k`` in the lowest bits.

These helpers implement that encoding in plain tensor code to show it on small matrices. The GPU
kernels additionally reorder the 16-bit words into an interleaved layout, and cuSPARSELt stores
values and metadata in one buffer. That reordering is a memory-layout detail and is not done here.
:func:`torch_reference_compress` returns torch's own CPU reference conversion with the reordering
undone, so the two encodings can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_tensor
from .semi_structured import check_nm_pattern

__all__ = [
    "Compressed2to4",
    "compress_2to4",
    "decompress_2to4",
    "pack_metadata",
    "torch_reference_compress",
    "unpack_metadata",
]


@dataclass(frozen=True)
class Compressed2to4:
    """A 2:4 matrix as kept values and positions.

    Attributes:
        values: ``(rows, columns // 2)`` kept values, two per group, in column order.
        positions: ``(rows, columns // 2)`` int8 position 0..3 of each kept value in its group.
        columns: number of columns of the dense matrix.
    """

    values: torch.Tensor
    positions: torch.Tensor
    columns: int

    @property
    def metadata(self) -> torch.Tensor:
        """``(rows, columns // 16)`` int16 words of packed positions (see :func:`pack_metadata`)."""
        return pack_metadata(self.positions)

    def metadata_bits(self) -> list[list[str]]:
        """Return each metadata word as a 16-character bit string, most significant bit first."""
        words = self.metadata.to(torch.int32) & 0xFFFF
        return [[format(int(word), "016b") for word in row] for row in words]


def compress_2to4(dense: torch.Tensor, mask: torch.Tensor | None = None) -> Compressed2to4:
    """Compress a 2:4 matrix into kept values and their positions.

    Args:
        dense: ``(rows, columns)`` matrix, any float dtype, ``columns`` a multiple of 4, at most 2
            non-zeros in every group of 4 consecutive values along a row.
        mask: optional ``(rows, columns)`` bool mask with at most 2 True per group. It names the
            kept positions, so kept weights that happen to be zero keep their place. Without it
            the non-zeros are the kept values.

    Returns:
        :class:`Compressed2to4`. A group with fewer than two kept values is filled with its lowest
        free positions, whose values are zero. torch's converter pads such groups with other
        positions, so the two metadata can differ there while both decode to the same matrix.

    Raises:
        ValueError: if ``dense`` or ``mask`` breaks the 2:4 pattern (the message counts the groups).

    Example:
        >>> c = compress_2to4(torch.tensor([[0.0, 5.0, 0.0, 7.0, 1.0, 2.0, 0.0, 0.0]]))
        >>> c.values.tolist(), c.positions.tolist()
        ([[5.0, 7.0, 1.0, 2.0]], [[1, 3, 0, 1]])
    """
    check_tensor(dense, "dense", dims=(2,))
    if mask is None:
        check_nm_pattern(dense, name="dense")
        kept = dense != 0
    else:
        check_tensor(mask, "mask", dims=(2,))
        if mask.dtype != torch.bool or mask.shape != dense.shape:
            raise ValueError(
                f"mask must be a bool tensor of the shape of dense {tuple(dense.shape)}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        check_nm_pattern(mask, name="mask")
        kept = mask

    rows, columns = dense.shape
    groups = columns // 4
    position = torch.arange(4, device=dense.device)

    # Rank the 4 slots of every group: kept slots first, then free slots, lower index first.
    key = kept.reshape(rows, groups, 4).to(torch.int64) * 4 + (3 - position)
    chosen = key.topk(2, dim=-1).indices.sort(dim=-1).values

    grouped = torch.where(kept, dense, torch.zeros_like(dense)).reshape(rows, groups, 4)
    values = grouped.gather(-1, chosen).reshape(rows, groups * 2)
    return Compressed2to4(values, chosen.reshape(rows, groups * 2).to(torch.int8), columns)


def decompress_2to4(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rebuild the dense ``(rows, 2 * values.shape[1])`` matrix from values and positions.

    Args:
        values: ``(rows, columns // 2)`` kept values.
        positions: ``(rows, columns // 2)`` integer positions 0..3, two per group.

    Returns:
        The dense matrix in the dtype of ``values``; ``decompress_2to4(c.values, c.positions)``
        equals the input of :func:`compress_2to4` exactly.
    """
    check_tensor(values, "values", dims=(2,))
    check_tensor(positions, "positions", dims=(2,))
    if values.shape != positions.shape or values.shape[1] % 2:
        raise ValueError(
            f"values {tuple(values.shape)} and positions {tuple(positions.shape)} must have the "
            f"same shape with an even number of columns (two kept values per group of 4)"
        )
    if bool(((positions < 0) | (positions > 3)).any()):
        raise ValueError("positions must lie in 0..3, the slots of a group of 4")

    rows, half = values.shape
    groups = half // 2
    dense = torch.zeros(rows, groups, 4, dtype=values.dtype, device=values.device)
    dense.scatter_(-1, positions.reshape(rows, groups, 2).to(torch.int64),
                   values.reshape(rows, groups, 2))
    return dense.reshape(rows, groups * 4)


def pack_metadata(positions: torch.Tensor) -> torch.Tensor:
    """Pack positions into 16-bit words: 4 bits per group, 4 groups per word, group 0 lowest.

    Args:
        positions: ``(rows, columns // 2)`` positions 0..3; ``columns`` must be a multiple of 16.

    Returns:
        ``(rows, columns // 16)`` int16 (bit patterns above 0x7FFF read as negative numbers).

    Example:
        >>> word = pack_metadata(torch.tensor([[0, 1, 0, 1, 2, 3, 2, 3]]))[0, 0].item()
        >>> hex(word & 0xFFFF)   # nibbles 0x4, 0x4, 0xe, 0xe, group 0 in the lowest bits
        '0xee44'
    """
    check_tensor(positions, "positions", dims=(2,))
    rows, half = positions.shape
    if half % 8:
        raise ValueError(
            f"positions has {half} columns; packing needs a multiple of 8 (16 dense columns, "
            f"four groups per 16-bit word)"
        )

    pairs = positions.to(torch.int32).reshape(rows, half // 8, 4, 2)
    nibbles = pairs[..., 0] | (pairs[..., 1] << 2)
    shifts = torch.tensor([0, 4, 8, 12], dtype=torch.int32, device=positions.device)
    words = (nibbles << shifts).sum(dim=-1)
    words = torch.where(words >= 1 << 15, words - (1 << 16), words)
    return words.to(torch.int16)


def unpack_metadata(metadata: torch.Tensor) -> torch.Tensor:
    """Invert :func:`pack_metadata`: ``(rows, words)`` int16 to ``(rows, 8 * words)`` int8 positions."""
    check_tensor(metadata, "metadata", dims=(2,))
    words = metadata.to(torch.int32) & 0xFFFF
    shifts = torch.tensor([0, 4, 8, 12], dtype=torch.int32, device=metadata.device)
    nibbles = (words[..., None] >> shifts) & 0xF
    pairs = torch.stack((nibbles & 0x3, nibbles >> 2), dim=-1)
    return pairs.reshape(metadata.shape[0], -1).to(torch.int8)


def torch_reference_compress(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Compress with torch's private CPU reference converter, with its metadata reordering undone.

    Uses ``torch.sparse._semi_structured_conversions`` (private; present in torch 2.13 and 2.14.1).

    Args:
        dense: ``(rows, columns)`` fp16 or bf16 2:4 matrix; rows and columns multiples of 32.

    Returns:
        ``(values, metadata)`` comparable with :class:`Compressed2to4` ``values`` and
        ``metadata``, or None when this torch has no such converter.
    """
    try:
        from torch.sparse._semi_structured_conversions import (
            _calculate_meta_reordering_scatter_offsets,
            sparse_semi_structured_from_dense_cutlass,
        )
    except ImportError:
        return None

    check_tensor(dense, "dense", dims=(2,))
    if dense.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dense has dtype {dense.dtype}; the reference converter is used for fp16 and bf16")
    rows, columns = dense.shape
    # torch 2.14.1 checks columns % 16, but its metadata reordering fails (index out of bounds)
    # unless the count of 16-bit metadata columns is even, so 32 is the real multiple.
    if rows % 32 or columns % 32:
        raise ValueError(
            f"dense has shape {(rows, columns)}; torch's converter needs rows and columns that are "
            f"multiples of 32"
        )
    check_nm_pattern(dense, name="dense")

    values, reordered = sparse_semi_structured_from_dense_cutlass(dense)
    offsets = _calculate_meta_reordering_scatter_offsets(rows, reordered.shape[1], reordered.dtype,
                                                          dense.device)
    metadata = reordered.reshape(-1)[offsets].reshape(rows, -1)
    return values, metadata
