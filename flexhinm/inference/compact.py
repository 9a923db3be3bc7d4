"""Compact FlexHiNM Linear and Conv2d layers built from a weight and its region layout.

The layers compute exactly ``F.linear(x, weight * layout.mask(), bias)`` (or the matching
convolution) within the rounding of their dtype, but store and multiply only the dense and 2:4
columns of each tile: pruned columns cost nothing. Inputs are gathered by each tile's column
indices and the outputs come back in the original channel order, so a row permutation in the
layout needs no change elsewhere in the network. :mod:`flexhinm.inference.tiled_gemm` describes
the storage and the two backends (``"masked_dense"`` everywhere, ``"semi_structured"`` on Sparse
Tensor Cores).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..regions.layout import RegionLayout
from .tiled_gemm import CompactHiNMBase

__all__ = ["CompactHiNMConv2d", "CompactHiNMLinear", "compact_layer"]


class CompactHiNMLinear(CompactHiNMBase):
    """A Linear layer that multiplies only the kept columns of each tile of its region layout.

    Build it with :meth:`from_layout` or :meth:`from_linear`. Input ``(..., in_features)`` in the
    layer's dtype; output ``(..., out_features)``. Inference only: the weights are buffers.

    Example:
        >>> from flexhinm.inference import synthetic_layout
        >>> linear = nn.Linear(16, 8)
        >>> layout = synthetic_layout((8, 16), method="hinm", sparsity=0.75, tile_rows=4)
        >>> compact = CompactHiNMLinear.from_linear(linear, layout)
        >>> x = torch.randn(3, 16)
        >>> reference = F.linear(x, linear.weight * layout.mask(), linear.bias)
        >>> torch.allclose(compact(x), reference, atol=1e-6)
        True
    """

    @classmethod
    def from_layout(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        layout: RegionLayout,
        *,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        sparse_backend: str = "auto",
    ) -> CompactHiNMLinear:
        """Build the compact layer from a ``(out_features, in_features)`` weight and its layout.

        Args:
            weight: ``(out_features, in_features)`` weight; entries the layout prunes are ignored.
            bias: ``(out_features,)`` or None.
            layout: the region layout of ``weight`` (``layout.shape == weight.shape``).
            dtype: dtype of the stored weights and of the expected input; default ``weight.dtype``.
            backend: ``"auto"``, ``"masked_dense"`` or ``"semi_structured"``.
            sparse_backend: semi-structured backend, ``"auto"``, ``"cusparselt"`` or ``"cutlass"``.

        Returns:
            The layer on ``weight.device``.

        Raises:
            ValueError: if the shapes disagree or a backend name is unknown.
            TypeError: if ``layout`` is not a :class:`~flexhinm.RegionLayout`.
        """
        if weight.dim() != 2:
            raise ValueError(
                f"weight has shape {tuple(weight.shape)}; CompactHiNMLinear needs a 2-D "
                f"(out_features, in_features) weight (use CompactHiNMConv2d for 4-D weights)"
            )
        layer = cls(weight, bias, layout, feature_map=None, dtype=dtype, backend=backend,
                    sparse_backend=sparse_backend)
        layer.in_features, layer.out_features = layer.columns, layer.rows
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, layout: RegionLayout, **kwargs) -> CompactHiNMLinear:
        """Build the compact layer from an ``nn.Linear``; keyword arguments as :meth:`from_layout`."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        return cls.from_layout(linear.weight, linear.bias, layout, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x @ (weight * mask).T + bias`` computed from the kept columns only."""
        _check_input(x, self.weight_tiles.dtype, self.in_features, "in_features", dim=-1)
        leading = x.shape[:-1]
        output = self._gemm(x.reshape(-1, self.in_features))
        return output.reshape(*leading, self.out_features)


