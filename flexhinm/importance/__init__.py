"""Importance scores of weights: magnitude, first-order Taylor and second-order (OBS, empirical Fisher)."""

from .fisher import FisherAccumulator
from .scores import SCORE_METHODS, compute_scores

__all__ = ["SCORE_METHODS", "FisherAccumulator", "compute_scores"]
