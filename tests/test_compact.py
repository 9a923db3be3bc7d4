"""Compact HiNM/FlexHiNM layers equal the masked dense layers they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flexhinm import RegionLayout
from flexhinm.gemm import gemm_shape
from flexhinm.inference import (
    CompactHiNMConv2d,
    CompactHiNMLinear,
    compact_layer,
    detect_capability,
    semi_structured,
    tiled_gemm,
)

# (pruned, 2:4, dense) columns per tile for a 16-column GEMM view: every region mix.
MIXES_16 = [(0, 0, 16), (0, 16, 0), (16, 0, 0), (4, 8, 4), (8, 4, 4), (8, 8, 0), (0, 8, 8), (12, 0, 4)]


def make_layout(shape, tile_rows, counts, *, permute_rows=True, shuffle_groups=True, shared=False,
                seed=0, n=2, m=4) -> RegionLayout:
    """Build a random layout by hand: random regions per tile, random kept pairs per group."""
    rows, columns = gemm_shape(shape)
    generator = torch.Generator().manual_seed(seed)
    tiles = rows // tile_rows
    pruned, nm, dense = counts

    row_order = torch.randperm(rows, generator=generator) if permute_rows else torch.arange(rows)
    if shared:
        order = torch.randperm(columns, generator=generator).expand(tiles, -1)
    else:
        order = torch.stack([torch.randperm(columns, generator=generator) for _ in range(tiles)])
    dense_cols, nm_cols, pruned_cols = order[:, :dense], order[:, dense:dense + nm], order[:, dense + nm:]
    if not shuffle_groups:
        nm_cols = nm_cols.sort(dim=1).values

    keys = torch.rand(tiles, tile_rows, nm // m, m, generator=generator)
    nm_keep = (keys.argsort(dim=-1).argsort(dim=-1) < n).reshape(tiles, tile_rows, nm)
    return RegionLayout(shape=shape, tile_rows=tile_rows, row_order=row_order,
                        pruned_cols=pruned_cols.contiguous(), nm_cols=nm_cols.contiguous(),
                        dense_cols=dense_cols.contiguous(), nm_keep=nm_keep, n=n, m=m)


def hand_layout() -> RegionLayout:
    """A 4 x 12 layout, 2 tiles of rows {2, 0} and {3, 1}, 4 columns in each region."""
    return RegionLayout(
        shape=(4, 12), tile_rows=2, row_order=torch.tensor([2, 0, 3, 1]),
        dense_cols=torch.tensor([[0, 1, 2, 3], [8, 9, 10, 11]]),
        nm_cols=torch.tensor([[4, 5, 6, 7], [3, 1, 7, 5]]),
        pruned_cols=torch.tensor([[8, 9, 10, 11], [0, 2, 4, 6]]),
        nm_keep=torch.tensor([
            [[True, True, False, False], [False, False, True, True]],    # rows 2 and 0
            [[True, False, True, False], [False, True, False, True]],    # rows 3 and 1
        ]),
    )


def install_fake_packing(monkeypatch) -> list:
    """Let the semi-structured path run on the CPU with dense matrices in place of packed ones."""
    packed_shapes = []

    def support(shape, dtype, device, *, backend="auto", pattern=None):
        return None

    def pack(weight, *, backend="auto"):
        semi_structured.check_nm_pattern(weight)
        packed_shapes.append(tuple(weight.shape))
        return weight.clone()

    monkeypatch.setattr(semi_structured, "semi_structured_support", support)
    monkeypatch.setattr(semi_structured, "to_semi_structured", pack)
    return packed_shapes


def masked_reference_linear(x, weight, bias, layout):
    """Masked dense Linear in the precision of its inputs."""
    return F.linear(x, torch.where(layout.mask(), weight, torch.zeros_like(weight)), bias)


# ----------------------------------------------------------------------------- Linear
def test_compact_linear_hand_example():
    """Summed kept weights of a hand-built layout match values computed by hand."""
    weight = torch.arange(48, dtype=torch.float64).reshape(4, 12)
    layer = CompactHiNMLinear.from_layout(weight, None, hand_layout())
    output = layer(torch.ones(1, 12, dtype=torch.float64))
    assert output.tolist() == [[19.0, 116.0, 159.0, 264.0]]


@pytest.mark.parametrize("counts", MIXES_16)
@pytest.mark.parametrize("permute_rows", [False, True])
@pytest.mark.parametrize("shuffle_groups", [False, True])
def test_compact_linear_matches_masked_dense(counts, permute_rows, shuffle_groups):
    """Every region mix, row order and 2:4 grouping gives the masked dense output (fp64)."""
    layout = make_layout((8, 16), 4, counts, permute_rows=permute_rows, shuffle_groups=shuffle_groups)
    weight = torch.randn(8, 16, dtype=torch.float64)
    bias = torch.randn(8, dtype=torch.float64)
    x = torch.randn(5, 16, dtype=torch.float64)

    output = CompactHiNMLinear.from_layout(weight, bias, layout)(x)
    torch.testing.assert_close(output, masked_reference_linear(x, weight, bias, layout),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float16, 2e-3),
                                              (torch.bfloat16, 1.6e-2)])
def test_compact_linear_low_precision(dtype, tolerance):
    """fp32, fp16 and bf16 outputs stay within the dtype's rounding of the fp64 reference."""
    layout = make_layout((64, 128), 16, (48, 64, 16))
    weight = torch.randn(64, 128).to(dtype)
    bias = torch.randn(64).to(dtype)
    x = torch.randn(32, 128).to(dtype)

    output = CompactHiNMLinear.from_layout(weight, bias, layout)(x)
    reference = masked_reference_linear(x.double(), weight.double(), bias.double(), layout)
    error = ((output.double() - reference).abs().max() / reference.abs().max()).item()
    assert output.dtype == dtype
    assert error < tolerance, f"relative error {error:.3g} in {dtype}"


