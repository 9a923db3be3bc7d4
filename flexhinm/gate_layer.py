"""Hard Concrete gates on the N:M region of one layer: :class:`NMGates` and its helpers.

Every weight of a *live* N:M group (``m`` consecutive columns of the N:M region of one tile, over
all ``tile_rows`` rows) gets a :class:`~flexhinm.HardConcrete` gate ``z``. :class:`NMGates` is a
``torch.nn.utils.parametrize`` parametrization that computes, on every access of the weight::

    weight * (1 on dense columns + the layout's N:M keep on groups without gates + z on live groups)

and 0 on pruned columns. :mod:`flexhinm.gates` puts gates on a model's weights, hardens and
removes them, and re-exports everything here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
from torch import nn

from ._checks import check_finite
from .gemm import from_gemm, to_gemm
from .hardconcrete import HardConcrete
from .regions import RegionLayout

__all__ = ["NMGates", "entered_groups", "nm_keep_from_scores"]


def nm_keep_from_scores(scores: torch.Tensor, *, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive entries along the last dimension.

    Ties keep the lower index, and infinite scores are ordinary large or small values, so the result
    has exactly ``n`` ``True`` per group for any finite or infinite input.

    Args:
        scores: any floating tensor whose last dimension is a multiple of ``m``.
        n: entries kept per group, ``0 < n < m``.
        m: group size.

    Returns:
        ``torch.bool`` tensor of the shape and device of ``scores``.

    Raises:
        ValueError: if the last dimension is not a multiple of ``m`` or ``scores`` contains NaN.

    Example:
        >>> scores = torch.tensor([[0.0, 3.0, 3.0, 3.0, -1.0, 5.0, 2.0, 9.0]])
        >>> nm_keep_from_scores(scores).int().tolist()
        [[0, 1, 1, 0, 0, 1, 0, 1]]
    """
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating tensor, got {scores.dtype}")
    if scores.dim() == 0 or scores.shape[-1] % m:
        raise ValueError(
            f"scores of shape {tuple(scores.shape)} cannot be split into groups of m={m} along the "
            f"last dimension; its size must be a multiple of {m}"
        )
    if bool(torch.isnan(scores).any()):
        raise ValueError(
            f"scores contain {int(torch.isnan(scores).sum())} NaN value(s), so no group order "
            f"exists; a NaN log_alpha means training diverged (lower the gate learning rate)"
        )
    groups = scores.reshape(*scores.shape[:-1], -1, m)

    # A stable descending sort keeps the lower index first among equal scores.
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :n], True)
    return keep.reshape(scores.shape)


def _check_live_groups(live_groups: torch.Tensor | None, layout: RegionLayout) -> torch.Tensor:
    tiles = layout.num_tiles
    n_groups = layout.counts[1] // layout.m
    device = layout.nm_cols.device
    if live_groups is None:
        return torch.ones(tiles, n_groups, dtype=torch.bool, device=device)
    if not isinstance(live_groups, torch.Tensor) or live_groups.dtype != torch.bool:
        raise TypeError(f"live_groups must be a bool tensor, got {type(live_groups).__name__}")
    if tuple(live_groups.shape) != (tiles, n_groups):
        raise ValueError(
            f"live_groups has shape {tuple(live_groups.shape)}, but the layout has {tiles} tile(s) "
            f"of {n_groups} N:M group(s); pass a bool tensor of shape ({tiles}, {n_groups})"
        )
    return live_groups.to(device)


def entered_groups(previous: RegionLayout, current: RegionLayout) -> torch.Tensor:
    """Mark the N:M groups of ``current`` that have a column outside ``previous``'s N:M region.

    In gradual pruning these are the groups that need fresh gates; the other groups keep the
    hardened choice that ``current.nm_keep`` carries over.

    Args:
        previous: the layout of the earlier stage.
        current: the layout of the new stage, same weight shape, ``tile_rows`` and ``row_order``.

    Returns:
        ``(tiles, n_nm // m)`` bool, ``True`` for a group that just entered the N:M region.

    Raises:
        ValueError: if the layouts differ in shape, tile rows, row order or ``m``.
    """
    same = (previous.shape == current.shape and previous.tile_rows == current.tile_rows
            and previous.m == current.m and torch.equal(previous.row_order, current.row_order))
    if not same:
        raise ValueError(
            f"the layouts describe different tilings (shape {previous.shape} vs {current.shape}, "
            f"tile_rows {previous.tile_rows} vs {current.tile_rows}, m {previous.m} vs "
            f"{current.m}, or another row_order); compare layouts of one layer with fixed "
            f"permutations"
        )
    was_nm = torch.zeros(current.num_tiles, current.columns, dtype=torch.bool,
                         device=current.nm_cols.device)
    was_nm.scatter_(1, previous.nm_cols.to(was_nm.device), True)
    stayed = was_nm.gather(1, current.nm_cols).reshape(current.num_tiles, -1, current.m)
    return ~stayed.all(dim=-1)


