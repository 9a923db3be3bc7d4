"""Time dense, 2:4, HiNM and FlexHiNM layers on GEMM shapes of real networks; check every output.

Every case first compares the layer's output with the masked dense reference computed in fp32. A
wrong or failed case is recorded and not timed. Times come from
``torch.utils.benchmark.Timer.blocked_autorange`` (which synchronises CUDA) after a warm-up, as
the median and the interquartile range. Speedups are ratios against the dense layer timed in the
same run on the same input. The functions return plain dicts (one per case), ready for
``pandas.DataFrame``; ``benchmarks/tensor_cores.py`` prints and saves them.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..masks import nm_mask
from .bench_config import GEMM_SHAPES, QUICK_SHAPES, TOLERANCES, BenchmarkConfig
from .capability import cached_capability
from .compact import CompactHiNMLinear
from .semi_structured import semi_structured_rule, semi_structured_support, to_semi_structured
from .synthetic import synthetic_layout
from .tiled_gemm import COMPACT_BACKENDS

__all__ = [
    "GEMM_SHAPES",
    "QUICK_SHAPES",
    "TOLERANCES",
    "BenchmarkConfig",
    "benchmark_layer",
    "iter_benchmark",
    "run_benchmark",
]

_logger = logging.getLogger(__name__)


def benchmark_layer(out_features: int, in_features: int, **settings) -> list[dict]:
    """Time one layer shape; ``settings`` override :class:`BenchmarkConfig` fields.

    Example:
        >>> rows = benchmark_layer(64, 128, tokens=(4,), sparsities=(0.75,), min_run_time=0.01)
        >>> sorted({(row["method"], row["status"]) for row in rows})
        [('dense', 'ok'), ('flexhinm', 'ok'), ('hinm', 'ok')]
    """
    name = f"{out_features}x{in_features}"
    config = replace(BenchmarkConfig.for_device(settings.get("device", "cpu")),
                     shapes={name: (out_features, in_features)})
    return run_benchmark(replace(config, **settings))


def run_benchmark(config: BenchmarkConfig, *, progress: bool = False) -> list[dict]:
    """Return all rows of :func:`iter_benchmark` as a list."""
    return list(iter_benchmark(config, progress=progress))


def iter_benchmark(config: BenchmarkConfig, *, progress: bool = False) -> Iterator[dict]:
    """Yield one dict per case: time, correctness and counts (see the module docstring).

    Rows have ``status`` ``"ok"``, ``"wrong"`` (output differs from the reference; not timed),
    ``"failed"`` (an exception, recorded in ``error``) or ``"skipped"`` (the reason is in ``error``).
    """
    _check_config(config)
    device = torch.device(config.device)
    pairs = [(name, dtype) for name in config.shapes for dtype in config.dtypes]
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="shapes")

    for name, dtype_name in pairs:
        dtype = getattr(torch, dtype_name)
        yield from _benchmark_shape(config, name, config.shapes[name], dtype, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _benchmark_shape(config: BenchmarkConfig, name: str, shape: tuple[int, int],
                     dtype: torch.dtype, device: torch.device) -> Iterator[dict]:
    """Yield the rows of every variant and batch size of one shape and dtype."""
    rows, columns = shape
    generator = torch.Generator().manual_seed(config.seed)
    weight = (torch.randn(rows, columns, generator=generator) / math.sqrt(columns)).to(device, dtype)
    bias = (0.1 * torch.randn(rows, generator=generator)).to(device, dtype)
    base = {"shape": name, "out_features": rows, "in_features": columns,
            "dtype": dtype_name_of(dtype), "device": str(device)}

    variants = []
    for info, build in _variant_builders(config, weight, bias):
        try:
            layer, effective, details = build()
            variants.append(({**info, **details}, layer, effective))
        except _Skip as skip:
            yield {**base, **info, "tokens": None, "status": "skipped", "error": str(skip)}
        except Exception as error:  # noqa: BLE001 (the benchmark fails soft per case)
            yield {**base, **info, "tokens": None, "status": "failed",
                   "error": f"{type(error).__name__}: {error}"}

    for tokens in config.tokens:
        gflop = 2 * tokens * rows * columns / 1e9
        x = torch.randn(tokens, columns, generator=generator).to(device, dtype)
        results = []
        for info, layer, effective in variants:
            row = {**base, **info, "tokens": tokens, "gflop_dense": gflop}
            if config.max_gflop is not None and gflop > config.max_gflop:
                row.update(status="skipped",
                           error=f"dense GEMM needs {gflop:.1f} GFLOP > max_gflop={config.max_gflop}")
            else:
                row.update(_time_case(layer, effective, bias, x, config))
            _logger.info("%s %s tokens=%d %s %s: %s", name, row["dtype"], tokens, row["method"],
                         row.get("backend"), row.get("median_ms", row["status"]))
            results.append(row)

        # Speedups compare with the dense case of the same shape, dtype and input.
        dense = [row["median_ms"] for row in results if row["method"] == "dense" and row["status"] == "ok"]
        for row in results:
            if dense and row["status"] == "ok":
                row["speedup"] = dense[0] / row["median_ms"]
        yield from results


def _check_config(config: BenchmarkConfig) -> None:
    """Raise ``ValueError`` for dtype, method or backend names the benchmark does not know."""
    for dtype_name in config.dtypes:
        if not isinstance(getattr(torch, dtype_name, None), torch.dtype):
            raise ValueError(f"dtype {dtype_name!r} is invalid; use names such as 'float16' or 'bfloat16'")
    unknown = set(config.methods) - {"dense", "2:4", "hinm", "flexhinm"}
    if unknown:
        raise ValueError(f"methods {sorted(unknown)} are invalid; choose dense, 2:4, hinm or flexhinm")
    unknown = set(config.compact_backends) - set(COMPACT_BACKENDS)
    if unknown:
        raise ValueError(f"compact_backends {sorted(unknown)} are invalid; choose from {list(COMPACT_BACKENDS)}")


class _Skip(Exception):
    """Raised for a variant that cannot run here; the message gives the reason."""


def _variant_builders(config: BenchmarkConfig, weight: torch.Tensor,
                      bias: torch.Tensor) -> Iterator[tuple[dict, Callable]]:
    """Yield ``(info, build)``; ``build()`` returns ``(layer, effective weight, details)``."""
    for method in config.methods:
        if method == "dense":
            yield {"method": "dense", "target_sparsity": 0.0}, lambda: _dense_layer(weight, bias)
        elif method == "2:4":
            yield {"method": "2:4", "target_sparsity": 0.5}, lambda: _whole_layer_24(weight, bias)
        else:
            for sparsity in config.sparsities:
                for backend in config.compact_backends:
                    info = {"method": method, "target_sparsity": sparsity,
                            "requested_backend": backend}
                    yield info, _compact_builder(config, weight, bias, method, sparsity, backend)


def _dense_layer(weight: torch.Tensor, bias: torch.Tensor) -> tuple[Callable, torch.Tensor, dict]:
    """Return the unpruned layer, the baseline of every speedup."""

    def layer(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, bias)

    details = {"backend": "dense", "sparsity": 0.0, "multiply_adds_per_token": weight.numel()}
    return layer, weight, details


def _whole_layer_24(weight: torch.Tensor, bias: torch.Tensor) -> tuple[Callable, torch.Tensor, dict]:
    """Build a 2:4 magnitude-pruned copy of the whole layer, packed for Sparse Tensor Cores."""
    effective = weight * nm_mask(weight.abs().float(), n=2, m=4)
    reason = semi_structured_support(tuple(weight.shape), weight.dtype, weight.device, pattern=(2, 4))
    if reason is not None:
        raise _Skip(f"whole-layer 2:4 needs Sparse Tensor Cores: {reason}")
    packed = to_semi_structured(effective)
    details = {"backend": "semi_structured", "sparsity": 0.5,
               "multiply_adds_per_token": weight.numel() // 2}
    return (lambda x: F.linear(x, packed, bias)), effective, details


def _compact_builder(config: BenchmarkConfig, weight: torch.Tensor, bias: torch.Tensor,
                     method: str, sparsity: float, backend: str) -> Callable:
    """Return a ``build()`` for a compact HiNM or FlexHiNM layer on a random layout."""

    def build() -> tuple[Callable, torch.Tensor, dict]:
        layout = synthetic_layout(tuple(weight.shape), method=method, sparsity=sparsity,
                                  tile_rows=config.tile_rows, seed=config.seed,
                                  align=_column_align(weight))
        layer = CompactHiNMLinear.from_layout(weight, bias, layout, backend=backend)
        try:
            resolved = layer.resolved_backend()
        except ValueError as error:
            raise _Skip(str(error)) from error
        if resolved == "semi_structured":
            layer.pack()

        pruned, nm, dense = layout.counts
        per_token = layout.rows * (dense + (nm // 2 if resolved == "semi_structured" else nm))
        details = {"backend": resolved, "sparsity": layout.sparsity, "tile_rows": layout.tile_rows,
                   "counts": [pruned, nm, dense], "multiply_adds_per_token": per_token}
        effective = weight * layout.mask().to(weight.device)
        return layer, effective, details

    return build


def _column_align(weight: torch.Tensor) -> int:
    """Return the multiple of 2:4 columns that the preferred backend accepts for ``weight``.

    cuSPARSELt takes multiples of 16 in fp16 and bf16, CUTLASS multiples of 64. Without a 2:4
    backend the layouts keep the cuSPARSELt rounding, so every machine times the same counts.
    """
    if weight.device.type != "cuda":
        return 16
    backend = cached_capability(weight.device.index).backend
    rule = None if backend == "none" else semi_structured_rule(weight.dtype, backend)
    return 16 if rule is None else max(16, rule.column_multiple)


def _time_case(layer: Callable, effective: torch.Tensor, bias: torch.Tensor, x: torch.Tensor,
               config: BenchmarkConfig) -> dict:
    """Check ``layer(x)`` against the fp32 masked dense reference, then time it."""
    tolerance = TOLERANCES.get(x.dtype, 5e-2)

    # The timer synchronises only the current CUDA device, so make the input's device current.
    on_device = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    try:
        with on_device, torch.inference_mode():
            output = layer(x)
            reference = F.linear(x.float(), effective.float(), bias.float())
            if output.shape != reference.shape:
                return {"status": "wrong", "max_error": None, "tolerance": tolerance,
                        "error": f"output has shape {tuple(output.shape)}, the masked dense "
                                 f"reference {tuple(reference.shape)}"}

            scale = reference.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
            error = float(((output.float() - reference).abs().max() / scale).item())
            if not error <= tolerance:
                return {"status": "wrong", "max_error": error, "tolerance": tolerance,
                        "error": f"output differs from the masked dense reference by {error:.3g} "
                                 f"(relative to max |reference|), above {tolerance:g}"}

            for _ in range(3):
                layer(x)
            # Imported here: torch.utils.benchmark logs a CUDA_HOME warning on import without CUDA.
            from torch.utils.benchmark import Timer

            timer = Timer(stmt="layer(x)", globals={"layer": layer, "x": x},
                          num_threads=config.num_threads)
            measurement = timer.blocked_autorange(min_run_time=config.min_run_time)
    except Exception as failure:  # noqa: BLE001 (the benchmark fails soft per case)
        return {"status": "failed", "error": f"{type(failure).__name__}: {failure}"}

    return {"status": "ok", "max_error": error, "tolerance": tolerance,
            "median_ms": measurement.median * 1e3, "iqr_ms": measurement.iqr * 1e3,
            "runs": len(measurement.times), "calls_per_run": measurement.number_per_run,
            "error": None}


def dtype_name_of(dtype: torch.dtype) -> str:
    """Return ``"float16"`` for ``torch.float16`` and so on."""
    return str(dtype).removeprefix("torch.")