def test_compact_linear_dtype_argument_casts_weights():
    """dtype=float64 stores fp64 weights built from an fp32 weight."""
    layout = make_layout((8, 16), 4, (4, 8, 4))
    layer = CompactHiNMLinear.from_layout(torch.randn(8, 16), torch.randn(8), layout, dtype=torch.float64)
    assert layer.weight_tiles.dtype == torch.float64
    assert layer.bias.dtype == torch.float64


def test_compact_linear_all_pruned_returns_bias():
    """A layer whose tiles prune every column returns exactly its bias."""
    layout = make_layout((8, 16), 4, (16, 0, 0))
    bias = torch.randn(8)
    output = CompactHiNMLinear.from_layout(torch.randn(8, 16), bias, layout)(torch.randn(3, 16))
    assert torch.equal(output, bias.expand(3, -1))


def test_compact_linear_ignores_masked_out_weights():
    """NaN in pruned and dropped 2:4 weights never reaches the output."""
    layout = make_layout((8, 16), 4, (4, 8, 4))
    weight = torch.randn(8, 16, dtype=torch.float64)
    poisoned = torch.where(layout.mask(), weight, torch.full_like(weight, float("nan")))
    x = torch.randn(3, 16, dtype=torch.float64)

    output = CompactHiNMLinear.from_layout(poisoned, None, layout)(x)
    torch.testing.assert_close(output, masked_reference_linear(x, weight, None, layout),
                               rtol=0, atol=1e-12)


def test_compact_linear_never_reads_pruned_inputs():
    """A tile never reads its pruned input features: NaN there leaves its rows finite."""
    weight = torch.randn(4, 12, dtype=torch.float64)
    layer = CompactHiNMLinear.from_layout(weight, None, hand_layout())

    # Tile 0 (rows 2, 0) prunes columns 8..11; tile 1 (rows 3, 1) prunes 0, 2, 4, 6.
    for nan_columns, finite_rows, nan_rows in (([8, 9, 10, 11], [0, 2], [1, 3]),
                                               ([0, 2, 4, 6], [1, 3], [0, 2])):
        x = torch.randn(2, 12, dtype=torch.float64)
        x[:, nan_columns] = float("nan")
        output = layer(x)
        assert torch.isfinite(output[:, finite_rows]).all(), f"NaN in columns {nan_columns}"
        assert torch.isnan(output[:, nan_rows]).all(), f"NaN in columns {nan_columns}"


