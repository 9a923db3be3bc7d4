"""Settings of the tensor-core benchmark: the GEMM shapes, the accepted errors and the defaults."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

__all__ = ["GEMM_SHAPES", "QUICK_SHAPES", "TOLERANCES", "BenchmarkConfig"]


# (out_features, in_features) of the GEMM view; a k x k convolution has k * k * C_in columns.
# BERT-base has the same projection and MLP shapes as ViT-B (hidden size 768, MLP 3072), and the
# Llama-7B gate projection has the shape of its up projection.
GEMM_SHAPES: dict[str, tuple[int, int]] = {
    "resnet50.layer1.conv3x3": (64, 576),
    "resnet50.layer3.conv3x3": (256, 2304),
    "resnet50.layer4.conv3x3": (512, 4608),
    "resnet50.layer4.conv1x1": (2048, 512),
    "vit_b.attn.proj": (768, 768),
    "vit_b.attn.qkv": (2304, 768),
    "vit_b.mlp.fc1": (3072, 768),
    "vit_b.mlp.fc2": (768, 3072),
    "llama7b.mlp.up": (11008, 4096),
    "llama7b.mlp.down": (4096, 11008),
}
QUICK_SHAPES = ("resnet50.layer3.conv3x3", "vit_b.mlp.fc1", "vit_b.mlp.fc2")

# Largest accepted max |output - reference| / max |reference| per dtype (reference in fp32).
TOLERANCES = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


@dataclass
class BenchmarkConfig:
    """Settings of a benchmark run; ``BenchmarkConfig.for_device`` gives the CPU and GPU defaults.

    Attributes:
        shapes: name -> ``(out_features, in_features)``.
        tokens: batch sizes, i.e. rows of the input matrix.
        dtypes: dtype names such as ``"float32"``, ``"float16"``, ``"bfloat16"``.
        methods: any of ``"dense"``, ``"2:4"`` (whole layer), ``"hinm"``, ``"flexhinm"``.
        sparsities: target sparsities of the HiNM and FlexHiNM layouts.
        compact_backends: backends of the compact layers (``"auto"``, ``"masked_dense"``,
            ``"semi_structured"``); each one is a separate case.
        device: ``"cpu"`` or a CUDA device.
        tile_rows: rows per tile of the layouts.
        min_run_time: seconds of timing per case, at least.
        num_threads: CPU threads during timing.
        seed: seed of the weights, inputs and layouts.
        max_gflop: skip cases whose dense GEMM needs more than this many GFLOP (None: no limit).
    """

    shapes: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(GEMM_SHAPES))
    tokens: tuple[int, ...] = (1, 16, 64, 256, 1024, 4096)
    dtypes: tuple[str, ...] = ("float32",)
    methods: tuple[str, ...] = ("dense", "hinm", "flexhinm")
    sparsities: tuple[float, ...] = (0.75, 0.875)
    compact_backends: tuple[str, ...] = ("masked_dense",)
    device: str = "cpu"
    tile_rows: int = 64
    min_run_time: float = 0.2
    num_threads: int = 1
    seed: int = 0
    max_gflop: float | None = None

    @classmethod
    def for_device(cls, device: str = "cpu", *, quick: bool = False) -> BenchmarkConfig:
        """Return the defaults: fp32 dense vs compact on a CPU; fp16/bf16 and every method on CUDA.

        The CPU defaults skip cases above 10 GFLOP (a Llama-7B MLP layer above 64 tokens) and time
        each case for at least 0.5 s. The GPU defaults time each case for at least 0.1 s.
        ``quick`` keeps three shapes and three (CPU) or four (GPU) batch sizes.
        """
        if torch.device(device).type == "cuda":
            config = cls(dtypes=("float16", "bfloat16"), methods=("dense", "2:4", "hinm", "flexhinm"),
                         compact_backends=("semi_structured", "masked_dense"), device=device,
                         min_run_time=0.1)
            if quick:
                config = replace(config, shapes={k: GEMM_SHAPES[k] for k in QUICK_SHAPES},
                                 tokens=(1, 64, 1024, 4096))
            return config

        config = cls(max_gflop=10.0, min_run_time=0.5)
        if quick:
            config = replace(config, shapes={k: GEMM_SHAPES[k] for k in QUICK_SHAPES},
                             tokens=(1, 64, 256))
        return config
