"""flexhinm: hierarchical N:M sparsity for PyTorch, from 2:4 masks to FlexHiNM-GP.

Glossary (used the same way in the code, the docstrings and the book):

* **GEMM view**: a weight seen as a matrix with one row per output channel and one column per
  element of the reduction dimension. Linear weights are used as they are; a Conv2d weight becomes
  ``weight.permute(0, 2, 3, 1).reshape(C_out, kh * kw * C_in)``.
* **N:M sparsity**: keep N of every M consecutive weights along the reduction dimension (each row
  of the GEMM view). 2:4 is the pattern of NVIDIA Sparse Tensor Cores.
* **sparsity**: the fraction of zeros (0.75 means three weights in four are zero).
* **tile**: ``tile_rows`` (V) output rows; a **column vector** is one column of a tile.
* **OVW**: prune whole column vectors. **HiNM**: prune column vectors, then 2:4 on the rest.
  **FlexHiNM**: per tile, pruned (0:4), 2:4 and dense (4:4) column regions.
* **vector sparsity** ``v``: the fraction of column vectors pruned.
* **mask**: a ``torch.bool`` tensor of the weight's shape, ``True`` where a weight is kept.
"""

__version__ = "0.1.0"

# GEMM view
from .gemm import from_gemm, gemm_shape, to_gemm

# N:M and unstructured masks
from .masks import (
    global_unstructured_masks,
    is_nm_sparse,
    nm_mask,
    sparsity_of,
    unstructured_mask,
)

# Masks on models
from .sparsify import MaskedWeight, apply_masks, bake_masks, masks_of, remove_masks
from .eligibility import EligibilityReport, LayerEligibility, eligibility_report, eligible_layers

# Hierarchical N:M regions
from .regions import RegionLayout

__all__ = [
    "EligibilityReport",
    "LayerEligibility",
    "MaskedWeight",
    "RegionLayout",
    "apply_masks",
    "bake_masks",
    "eligibility_report",
    "eligible_layers",
    "from_gemm",
    "gemm_shape",
    "global_unstructured_masks",
    "is_nm_sparse",
    "masks_of",
    "nm_mask",
    "remove_masks",
    "sparsity_of",
    "to_gemm",
    "unstructured_mask",
]