def test_compact_linear_stores_kept_columns_only():
    """The stored weights hold dense + 2:4 columns per tile, not the pruned ones."""
    layout = make_layout((8, 16), 4, (8, 4, 4))
    layer = CompactHiNMLinear.from_layout(torch.randn(8, 16), None, layout)
    assert tuple(layer.weight_tiles.shape) == (2, 8, 4)
    assert tuple(layer.input_index.shape) == (2, 8)
    assert layer.multiply_adds(tokens=3) == 3 * 8 * 8


def test_compact_linear_leading_dimensions():
    """Inputs of shape (..., in_features) keep their leading dimensions."""
    layout = make_layout((8, 16), 4, (4, 8, 4))
    weight, x = torch.randn(8, 16), torch.randn(2, 3, 16)
    output = CompactHiNMLinear.from_layout(weight, None, layout)(x)
    assert output.shape == (2, 3, 8)
    torch.testing.assert_close(output, masked_reference_linear(x, weight, None, layout))


def test_compact_linear_from_linear_and_state_dict():
    """from_linear copies the module; a second layer loads the first one's state_dict."""
    linear = nn.Linear(16, 8)
    layout = make_layout((8, 16), 4, (4, 8, 4))
    first = CompactHiNMLinear.from_linear(linear, layout)
    second = CompactHiNMLinear.from_layout(torch.zeros(8, 16), torch.zeros(8), layout)
    second.load_state_dict(first.state_dict())

    x = torch.randn(3, 16)
    with torch.no_grad():
        reference = masked_reference_linear(x, linear.weight, linear.bias, layout)
    torch.testing.assert_close(second(x), reference)


def test_compact_linear_one_to_four_layout():
    """A 1:4 layout runs on the masked dense path and is reported as not packable."""
    layout = make_layout((8, 16), 4, (4, 8, 4), n=1)
    weight, x = torch.randn(8, 16), torch.randn(3, 16)
    layer = CompactHiNMLinear.from_layout(weight, None, layout)
    torch.testing.assert_close(layer(x), masked_reference_linear(x, weight, None, layout))
    assert "2:4 only" in layer.semi_structured_reason()