class NMGates(nn.Module):
    """Parametrization ``weight -> weight * mask`` with Hard Concrete gates on live N:M groups.

    The gates are one :class:`~flexhinm.HardConcrete` module, :attr:`gate`, whose ``log_alpha``
    has shape ``(G, tile_rows, m)``. ``G`` counts the live groups ``(tile, group)`` in row-major
    order of ``live_groups``. Entry ``[k, r, j]`` gates the weight in row ``r`` of the tile and
    column ``nm_cols[tile, m * group + j]`` of the GEMM view. The module's ``state_dict`` contains
    tensors, floats and strings only, so it loads with ``torch.load(..., weights_only=True)``.

    Args:
        layout: the layer's regions and the current N:M choice (``nm_keep``).
        live_groups: ``(tiles, n_nm // m)`` bool, the groups that get gates; default all. Groups
            without gates keep ``layout.nm_keep`` (for example the hardened masks of an earlier
            stage, see :func:`entered_groups`).
        scores: importance of each weight, of the weight's shape; the ``n`` highest of each live
            group start open. Default: the layout's ``nm_keep`` decides which gates start open.
        init_log_alpha: ``log_alpha`` starts at ``+init_log_alpha`` for open and
            ``-init_log_alpha`` for closed gates (``>= 0``). The default 2 starts at the static
            N:M mask with deterministic gates 0.957 and 0.043. 0 is the symmetric start of
            Louizos et al.
        temperature: initial temperature ``beta`` of the gates.
        gamma: lower stretch limit of the gates.
        zeta: upper stretch limit of the gates.

    Raises:
        TypeError: if ``layout`` is not a :class:`~flexhinm.RegionLayout` or ``live_groups`` is not
            a bool tensor.
        ValueError: if ``live_groups`` or ``scores`` has the wrong shape, ``scores`` is not finite,
            ``init_log_alpha`` is negative, or a gate setting is invalid.

    Example:
        >>> layout = RegionLayout(
        ...     shape=(2, 8), tile_rows=2, row_order=torch.arange(2),
        ...     pruned_cols=torch.empty(1, 0, dtype=torch.long), nm_cols=torch.arange(8)[None],
        ...     dense_cols=torch.empty(1, 0, dtype=torch.long),
        ...     nm_keep=torch.tensor([[[1, 1, 0, 0, 0, 0, 1, 1], [1, 0, 1, 0, 0, 1, 0, 1]]]).bool())
        >>> gates = NMGates(layout)
        >>> tuple(gates.gate.log_alpha.shape)   # 2 groups of 2 rows x 4 columns
        (2, 2, 4)
        >>> [round(v, 3) for v in gates.eval()(torch.ones(2, 8))[0].tolist()]   # deterministic gates
        [0.957, 0.957, 0.043, 0.043, 0.043, 0.043, 0.957, 0.957]
    """

    def __init__(
        self,
        layout: RegionLayout,
        *,
        live_groups: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
        init_log_alpha: float = 2.0,
        temperature: float = 2.0 / 3.0,
        gamma: float = -0.1,
        zeta: float = 1.1,
    ) -> None:
        super().__init__()
        if not isinstance(layout, RegionLayout):
            raise TypeError(f"layout must be a RegionLayout, got {type(layout).__name__}")
        if isinstance(init_log_alpha, bool) or not isinstance(init_log_alpha, (int, float)) \
                or not math.isfinite(init_log_alpha) or init_log_alpha < 0:
            raise ValueError(
                f"init_log_alpha={init_log_alpha!r} is invalid; it must be a finite number >= 0 "
                f"(open gates start at +init_log_alpha, closed ones at -init_log_alpha)"
            )
        self.layout = layout
        live = _check_live_groups(live_groups, layout)
        tile_index, group_index = live.nonzero(as_tuple=True)
        m, tile_rows = layout.m, layout.tile_rows

        # GEMM rows (G, V, 1) and columns (G, 1, m) of every live gate.
        rows = layout.tile_row_indices[tile_index][:, :, None]
        cols = layout.nm_cols.reshape(layout.num_tiles, -1, m)[tile_index, group_index][:, None, :]

        # Flat index of each GEMM entry in the weight's own memory order.
        numel = layout.rows * layout.columns
        positions = to_gemm(torch.arange(numel, device=rows.device).reshape(layout.shape))
        gate_index = positions[rows, cols]

        fixed = layout.mask_gemm()
        fixed[rows, cols] = False

        if scores is None:
            groups = layout.nm_keep.reshape(layout.num_tiles, tile_rows, -1, m).transpose(1, 2)
            start_open = groups[tile_index, group_index]
        else:
            if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != layout.shape:
                raise ValueError(
                    f"scores must be a tensor of the weight's shape {layout.shape}, got "
                    f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else scores!r}"
                )
            check_finite(scores)
            group_scores = to_gemm(scores.detach()).to(rows.device)[rows, cols].double()
            start_open = nm_keep_from_scores(group_scores, n=layout.n, m=m)

        initial = torch.where(start_open, float(init_log_alpha), -float(init_log_alpha))
        self.gate = HardConcrete(tuple(gate_index.shape), init_log_alpha=initial,
                                 temperature=temperature, gamma=gamma, zeta=zeta,
                                 dtype=torch.get_default_dtype())
        self.register_buffer("fixed_mask", from_gemm(fixed, layout.shape))
        self.register_buffer("gate_index", gate_index)
        self.register_buffer("live_groups", live.clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Return ``weight * mask`` with sampled gates in training and deterministic ones in eval."""
        gates = self.gate().to(weight.dtype)
        multiplier = self.fixed_mask.to(weight.dtype).reshape(-1)
        multiplier = multiplier.scatter(0, self.gate_index.reshape(-1), gates.reshape(-1))
        return weight * multiplier.reshape(weight.shape)

    def harden(self) -> RegionLayout:
        """Return the layout with the ``n`` largest gates of every live group as its ``nm_keep``.

        Gates are ranked by ``log_alpha``. That order is the order of the deterministic gates, and
        it also separates gates that are tied at 0 or 1 after clipping. Among equal logits the
        earlier position in the group wins. When a group has exactly ``n`` deterministic gates
        above 0.5, the result equals the 0.5 threshold. The gates themselves are not changed.

        Raises:
            ValueError: if ``log_alpha`` contains NaN.
        """
        layout = self.layout
        tile_index, group_index = self.live_groups.nonzero(as_tuple=True)
        keep = nm_keep_from_scores(self.gate.log_alpha.detach(), n=layout.n, m=layout.m)

        nm_keep = layout.nm_keep.clone()
        grouped = nm_keep.view(layout.num_tiles, layout.tile_rows, -1, layout.m).transpose(1, 2)
        device = nm_keep.device
        grouped[tile_index.to(device), group_index.to(device)] = keep.to(device)
        return dataclasses.replace(layout, nm_keep=nm_keep)

    def hardened_mask(self) -> torch.Tensor:
        """Return the bool mask (weight's shape) of :meth:`harden`, on the gates' device."""
        return self.harden().mask().to(self.fixed_mask.device)

    def get_extra_state(self) -> dict:
        """Return the layout as a dict of tensors and numbers (``weights_only``-safe)."""
        return {"layout": self.layout.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        """Restore the layout written by :meth:`get_extra_state`."""
        self.layout = RegionLayout.from_state_dict(state["layout"])

    @classmethod
    def from_state_dict(cls, state: Mapping[str, object]) -> NMGates:
        """Rebuild gates from the ``state_dict`` of an :class:`NMGates`, keys without a prefix."""
        layout = RegionLayout.from_state_dict(state["_extra_state"]["layout"])
        gates = cls(layout, live_groups=state["live_groups"])
        gates.load_state_dict(state)
        return gates
