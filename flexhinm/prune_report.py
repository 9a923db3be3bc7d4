"""Per-layer report of :func:`flexhinm.prune_model`: shapes, tiles, region counts, sparsity, importance kept."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .eligibility import LayerEligibility
from .regions import RegionLayout

__all__ = ["LayerPruning", "PruneReport"]


@dataclass(frozen=True)
class LayerPruning:
    """Pruning result of one layer.

    Attributes:
        name: parameter name.
        kind: module type (``"Linear"``, ``"Conv2d"``, ...).
        shape: weight shape.
        gemm_shape: ``(rows, columns)`` of the GEMM view.
        method: pruning method.
        numel: weights in the layer.
        zeros: weights the mask removes.
        retained: summed score of the kept weights.
        total: summed score of all weights.
        tile_rows: rows per tile (region methods), else ``None``.
        tile_note: why a smaller tile size was used, else ``None``.
        counts: ``(pruned, N:M, dense)`` columns per tile (region methods), else ``None``.
        vector_sparsity: fraction of column vectors pruned (region methods), else ``None``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    gemm_shape: tuple[int, int]
    method: str
    numel: int
    zeros: int
    retained: float
    total: float
    tile_rows: int | None = None
    tile_note: str | None = None
    counts: tuple[int, int, int] | None = None
    vector_sparsity: float | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of zeros in the mask."""
        return self.zeros / self.numel

    @property
    def retained_fraction(self) -> float:
        """Share of the layer's summed score that the mask keeps (NaN when the total is 0)."""
        return self.retained / self.total if self.total > 0 else float("nan")

    @classmethod
    def from_mask(
        cls,
        layer: LayerEligibility,
        method: str,
        mask: torch.Tensor,
        scores: torch.Tensor,
        layout: RegionLayout | None,
        tile_note: str | None,
    ) -> LayerPruning:
        """Measure ``mask`` against ``scores`` (both of the weight's shape)."""
        weights = scores.double()
        return cls(
            name=layer.name,
            kind=layer.kind,
            shape=tuple(layer.shape),
            gemm_shape=tuple(layer.gemm_shape),
            method=method,
            numel=mask.numel(),
            zeros=int((~mask).sum()),
            retained=float((weights * mask).sum()),
            total=float(weights.sum()),
            tile_rows=layout.tile_rows if layout is not None else None,
            tile_note=tile_note,
            counts=tuple(layout.counts) if layout is not None else None,
            vector_sparsity=layout.vector_sparsity if layout is not None else None,
        )

    def to_dict(self) -> dict:
        """Return a JSON-ready dict, with ``sparsity`` and ``retained_fraction`` added."""
        values = asdict(self)
        values["shape"] = list(self.shape)
        values["gemm_shape"] = list(self.gemm_shape)
        values["counts"] = list(self.counts) if self.counts is not None else None
        values["sparsity"] = self.sparsity
        values["retained_fraction"] = self.retained_fraction
        return values


@dataclass
class PruneReport:
    """The result of :func:`flexhinm.prune_model`.

    Attributes:
        method: pruning method.
        score: score method name.
        target_sparsity: the sparsity asked for (``1 - n/m`` for ``"nm"``).
        n: weights kept per N:M group.
        m: N:M group size.
        layers: one :class:`LayerPruning` per pruned layer, in module order.
        skipped: parameter name to the reason the layer stayed dense.
        masks: parameter name to its bool mask.
        layouts: parameter name to its :class:`~flexhinm.RegionLayout` (region methods only).
        permutation: name of the permutation hook used, or ``None``.
    """

    method: str
    score: str
    target_sparsity: float
    n: int
    m: int
    layers: list[LayerPruning]
    skipped: dict[str, str]
    masks: dict[str, torch.Tensor] = field(repr=False)
    layouts: dict[str, RegionLayout] = field(repr=False)
    permutation: str | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over all pruned layers together (dense layers not counted)."""
        return sum(layer.zeros for layer in self.layers) / sum(layer.numel for layer in self.layers)

    @property
    def retained_fraction(self) -> float:
        """Summed kept score over summed score of all pruned layers (comparable scores only)."""
        total = sum(layer.total for layer in self.layers)
        return sum(layer.retained for layer in self.layers) / total if total > 0 else float("nan")

    def table(self) -> str:
        """Return a fixed-width text table: one row per pruned layer, then skipped layers and totals."""
        width = max([30, *(len(layer.name) for layer in self.layers)])
        header = (f"{'layer':<{width}} {'GEMM view':>11} {'tile':>5} {'pruned/N:M/dense':>17} "
                  f"{'v':>6} {'sparsity':>8} {'retained':>8}")
        lines = [header, "-" * len(header)]
        for layer in self.layers:
            rows, columns = layer.gemm_shape
            tile = str(layer.tile_rows) if layer.tile_rows is not None else "-"
            counts = "/".join(str(c) for c in layer.counts) if layer.counts is not None else "-"
            v = f"{layer.vector_sparsity:.3f}" if layer.vector_sparsity is not None else "-"
            lines.append(
                f"{layer.name:<{width}} {f'{rows}x{columns}':>11} {tile:>5} {counts:>17} {v:>6} "
                f"{layer.sparsity:>8.4f} {layer.retained_fraction:>8.4f}"
            )
            if layer.tile_note:
                lines.append(f"  note: {layer.tile_note}")
        for name, reason in self.skipped.items():
            lines.append(f"{name:<{width}} skipped: {reason}")
        weights = sum(layer.numel for layer in self.layers)
        lines.append(
            f"{self.method} ({self.score} scores): sparsity {self.sparsity:.4f} over {len(self.layers)} "
            f"layers ({weights:,} weights), retained importance {self.retained_fraction:.4f}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Return a JSON-ready summary (no tensors): settings, per-layer rows, skipped layers, totals."""
        return {
            "method": self.method,
            "score": self.score,
            "target_sparsity": self.target_sparsity,
            "n": self.n,
            "m": self.m,
            "permutation": self.permutation,
            "sparsity": self.sparsity,
            "retained_fraction": self.retained_fraction,
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": dict(self.skipped),
        }
