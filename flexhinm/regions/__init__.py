"""Hierarchical N:M region layouts: OVW, HiNM and FlexHiNM (three regions per tile)."""

from .layout import RegionLayout

__all__ = ["RegionLayout"]
