"""Statistics of a permutation search: retained importance before and after, rounds, time."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GyroStats", "PhaseStats"]


@dataclass
class PhaseStats:
    """Outcome of one permutation phase on one layer.

    Attributes:
        phase: ``"output"``, ``"input"`` or ``"channel24"``.
        retained_before: importance the phase's objective keeps before the search. The output
            phase counts the columns that column-vector pruning keeps. The input phase counts what
            the whole layout keeps (dense plus N:M). The 2:4 baseline counts what N:M keeps over
            the whole layer.
        retained_after: the same quantity after the search; never below ``retained_before``.
        rounds: sampling, clustering and assignment rounds run (summed over tiles for the input
            phase, where each tile searches on its own).
        accepted: rounds whose move was kept because the objective strictly improved.
        failures: rounds whose move was rejected.
        seconds: wall-clock time of the phase.
    """

    phase: str
    retained_before: float
    retained_after: float
    rounds: int = 0
    accepted: int = 0
    failures: int = 0
    seconds: float = 0.0

    @property
    def relative_gain(self) -> float:
        """``retained_after / retained_before - 1`` (0.0 when nothing was retained before)."""
        if self.retained_before == 0.0:
            return 0.0
        return self.retained_after / self.retained_before - 1.0


@dataclass
class GyroStats:
    """Statistics of :func:`flexhinm.permute.gyro_permute` on one layer.

    Attributes:
        output: the output-channel phase.
        input: the input-channel phase, or ``None`` when the layout has no N:M columns.
        retained_unpermuted: importance kept by the region allocation without any permutation, or
            NaN when it was not computed (``fallback=False``).
        retained: importance kept by the returned layout.
        output_order_used: ``False`` when the unpermuted allocation kept more importance than the
            allocation after the output-channel phase, so the row order was reset to the identity.
        seconds: wall-clock time of the whole call.
        hinm_split_used: ``True`` when FlexHiNM's searched split was replaced by the HiNM split,
            because that split retained more after the input-channel phase.
    """

    output: PhaseStats
    input: PhaseStats | None
    retained_unpermuted: float
    retained: float
    output_order_used: bool
    seconds: float
    hinm_split_used: bool = False
