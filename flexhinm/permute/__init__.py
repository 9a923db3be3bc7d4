"""Channel permutations that let hierarchical N:M and 2:4 masks keep more important weights.

* :func:`gyro_permute`: Gyro-Permutation and region allocation for one layer, returning a
  :class:`~flexhinm.RegionLayout`; its phases are :func:`gyro_output_permutation` and
  :func:`gyro_input_permutation`.
* :func:`channel_permutation_24`: a single-level 2:4 baseline, one input-channel order per layer,
  with :func:`permuted_nm_mask` for its mask.

Importing this package registers the ``prune_model`` permutation hooks ``"gyro"`` and
``"channel24"``.
"""

from .channel24 import channel_permutation_24, permuted_nm_mask
from .cost import linear_assignment, replacement_retained, top_k_sum, vector_assignment_cost
from .gyro import DEFAULT_SCHEDULE, gyro_input_permutation, gyro_output_permutation
from .kmeans import balanced_kmeans
from .pipeline import gyro_permute, output_kept_columns
from .stats import GyroStats, PhaseStats

__all__ = [
    "DEFAULT_SCHEDULE",
    "GyroStats",
    "PhaseStats",
    "balanced_kmeans",
    "channel_permutation_24",
    "gyro_input_permutation",
    "gyro_output_permutation",
    "gyro_permute",
    "linear_assignment",
    "output_kept_columns",
    "permuted_nm_mask",
    "replacement_retained",
    "top_k_sum",
    "vector_assignment_cost",
]