@pytest.mark.parametrize("budget", [1, 5 * 4 * 8 * 8])
def test_compact_linear_chunked_tiles(monkeypatch, budget):
    """Tiles run in chunks (1 tile, then 2 of 5 at a time) and still match the masked dense layer."""
    monkeypatch.setattr(tiled_gemm, "CPU_GATHER_BYTES", budget)
    layout = make_layout((20, 16), 4, (4, 8, 4))
    weight, bias = torch.randn(20, 16, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    x = torch.randn(5, 16, dtype=torch.float64)

    output = CompactHiNMLinear.from_layout(weight, bias, layout)(x)
    torch.testing.assert_close(output, masked_reference_linear(x, weight, bias, layout),
                               rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- backends
def test_compact_auto_backend_on_cpu_is_masked_dense():
    """backend='auto' on the CPU resolves to the masked dense GEMM."""
    layer = CompactHiNMLinear.from_layout(torch.randn(8, 16), None, make_layout((8, 16), 4, (4, 8, 4)))
    assert layer.resolved_backend() == "masked_dense"


def test_compact_semi_structured_backend_on_cpu_raises():
    """backend='semi_structured' on the CPU raises and names the missing CUDA device."""
    layout = make_layout((8, 16), 4, (4, 8, 4))
    layer = CompactHiNMLinear.from_layout(torch.randn(8, 16), None, layout, backend="semi_structured")
    with pytest.raises(ValueError, match="CUDA device"):
        layer(torch.randn(2, 16))


@pytest.mark.parametrize("counts", [(4, 8, 4), (0, 16, 0), (8, 8, 0)])
@pytest.mark.parametrize("shared", [False, True])
def test_compact_semi_structured_path_logic(monkeypatch, counts, shared):
    """With packing faked on the CPU, the semi-structured path equals the masked dense layer."""
    packed_shapes = install_fake_packing(monkeypatch)
    layout = make_layout((16, 16), 4, counts, shared=shared)
    weight, bias = torch.randn(16, 16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    x = torch.randn(5, 16, dtype=torch.float64)

    layer = CompactHiNMLinear.from_layout(weight, bias, layout, backend="semi_structured")
    torch.testing.assert_close(layer(x), masked_reference_linear(x, weight, bias, layout),
                               rtol=0, atol=1e-12)
    expected = [(16, counts[1])] if shared else [(4, counts[1])] * 4
    assert packed_shapes == expected


def test_compact_requires_two_to_four_backend(monkeypatch):
    """The compact layer passes pattern (2, 4) to the support check and falls back on a reason."""
    calls = []

    def support(shape, dtype, device, *, backend="auto", pattern=None):
        calls.append(pattern)
        return "the cutlass backend runs torch.float32 as 1:2, not 2:4"

    monkeypatch.setattr(semi_structured, "semi_structured_support", support)
    layer = CompactHiNMLinear.from_layout(torch.randn(8, 16), None, make_layout((8, 16), 4, (4, 8, 4)))
    assert layer.resolved_backend() == "masked_dense"
    assert calls == [(2, 4)]


def test_compact_move_drops_packed_weights(monkeypatch):
    """Changing dtype or device drops packed weights so that they are rebuilt."""
    install_fake_packing(monkeypatch)
    layout = make_layout((8, 16), 4, (4, 8, 4))
    layer = CompactHiNMLinear.from_layout(torch.randn(8, 16), None, layout, backend="semi_structured")
    layer.pack()
    assert layer._packed is not None
    layer.double()
    assert layer._packed is None


def test_compact_load_state_dict_repacks(monkeypatch):
    """Loading a state dict drops packed weights, so the output follows the loaded weights."""
    install_fake_packing(monkeypatch)
    layout = make_layout((8, 16), 4, (4, 8, 4))
    old, new = torch.randn(8, 16), torch.randn(8, 16)
    layer = CompactHiNMLinear.from_layout(old, None, layout, backend="semi_structured")
    x = torch.randn(3, 16)
    torch.testing.assert_close(layer(x), masked_reference_linear(x, old, None, layout))

    layer.load_state_dict(CompactHiNMLinear.from_layout(new, None, layout).state_dict())
    assert layer._packed is None
    torch.testing.assert_close(layer(x), masked_reference_linear(x, new, None, layout))


# ----------------------------------------------------------------------------- Conv2d
CONV_CASES = [
    # (kernel, stride, padding, dilation)
    ((3, 3), 1, 1, 1),
    ((3, 3), 2, 0, 1),
    ((3, 3), 1, 2, 2),
    ((1, 1), 1, 0, 1),
    ((3, 1), (2, 1), (1, 0), 1),
]


@pytest.mark.parametrize("kernel, stride, padding, dilation", CONV_CASES)
@pytest.mark.parametrize("counts", [(0, 0, 72), (0, 72, 0), (72, 0, 0), (36, 24, 12), (24, 48, 0)])
@pytest.mark.parametrize("permute_rows", [False, True])
def test_compact_conv2d_matches_masked_dense(kernel, stride, padding, dilation, counts, permute_rows):
    """Compact Conv2d equals the masked dense convolution for every region mix (fp64)."""
    c_in = 72 // (kernel[0] * kernel[1])
    conv = nn.Conv2d(c_in, 8, kernel, stride=stride, padding=padding, dilation=dilation).double()
    layout = make_layout(tuple(conv.weight.shape), 4, counts, permute_rows=permute_rows)
    x = torch.randn(2, c_in, 9, 10, dtype=torch.float64)

    output = CompactHiNMConv2d.from_conv2d(conv, layout)(x)
    with torch.no_grad():
        masked = torch.where(layout.mask(), conv.weight, torch.zeros_like(conv.weight))
        reference = F.conv2d(x, masked, conv.bias, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(output, reference, rtol=0, atol=1e-12)


def test_compact_conv2d_fp32_same_padding_unbatched():
    """padding='same' and an unbatched (C, H, W) input match nn.Conv2d in fp32."""
    conv = nn.Conv2d(8, 8, 3, padding="same")
    layout = make_layout((8, 8, 3, 3), 8, (36, 24, 12))
    x = torch.randn(8, 7, 7)

    output = CompactHiNMConv2d.from_conv2d(conv, layout)(x)
    with torch.no_grad():
        reference = F.conv2d(x, conv.weight * layout.mask(), conv.bias, padding=1)
    assert output.shape == (8, 7, 7)
    torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-5)


def test_compact_conv2d_rejects_groups():
    """groups=2 raises, naming groups=1 as the only supported value."""
    layout = make_layout((8, 4, 3, 3), 4, (12, 16, 8))
    with pytest.raises(ValueError, match="groups=2 is not supported"):
        CompactHiNMConv2d.from_layout(torch.randn(8, 4, 3, 3), None, layout, groups=2)


def test_compact_conv2d_rejects_reflect_padding():
    """padding_mode='reflect' raises."""
    conv = nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        CompactHiNMConv2d.from_conv2d(conv, make_layout((8, 4, 3, 3), 4, (12, 16, 8)))


def test_compact_conv2d_rejects_asymmetric_same():
    """padding='same' with an even kernel raises (it would need asymmetric padding)."""
    layout = make_layout((8, 4, 2, 2), 4, (4, 8, 4))
    with pytest.raises(ValueError, match="asymmetric"):
        CompactHiNMConv2d.from_layout(torch.randn(8, 4, 2, 2), None, layout, padding="same")


def test_compact_conv2d_rejects_bad_stride():
    """stride=0 raises."""
    layout = make_layout((8, 4, 3, 3), 4, (12, 16, 8))
    with pytest.raises(ValueError, match="stride=0 is invalid"):
        CompactHiNMConv2d.from_layout(torch.randn(8, 4, 3, 3), None, layout, stride=0)


def test_compact_conv2d_rejects_wrong_channels():
    """An input with the wrong channel count raises."""
    layout = make_layout((8, 4, 3, 3), 4, (12, 16, 8))
    layer = CompactHiNMConv2d.from_layout(torch.randn(8, 4, 3, 3), None, layout)
    with pytest.raises(ValueError, match="in_channels=4"):
        layer(torch.randn(1, 3, 5, 5))


# ----------------------------------------------------------------------------- construction errors
def test_compact_layer_dispatches_by_type():
    """compact_layer builds the matching compact class and rejects other modules."""
    layout = make_layout((8, 16), 4, (4, 8, 4))
    assert isinstance(compact_layer(nn.Linear(16, 8), layout), CompactHiNMLinear)
    conv_layout = make_layout((8, 4, 2, 2), 4, (4, 8, 4))
    assert isinstance(compact_layer(nn.Conv2d(4, 8, 2), conv_layout), CompactHiNMConv2d)
    with pytest.raises(TypeError, match="nn.Linear and nn.Conv2d only"):
        compact_layer(nn.ReLU(), layout)


def test_compact_linear_rejects_shape_mismatch():
    """A weight of another shape than the layout's raises."""
    with pytest.raises(ValueError, match="layout was built for shape"):
        CompactHiNMLinear.from_layout(torch.randn(8, 20), None, make_layout((8, 16), 4, (4, 8, 4)))


def test_compact_linear_rejects_4d_weight():
    """A 4-D weight given to the Linear class raises and points to the Conv2d class."""
    layout = make_layout((8, 4, 2, 2), 4, (4, 8, 4))
    with pytest.raises(ValueError, match="CompactHiNMConv2d"):
        CompactHiNMLinear.from_layout(torch.randn(8, 4, 2, 2), None, layout)


def test_compact_linear_rejects_bias_length():
    """A bias with the wrong length raises."""
    with pytest.raises(ValueError, match="bias has 7 entries"):
        CompactHiNMLinear.from_layout(torch.randn(8, 16), torch.randn(7), make_layout((8, 16), 4, (4, 8, 4)))


def test_compact_linear_rejects_unknown_backend():
    """Unknown backend names raise and list the choices."""
    layout = make_layout((8, 16), 4, (4, 8, 4))
    with pytest.raises(ValueError, match="backend='fast' is invalid"):
        CompactHiNMLinear.from_layout(torch.randn(8, 16), None, layout, backend="fast")
    with pytest.raises(ValueError, match="sparse_backend='cublas' is invalid"):
        CompactHiNMLinear.from_layout(torch.randn(8, 16), None, layout, sparse_backend="cublas")


def test_compact_linear_rejects_non_layout():
    """A mask in place of a RegionLayout raises TypeError."""
    with pytest.raises(TypeError, match="flexhinm.RegionLayout"):
        CompactHiNMLinear.from_layout(torch.randn(8, 16), None, torch.ones(8, 16, dtype=torch.bool))


def test_compact_linear_rejects_wrong_input():
    """Inputs with the wrong feature count or dtype raise."""
    layer = CompactHiNMLinear.from_layout(torch.randn(8, 16), None, make_layout((8, 16), 4, (4, 8, 4)))
    with pytest.raises(ValueError, match="in_features=16"):
        layer(torch.randn(2, 12))
    with pytest.raises(TypeError, match="cast with x.to"):
        layer(torch.randn(2, 16, dtype=torch.float64))


# ----------------------------------------------------------------------------- real allocation
@pytest.mark.parametrize("method", ["hinm", "flexhinm", "ovw"])
def test_compact_with_allocated_regions(method):
    """Layouts from allocate_regions give compact layers equal to the masked dense ones."""
    from flexhinm.regions import allocate_regions

    linear = nn.Linear(32, 16).double()
    conv = nn.Conv2d(8, 16, 3, padding=1).double()
    x_linear = torch.randn(4, 32, dtype=torch.float64)
    x_conv = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        linear_layout = allocate_regions(linear.weight.abs(), 0.75, method, tile_rows=8)
        conv_layout = allocate_regions(conv.weight.abs(), 0.75, method, tile_rows=8)

        linear_reference = masked_reference_linear(x_linear, linear.weight, linear.bias, linear_layout)
        conv_reference = F.conv2d(x_conv, conv.weight * conv_layout.mask(), conv.bias, padding=1)
    torch.testing.assert_close(CompactHiNMLinear.from_linear(linear, linear_layout)(x_linear),
                               linear_reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(CompactHiNMConv2d.from_conv2d(conv, conv_layout)(x_conv),
                               conv_reference, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- GPU
needs_sparse_cores = pytest.mark.skipif(
    not torch.cuda.is_available() or detect_capability().backend == "none",
    reason="needs a CUDA GPU with Sparse Tensor Cores (compute capability 8.0+) and a 2:4 backend",
)


@pytest.mark.gpu
@needs_sparse_cores
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compact_gpu_semi_structured_matches_masked_dense(dtype):
    """On Sparse Tensor Cores the packed compact layer equals the masked dense layer."""
    layout = make_layout((256, 512), 64, (256, 128, 128))
    weight = torch.randn(256, 512, device="cuda").to(dtype)
    bias = torch.randn(256, device="cuda").to(dtype)
    x = torch.randn(64, 512, device="cuda").to(dtype)

    layer = CompactHiNMLinear.from_layout(weight, bias, layout, backend="semi_structured")
    assert layer.resolved_backend() == "semi_structured"
    output = layer(x).float()
    mask = layout.mask().to("cuda")
    reference = F.linear(x.float(), torch.where(mask, weight.float(), 0.0), bias.float())
    error = ((output - reference).abs().max() / reference.abs().max()).item()
    assert error < 2e-2, f"relative error {error:.3g} in {dtype}"


@pytest.mark.gpu
@needs_sparse_cores
def test_compact_gpu_conv2d_matches_masked_dense():
    """On Sparse Tensor Cores the compact fp16 Conv2d equals the masked dense convolution."""
    conv = nn.Conv2d(64, 64, 3, padding=1).cuda().half()
    layout = make_layout((64, 64, 3, 3), 64, (288, 192, 96))
    x = torch.randn(2, 64, 8, 8, device="cuda").half()

    layer = CompactHiNMConv2d.from_conv2d(conv, layout)
    assert layer.resolved_backend() == "semi_structured"
    with torch.no_grad():
        masked = torch.where(layout.mask().cuda(), conv.weight, torch.zeros_like(conv.weight))
        reference = F.conv2d(x.float(), masked.float(), conv.bias.float(), padding=1)
    error = ((layer(x).float() - reference).abs().max() / reference.abs().max()).item()
    assert error < 2e-2, f"relative error {error:.3g}"
