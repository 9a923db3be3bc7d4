"""Records of a gradual pruning run: one :class:`StageRecord` per stage and a gate trajectory.

Every record contains plain numbers, strings, lists and dicts only, so it goes into a stage checkpoint
(``torch.load(..., weights_only=True)``) and into JSON as it is. :class:`GateTracker` samples the
deterministic gates of chosen layers every few steps. It keeps a few groups of ``m`` gates and the
quantiles of all gates of the layer, which is enough for a plot and small enough to store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..gates import NMGates
from ..prune_report import PruneReport
from ..regions import RegionLayout

__all__ = ["QUANTILES", "GateTracker", "GradualResult", "StageRecord"]

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
_MAX_QUANTILE_INPUT = 2**24  # torch.quantile rejects larger inputs


@dataclass
class StageRecord:
    """Facts of one finished stage; accuracies are top-1 in percent, losses means per sample.

    Attributes:
        stage: index of the stage, from 0.
        target_sparsity: the stage's target.
        sparsity: fraction of zeros over all pruned layers after hardening.
        steps: optimizer steps trained in the stage.
        first_step: steps done before the stage (over the whole run).
        layers: parameter name to ``{"counts": [pruned, N:M, dense] columns per tile,
            "tile_rows", "vector_sparsity", "sparsity"}``.
        new_groups: N:M groups that got fresh gates (entered the N:M region in this stage).
        gates: number of gates trained in the stage (``new_groups * tile_rows * m``).
        changed_choices: fraction of gated rows of ``m`` weights whose hardened choice differs
            from the choice that the importance scores made when the gates were created.
        lr: learning rate of the weights at the first step of the stage.
        temperature_start: gate temperature at the first step.
        temperature_end: gate temperature at the last step.
        train_loss: mean task loss during the stage (without the gate terms).
        train_top1: training accuracy during the stage (sampled gates).
        gate_mean: mean of ``mean(z)`` over the stage's steps (0 without gates).
        gate_constraint: mean of ``mean(|sum of z over a group - n|)`` over the steps.
        gate_loss: mean of the weighted gate loss over the steps.
        gated_loss: evaluation loss with the deterministic gates, before hardening (``None``
            without gates or evaluation data).
        gated_top1: evaluation accuracy with the deterministic gates, before hardening.
        test_loss: evaluation loss after hardening (``None`` without evaluation data).
        test_top1: evaluation accuracy after hardening.
        seconds: wall time of the stage, allocation and evaluation included.
    """

    stage: int
    target_sparsity: float
    sparsity: float
    steps: int
    first_step: int
    layers: dict = field(default_factory=dict)
    new_groups: int = 0
    gates: int = 0
    changed_choices: float | None = None
    lr: float = 0.0
    temperature_start: float | None = None
    temperature_end: float | None = None
    train_loss: float = 0.0
    train_top1: float = 0.0
    gate_mean: float = 0.0
    gate_constraint: float = 0.0
    gate_loss: float = 0.0
    gated_loss: float | None = None
    gated_top1: float | None = None
    test_loss: float | None = None
    test_top1: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Return the fields as a dict of plain values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> StageRecord:
        """Rebuild a record from :meth:`to_dict` output."""
        return cls(**dict(values))


def layer_summary(layouts: Mapping[str, RegionLayout]) -> dict:
    """Return parameter name to counts, tile rows, vector sparsity and sparsity of each layout."""
    return {
        name: {
            "counts": list(layout.counts),
            "tile_rows": layout.tile_rows,
            "vector_sparsity": float(layout.vector_sparsity),
            "sparsity": float(layout.sparsity),
        }
        for name, layout in layouts.items()
    }


def overall_sparsity(layouts: Mapping[str, RegionLayout]) -> float:
    """Return the fraction of zeros over all weights of the layouts together."""
    zeros = 0
    for layout in layouts.values():
        pruned, nm, _ = layout.counts
        zeros += layout.rows * (pruned + nm // layout.m * (layout.m - layout.n))
    total = sum(layout.rows * layout.columns for layout in layouts.values())
    return zeros / total if total else 0.0


class GateTracker:
    """Record the deterministic gates of chosen layers every ``every`` steps.

    Each entry is a dict with the keys ``step`` (over the whole run), ``stage``, ``temperature``
    and ``layer``. ``values`` contains ``groups`` rows of ``m`` gate values, the same rows at every
    step of a stage. ``quantiles`` are those of all the layer's gates, at :data:`QUANTILES`.
    ``zero`` and ``one`` are the fractions of gates exactly 0 and exactly 1. Values are rounded to
    4 decimals. Reading the gates draws no
    random numbers, so tracking does not change the training run.

    Args:
        names: parameter names of the layers to follow; layers without gates in a stage are skipped.
        every: steps between two records, ``>= 1``.
        groups: rows of ``m`` gates stored per layer, spread evenly over the layer's gated rows.
    """

    def __init__(self, names: Sequence[str], every: int, groups: int) -> None:
        self.names = list(names)
        self.every = every
        self.groups = groups
        self.entries: list[dict] = []

    def due(self, step: int) -> bool:
        """Return whether the step (over the whole run) is one to record."""
        return bool(self.names) and step % self.every == 0

    def record(self, gates: Mapping[str, NMGates], *, step: int, stage: int, temperature: float) -> None:
        """Append one entry per tracked layer that has gates."""
        for name in self.names:
            if name not in gates:
                continue
            with torch.no_grad():
                values = gates[name].gate.deterministic_gate().detach().float().cpu()
            rows = values.reshape(-1, values.shape[-1])
            if rows.shape[0] == 0:
                continue
            chosen = torch.linspace(0, rows.shape[0] - 1, min(self.groups, rows.shape[0]))
            chosen = chosen.round().long().unique()

            flat = rows.reshape(-1)
            if flat.numel() > _MAX_QUANTILE_INPUT:
                flat = flat[:: flat.numel() // _MAX_QUANTILE_INPUT + 1]
            quantiles = torch.quantile(flat, torch.tensor(QUANTILES))
            self.entries.append({
                "step": step,
                "stage": stage,
                "temperature": round(float(temperature), 6),
                "layer": name,
                "values": [[round(v, 4) for v in row] for row in rows[chosen].tolist()],
                "quantiles": [round(v, 4) for v in quantiles.tolist()],
                "zero": round(float((rows == 0).float().mean()), 4),
                "one": round(float((rows == 1).float().mean()), 4),
            })


@dataclass
class GradualResult:
    """The outcome of :func:`flexhinm.gradual.gradual_prune`; the model itself is pruned in place.

    Attributes:
        records: one :class:`StageRecord` per stage.
        layouts: parameter name to the final hardened :class:`~flexhinm.RegionLayout`.
        report: the last stage's :class:`~flexhinm.PruneReport`, measured on the hardened masks.
            Its retained importance uses the last stage's scores, in which weights pruned in
            earlier stages score 0, so it is near 1 and does not compare with a one-shot report.
        trajectory: :class:`GateTracker` entries (empty unless layers were tracked).
        top1_pruned: evaluation accuracy right after the first stage's masks were applied, before
            any training (``None`` without evaluation data).
        config: the settings, as :meth:`GradualConfig.to_dict` returns them.
        resumed_from: the stage checkpoint the run continued from, or ``None``.
    """

    records: list[StageRecord]
    layouts: dict[str, RegionLayout]
    report: PruneReport
    trajectory: list[dict]
    top1_pruned: float | None
    config: dict
    resumed_from: str | None = None

    @property
    def top1(self) -> float | None:
        """Final evaluation accuracy in percent (after the last hardening)."""
        return self.records[-1].test_top1

    @property
    def sparsity(self) -> float:
        """Final fraction of zeros over all pruned layers."""
        return self.records[-1].sparsity

    def history(self) -> list[dict]:
        """Return one dict per stage, as :meth:`StageRecord.to_dict` gives them."""
        return [record.to_dict() for record in self.records]

    def to_dict(self) -> dict:
        """Return everything except the layouts as a JSON-ready dict."""
        return {
            "config": dict(self.config),
            "top1_pruned": self.top1_pruned,
            "top1": self.top1,
            "sparsity": self.sparsity,
            "stages": self.history(),
            "trajectory": list(self.trajectory),
            "report": self.report.to_dict(),
            "resumed_from": self.resumed_from,
        }

    def table(self) -> str:
        """Return a text table with one row per stage."""
        header = (f"{'stage':>5} {'target':>7} {'sparsity':>8} {'steps':>6} {'new groups':>10} "
                  f"{'train loss':>10} {'|sum z-n|':>9} {'gated top-1':>11} {'top-1':>6}")
        lines = [header, "-" * len(header)]
        for record in self.records:
            gated = "-" if record.gated_top1 is None else f"{record.gated_top1:.2f}"
            top1 = "-" if record.test_top1 is None else f"{record.test_top1:.2f}"
            lines.append(
                f"{record.stage:>5} {record.target_sparsity:>7.2%} {record.sparsity:>8.2%} "
                f"{record.steps:>6} {record.new_groups:>10} {record.train_loss:>10.4f} "
                f"{record.gate_constraint:>9.4f} {gated:>11} {top1:>6}"
            )
        return "\n".join(lines)
