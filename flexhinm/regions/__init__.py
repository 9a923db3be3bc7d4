"""Hierarchical N:M region layouts: OVW, HiNM and FlexHiNM (three regions per tile)."""

from .layout import RegionLayout
from .counts import REGION_METHODS, RegionCounts, feasible_vector_range, region_counts
from .tiles import nm_keep_for
from .search import BoundarySearch, search_boundary
from .allocation import allocate_regions
from .monotone import check_monotone, tile_regions
from .schedule import allocate_stages, check_stages, cubic_sparsity, cubic_stages

__all__ = [
    "REGION_METHODS",
    "BoundarySearch",
    "RegionCounts",
    "RegionLayout",
    "allocate_regions",
    "allocate_stages",
    "check_monotone",
    "check_stages",
    "cubic_sparsity",
    "cubic_stages",
    "feasible_vector_range",
    "nm_keep_for",
    "region_counts",
    "search_boundary",
    "tile_regions",
]
