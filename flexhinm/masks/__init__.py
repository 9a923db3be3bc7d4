"""Pure mask functions: each returns a ``torch.bool`` mask of the weight's shape."""

from .nm import is_nm_sparse, nm_mask, nm_mask_2d
from .unstructured import global_unstructured_masks, sparsity_of, unstructured_mask

__all__ = [
    "global_unstructured_masks",
    "is_nm_sparse",
    "nm_mask",
    "nm_mask_2d",
    "sparsity_of",
    "unstructured_mask",
]
