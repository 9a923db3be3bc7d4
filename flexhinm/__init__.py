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

# Hierarchical N:M regions, importance scores and model-level pruning
from .regions import (
    BoundarySearch,
    RegionCounts,
    RegionLayout,
    allocate_regions,
    allocate_stages,
    check_monotone,
    cubic_sparsity,
    cubic_stages,
    nm_keep_for,
    search_boundary,
)
from .importance import compute_scores
from .prune import prune_model, register_permutation
from .prune_report import LayerPruning, PruneReport

# Permutation (importing it registers the prune_model hooks "gyro" and "channel24")
from .permute import (
    GyroStats,
    PhaseStats,
    channel_permutation_24,
    gyro_input_permutation,
    gyro_output_permutation,
    gyro_permute,
    permuted_nm_mask,
)

# Hard Concrete
from .hardconcrete import HardConcrete
from .gates import (
    NMGates,
    apply_nm_gates,
    clamp_log_alpha_,
    entered_groups,
    gate_loss,
    gate_loss_terms,
    gate_param_group,
    gate_parameters,
    gates_of,
    harden_gates,
    nm_keep_from_scores,
    non_gate_parameters,
    remove_gates,
    set_temperature,
    temperature_at,
)

# Data
from .data import ImageDataset, load_dataset, make_loader, make_loaders

# Models
from .models import create_model, list_models, register_model

# Training
from .train import (
    evaluate,
    fit,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    save_checkpoint,
    seed_everything,
    train_one_epoch,
)

# Gradual pruning
from .gradual import GradualResult, Stage, default_stage_plan, gradual_prune

# Inference: compact layers, 2:4 packing and Sparse Tensor Core capability
from .inference import (
    CompactHiNMConv2d,
    CompactHiNMLinear,
    compact_layer,
    detect_capability,
    to_semi_structured,
)

__all__ = [
    "BoundarySearch",
    "CompactHiNMConv2d",
    "CompactHiNMLinear",
    "EligibilityReport",
    "GradualResult",
    "GyroStats",
    "HardConcrete",
    "ImageDataset",
    "LayerEligibility",
    "LayerPruning",
    "MaskedWeight",
    "NMGates",
    "PhaseStats",
    "PruneReport",
    "RegionCounts",
    "RegionLayout",
    "Stage",
    "allocate_regions",
    "allocate_stages",
    "apply_masks",
    "apply_nm_gates",
    "bake_masks",
    "channel_permutation_24",
    "check_monotone",
    "clamp_log_alpha_",
    "compact_layer",
    "compute_scores",
    "create_model",
    "cubic_sparsity",
    "cubic_stages",
    "default_stage_plan",
    "detect_capability",
    "eligibility_report",
    "eligible_layers",
    "entered_groups",
    "evaluate",
    "fit",
    "from_gemm",
    "gate_loss",
    "gate_loss_terms",
    "gate_param_group",
    "gate_parameters",
    "gates_of",
    "gemm_shape",
    "global_unstructured_masks",
    "gradual_prune",
    "gyro_input_permutation",
    "gyro_output_permutation",
    "gyro_permute",
    "harden_gates",
    "is_nm_sparse",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "make_loader",
    "make_loaders",
    "make_optimizer",
    "make_scheduler",
    "masks_of",
    "nm_keep_for",
    "nm_keep_from_scores",
    "nm_mask",
    "non_gate_parameters",
    "permuted_nm_mask",
    "prune_model",
    "register_model",
    "register_permutation",
    "remove_gates",
    "remove_masks",
    "save_checkpoint",
    "search_boundary",
    "seed_everything",
    "set_temperature",
    "sparsity_of",
    "temperature_at",
    "to_gemm",
    "to_semi_structured",
    "train_one_epoch",
    "unstructured_mask",
]
