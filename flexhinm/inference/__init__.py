"""Inference with FlexHiNM layouts: compact layers, 2:4 packing, capability checks and benchmarks.

* :class:`CompactHiNMLinear` / :class:`CompactHiNMConv2d`: layers that store and multiply only the
  dense and 2:4 columns of every tile, equal to the masked dense layer.
* :func:`to_semi_structured`: pattern-checked packing for Sparse Tensor Cores (CUDA, sm80+).
* :func:`compress_2to4`: the compressed format (values + 2-bit positions) on the CPU.
* :func:`detect_capability`: GPU, compute capability, cuSPARSELt and the 2:4 backend in plain words.
* :func:`benchmark_layer` / :func:`run_benchmark`: checked timings as plain dicts.
"""

from .benchmark import (
    GEMM_SHAPES,
    QUICK_SHAPES,
    BenchmarkConfig,
    benchmark_layer,
    iter_benchmark,
    run_benchmark,
)
from .capability import SparseCapability, choose_backend, detect_capability
from .compact import CompactHiNMConv2d, CompactHiNMLinear, compact_layer
from .environment import cusparselt_package, environment_info
from .compressed import (
    Compressed2to4,
    compress_2to4,
    decompress_2to4,
    pack_metadata,
    torch_reference_compress,
    unpack_metadata,
)
from .semi_structured import (
    SemiStructuredRule,
    check_nm_pattern,
    count_nm_violations,
    semi_structured_rule,
    semi_structured_support,
    to_semi_structured,
)
from .synthetic import synthetic_counts, synthetic_layout
from .tiled_gemm import COMPACT_BACKENDS, CompactHiNMBase

__all__ = [
    "COMPACT_BACKENDS",
    "GEMM_SHAPES",
    "QUICK_SHAPES",
    "BenchmarkConfig",
    "CompactHiNMBase",
    "CompactHiNMConv2d",
    "CompactHiNMLinear",
    "Compressed2to4",
    "SemiStructuredRule",
    "SparseCapability",
    "benchmark_layer",
    "check_nm_pattern",
    "choose_backend",
    "compact_layer",
    "compress_2to4",
    "count_nm_violations",
    "cusparselt_package",
    "decompress_2to4",
    "detect_capability",
    "environment_info",
    "iter_benchmark",
    "pack_metadata",
    "synthetic_counts",
    "run_benchmark",
    "semi_structured_rule",
    "semi_structured_support",
    "synthetic_layout",
    "to_semi_structured",
    "torch_reference_compress",
    "unpack_metadata",
]