class CompactHiNMConv2d(CompactHiNMBase):
    """A Conv2d layer (groups=1) computed as im2col plus the tiled GEMM of its region layout.

    The input is unfolded with ``F.unfold``, whose feature order is channel-major. The GEMM view
    orders columns tap-major, channel-minor (see :func:`flexhinm.to_gemm`), so the layer maps its
    column indices to unfold positions once, at construction. Input ``(N, C_in, H, W)`` or
    ``(C_in, H, W)``.
    """

    @classmethod
    def from_layout(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        layout: RegionLayout,
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        sparse_backend: str = "auto",
    ) -> CompactHiNMConv2d:
        """Build the compact convolution from a ``(C_out, C_in, kh, kw)`` weight and its layout.

        Args:
            weight: ``(C_out, C_in, kh, kw)`` weight; entries the layout prunes are ignored.
            bias: ``(C_out,)`` or None.
            layout: the region layout of ``weight``.
            stride, dilation: as in ``nn.Conv2d`` (int or pair).
            padding: int, pair, ``"valid"``, or ``"same"`` (stride 1, and ``dilation * (k - 1)``
                even in both directions so that the padding is symmetric).
            groups: must be 1.
            dtype, backend, sparse_backend: as in :meth:`CompactHiNMLinear.from_layout`.

        Raises:
            ValueError: for ``groups != 1``, a non-4-D weight, or padding that cannot be symmetric.
        """
        if weight.dim() != 4:
            raise ValueError(
                f"weight has shape {tuple(weight.shape)}; CompactHiNMConv2d needs a 4-D "
                f"(C_out, C_in, kh, kw) weight"
            )
        if groups != 1:
            raise ValueError(
                f"groups={groups} is not supported: the compact Conv2d handles groups=1 only; keep "
                f"grouped and depthwise convolutions dense"
            )

        c_out, c_in, kh, kw = weight.shape
        stride_pair = _pair(stride, "stride")
        dilation_pair = _pair(dilation, "dilation")
        padding_pair = _padding((kh, kw), padding, stride_pair, dilation_pair)

        # GEMM column k is (tap, channel) = (k // C_in, k % C_in); unfold feature is channel * taps + tap.
        k = torch.arange(kh * kw * c_in)
        feature_map = (k % c_in) * (kh * kw) + k // c_in

        layer = cls(weight, bias, layout, feature_map=feature_map, dtype=dtype, backend=backend,
                    sparse_backend=sparse_backend)
        layer.in_channels, layer.out_channels = c_in, c_out
        layer.kernel_size = (kh, kw)
        layer.stride, layer.padding, layer.dilation = stride_pair, padding_pair, dilation_pair
        return layer

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, layout: RegionLayout, **kwargs) -> CompactHiNMConv2d:
        """Build the compact layer from an ``nn.Conv2d``.

        Keyword arguments (dtype, backend, sparse_backend) are those of :meth:`from_layout`.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"conv.padding_mode={conv.padding_mode!r} is not supported; the compact Conv2d "
                f"pads with zeros only"
            )
        return cls.from_layout(conv.weight, conv.bias, layout, stride=conv.stride,
                               padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                               **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the convolution of ``x`` with ``weight * mask`` computed from the kept columns."""
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"x must be (N, C_in, H, W) or (C_in, H, W), got shape {tuple(x.shape)}")
        _check_input(x, self.weight_tiles.dtype, self.in_channels, "in_channels", dim=1)

        batch, _, height, width = x.shape
        out_h, out_w = (
            (size + 2 * pad - dil * (k - 1) - 1) // step + 1
            for size, pad, dil, k, step in zip(
                (height, width), self.padding, self.dilation, self.kernel_size, self.stride)
        )
        columns = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding,
                           stride=self.stride)
        inputs = columns.transpose(1, 2).reshape(-1, columns.shape[1])

        output = self._gemm(inputs).reshape(batch, out_h * out_w, self.out_channels)
        output = output.transpose(1, 2).reshape(batch, self.out_channels, out_h, out_w)
        return output[0] if unbatched else output


def compact_layer(module: nn.Module, layout: RegionLayout, **kwargs) -> CompactHiNMBase:
    """Return the compact version of an ``nn.Linear`` or ``nn.Conv2d`` for ``layout``.

    Keyword arguments go to :meth:`CompactHiNMLinear.from_layout` (dtype, backend, sparse_backend).

    Raises:
        TypeError: for any other module type.
    """
    if isinstance(module, nn.Linear):
        return CompactHiNMLinear.from_linear(module, layout, **kwargs)
    if isinstance(module, nn.Conv2d):
        return CompactHiNMConv2d.from_conv2d(module, layout, **kwargs)
    raise TypeError(
        f"module is a {type(module).__name__}; compact layers exist for nn.Linear and nn.Conv2d only"
    )


def _check_input(x: torch.Tensor, dtype: torch.dtype, size: int, label: str, *, dim: int) -> None:
    """Raise if ``x`` is not a tensor of the layer's dtype with ``size`` features along ``dim``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[dim] != size:
        raise ValueError(f"x has shape {tuple(x.shape)}; the layer expects {label}={size} along dim {dim}")
    if x.dtype != dtype:
        raise TypeError(f"x has dtype {x.dtype} but the layer stores {dtype}; cast with x.to({dtype})")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """Return ``value`` as a pair of positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name}={value!r} is invalid; pass a positive int or a pair of them")
    return pair


def _padding(
    kernel: tuple[int, int],
    padding: int | Sequence[int] | str,
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Return the symmetric padding pair for ``padding`` (int, pair, ``"valid"`` or ``"same"``)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(total % 2 for total in totals):
            raise ValueError(
                f"padding='same' with kernel {kernel} and dilation {dilation} needs asymmetric "
                f"padding, which the compact Conv2d does not support; pad the input explicitly"
            )
        return (totals[0] // 2, totals[1] // 2)

    pair = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if len(pair) != 2 or not all(isinstance(p, int) and p >= 0 for p in pair):
        raise ValueError(f"padding={padding!r} is invalid; pass 'valid', 'same', an int >= 0 or a pair")
    return pair
