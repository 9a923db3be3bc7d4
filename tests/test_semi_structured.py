"""2:4 pattern checks, pattern-checked packing, and the compressed format on the CPU."""

from __future__ import annotations

import pytest
import torch

from flexhinm import nm_mask
from flexhinm.inference import (
    SparseCapability,
    check_nm_pattern,
    compress_2to4,
    count_nm_violations,
    decompress_2to4,
    detect_capability,
    pack_metadata,
    semi_structured,
    semi_structured_rule,
    semi_structured_support,
    to_semi_structured,
    torch_reference_compress,
    unpack_metadata,
)


def random_24(rows: int, columns: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """A random matrix with exactly two non-zeros in every group of 4."""
    generator = torch.Generator().manual_seed(seed)
    dense = torch.randn(rows, columns, generator=generator)
    dense = torch.where(dense == 0, torch.ones_like(dense), dense)
    return (dense * nm_mask(dense.abs())).to(dtype)


def pretend_cuda_packing(monkeypatch, backend: str = "cusparselt") -> None:
    """Make every device look packable so that the checks before torch's call can be tested."""
    capability = SparseCapability("fake GPU", (8, 0), None, None, torch.__version__, "linux", True,
                                  None, ("cusparselt", "cutlass"), backend, "test")
    monkeypatch.setattr(semi_structured, "semi_structured_support", lambda *args, **kwargs: None)
    monkeypatch.setattr(semi_structured, "cached_capability", lambda index: capability)


# ----------------------------------------------------------------------------- pattern checks
def test_count_violations_hand_example():
    """Groups with 3 and 4 non-zeros count; groups with 0, 1 or 2 do not."""
    weight = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                           [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    assert count_nm_violations(weight) == 2


def test_check_pattern_accepts_valid_and_sparser():
    """A 2:4 matrix and a sparser one pass the check."""
    check_nm_pattern(random_24(8, 16))
    check_nm_pattern(torch.zeros(8, 16))


def test_check_pattern_counts_breaking_groups():
    """The error names how many groups break 2:4 and where the first one is."""
    weight = random_24(4, 16)
    weight[1, 4:8] = 1.0
    weight[2, 0:3] = 1.0
    weight[3, 12:16] = 1.0
    with pytest.raises(ValueError, match=r"3 of 16 groups .* row 1, columns 4\.\.7, with 4 non-zero values"):
        check_nm_pattern(weight)


def test_check_pattern_counts_nan_as_nonzero():
    """NaN counts as a non-zero, so a group with two values and a NaN breaks 2:4."""
    weight = torch.tensor([[1.0, float("nan"), 2.0, 0.0]])
    with pytest.raises(ValueError, match="1 of 1 groups"):
        check_nm_pattern(weight)


def test_check_pattern_one_to_two():
    """n=1, m=2 rejects a 2:4 matrix that keeps two neighbours."""
    weight = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    check_nm_pattern(weight)
    with pytest.raises(ValueError, match="not 1:2 sparse: 1 of 2 groups"):
        check_nm_pattern(weight, n=1, m=2)


def test_check_pattern_rejects_bad_shapes():
    """A 3-D tensor, a column count off the group size and n >= m raise."""
    with pytest.raises(ValueError, match="2-D"):
        check_nm_pattern(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="6 columns, which is not a multiple of m=4"):
        check_nm_pattern(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="n=4, m=4 is invalid"):
        check_nm_pattern(torch.zeros(2, 8), n=4, m=4)
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_nm_pattern([[1.0, 0.0, 0.0, 0.0]])


# ----------------------------------------------------------------------------- rules and packing
def test_rules_match_torch_constraints():
    """The shape rules are those of torch 2.14.1, with fp32 on CUTLASS as 1:2."""
    assert tuple(semi_structured_rule(torch.float16, "cusparselt")) == (16, 16, 2, 4)
    assert tuple(semi_structured_rule(torch.bfloat16, "cutlass")) == (32, 64, 2, 4)
    assert tuple(semi_structured_rule(torch.float32, "cutlass")) == (32, 32, 1, 2)
    assert semi_structured_rule(torch.float32, "cusparselt") is None


def test_rules_reject_unknown_backend():
    """An unknown backend name raises and lists the choices."""
    with pytest.raises(ValueError, match="backend='cusparse' is not a semi-structured backend"):
        semi_structured_rule(torch.float16, "cusparse")


def test_support_on_cpu_names_cuda():
    """A CPU weight cannot be packed, and the reason names the missing CUDA device."""
    reason = semi_structured_support((64, 64), torch.float16, "cpu")
    assert "CUDA device" in reason


def test_support_rejects_fp32_two_to_four(monkeypatch):
    """CUTLASS runs fp32 as 1:2 only, so a 2:4 fp32 weight on a CUDA device gets a reason."""
    capability = SparseCapability("fake GPU", (8, 0), None, None, torch.__version__, "linux", True,
                                  None, ("cutlass",), "cutlass", "test")
    monkeypatch.setattr(semi_structured, "cached_capability", lambda index: capability)

    assert semi_structured_support((32, 32), torch.float32, "cuda", backend="cutlass") is None
    assert semi_structured_support((32, 32), torch.float32, "cuda", pattern=(1, 2)) is None
    reason = semi_structured_support((32, 32), torch.float32, "cuda", pattern=(2, 4))
    assert reason == ("the cutlass backend runs torch.float32 as 1:2, not 2:4; use float16 or "
                      "bfloat16 for 2:4")
    assert semi_structured_support((32, 64), torch.float16, "cuda", pattern=(2, 4)) is None


def test_to_semi_structured_on_cpu_raises():
    """Packing on the CPU raises a ValueError that points to the masked dense GEMM."""
    with pytest.raises(ValueError, match="use the masked dense GEMM"):
        to_semi_structured(random_24(32, 64, torch.float16))


def test_to_semi_structured_checks_pattern_before_torch(monkeypatch):
    """A non-2:4 weight is rejected by the pattern check, never handed to torch."""
    pretend_cuda_packing(monkeypatch)
    weight = random_24(32, 64, torch.float16)
    weight[5, 8:12] = 1.0
    with pytest.raises(ValueError, match="1 of 512 groups"):
        to_semi_structured(weight)

    # A valid weight passes the check and reaches torch, which has no CPU kernels.
    with pytest.raises(RuntimeError, match="CUDA"):
        to_semi_structured(random_24(32, 64, torch.float16))


def test_pack_fp32_cutlass_needs_one_to_two(monkeypatch):
    """fp32 on CUTLASS needs 1:2, so a 2:4 weight with neighbouring kept values is rejected."""
    pretend_cuda_packing(monkeypatch, backend="cutlass")
    weight = torch.zeros(32, 32)
    weight[:, 0::4] = 1.0
    weight[:, 1::4] = 1.0
    with pytest.raises(ValueError, match="not 1:2 sparse"):
        to_semi_structured(weight, backend="cutlass")


# ----------------------------------------------------------------------------- compressed format
def test_compress_hand_example():
    """Values and positions of a 1 x 8 matrix match a hand encoding."""
    dense = torch.tensor([[0.0, 5.0, 0.0, 7.0, 1.0, 2.0, 0.0, 0.0]], dtype=torch.float16)
    compressed = compress_2to4(dense)
    assert compressed.values.tolist() == [[5.0, 7.0, 1.0, 2.0]]
    assert compressed.positions.tolist() == [[1, 3, 0, 1]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 16), (8, 32), (32, 64)])
def test_compress_round_trip_exact(dtype, shape):
    """Decompressing the compressed form gives back the input exactly."""
    dense = random_24(*shape, dtype=dtype)
    compressed = compress_2to4(dense)
    assert compressed.values.shape == (shape[0], shape[1] // 2)
    assert torch.equal(decompress_2to4(compressed.values, compressed.positions), dense)


def test_compress_fills_sparse_groups_with_lowest_free_slots():
    """Groups with fewer than two non-zeros pad with their lowest free slots and still round-trip."""
    dense = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0]])
    compressed = compress_2to4(dense)
    assert compressed.positions.tolist() == [[0, 1, 0, 2]]
    assert torch.equal(decompress_2to4(compressed.values, compressed.positions), dense)


def test_compress_mask_keeps_zero_valued_weights():
    """With a mask, a kept weight of value zero keeps its slot."""
    dense = torch.tensor([[0.0, 4.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, False, True]])
    assert compress_2to4(dense, mask).positions.tolist() == [[1, 3]]


def test_compress_rejects_non_24():
    """A matrix with three non-zeros in a group is rejected with the group count."""
    with pytest.raises(ValueError, match="dense is not 2:4 sparse: 1 of 2 groups"):
        compress_2to4(torch.tensor([[1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]]))


def test_compress_rejects_bad_mask():
    """A float mask or a mask of another shape raises."""
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        compress_2to4(torch.zeros(2, 8), torch.zeros(2, 8))


def test_decompress_rejects_bad_input():
    """Positions outside 0..3 and mismatched shapes raise."""
    with pytest.raises(ValueError, match="positions must lie in 0..3"):
        decompress_2to4(torch.zeros(1, 2), torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="same shape"):
        decompress_2to4(torch.zeros(1, 2), torch.zeros(1, 4, dtype=torch.int8))


def test_metadata_pack_round_trip():
    """Packing then unpacking positions gives them back exactly."""
    positions = compress_2to4(random_24(8, 64)).positions
    metadata = pack_metadata(positions)
    assert metadata.dtype == torch.int16
    assert metadata.shape == (8, 4)
    assert torch.equal(unpack_metadata(metadata), positions)


def test_metadata_bits_hand_example():
    """Four groups keeping slots (0,1), (0,1), (2,3), (2,3) pack to 0xEE44."""
    dense = torch.tensor([[1.0, 1.0, 0, 0, 1.0, 1.0, 0, 0, 0, 0, 1.0, 1.0, 0, 0, 1.0, 1.0]])
    assert compress_2to4(dense).metadata_bits() == [["1110111001000100"]]


def test_metadata_pack_rejects_partial_word():
    """Positions of 8 dense columns do not fill a 16-bit word and are rejected."""
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_metadata(torch.zeros(1, 4, dtype=torch.int8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compress_agrees_with_torch_reference(dtype):
    """Values and metadata equal torch's CPU reference converter (reordering undone)."""
    dense = random_24(64, 64, dtype=dtype)
    reference = torch_reference_compress(dense)
    if reference is None:
        pytest.skip("this torch has no torch.sparse._semi_structured_conversions")
    values, metadata = reference
    compressed = compress_2to4(dense)
    assert torch.equal(compressed.values, values)
    assert torch.equal(compressed.metadata, metadata)


def test_torch_reference_decodes_to_same_matrix():
    """On groups with fewer than two non-zeros, torch's metadata still decodes to the same matrix."""
    dense = random_24(32, 32, dtype=torch.float16)
    dense[:, :8] = 0.0
    dense[3, 2] = 1.5
    reference = torch_reference_compress(dense)
    if reference is None:
        pytest.skip("this torch has no torch.sparse._semi_structured_conversions")
    values, metadata = reference
    assert torch.equal(decompress_2to4(values, unpack_metadata(metadata)), dense)


def test_torch_reference_rejects_bad_shape():
    """Rows or columns off a multiple of 32 are rejected before torch's converter runs."""
    if torch_reference_compress(random_24(32, 32, torch.float16)) is None:
        pytest.skip("this torch has no torch.sparse._semi_structured_conversions")
    with pytest.raises(ValueError, match="multiples of 32"):
        torch_reference_compress(random_24(30, 32, torch.float16))
    with pytest.raises(ValueError, match="multiples of 32"):
        torch_reference_compress(random_24(32, 16, torch.float16))


# ----------------------------------------------------------------------------- GPU
needs_sparse_cores = pytest.mark.skipif(
    not torch.cuda.is_available() or detect_capability().backend == "none",
    reason="needs a CUDA GPU with Sparse Tensor Cores (compute capability 8.0+) and a 2:4 backend",
)


@pytest.mark.gpu
@needs_sparse_cores
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_to_semi_structured_gpu_matches_dense(dtype):
    """A packed 2:4 weight multiplies like its dense copy on the GPU."""
    weight = random_24(128, 256, dtype=dtype).cuda()
    x = torch.randn(64, 256, device="cuda").to(dtype)
    packed = to_semi_structured(weight)
    output = torch.nn.functional.linear(x, packed).float()
    reference = torch.nn.functional.linear(x.float(), weight.float())
    error = ((output - reference).abs().max() / reference.abs().max()).item()
    assert error < 2e-2, f"relative error {error:.3g}"


@pytest.mark.gpu
@needs_sparse_cores
def test_to_semi_structured_gpu_rejects_bad_pattern():
    """On the GPU, too a non-2:4 weight is rejected before packing."""
    weight = torch.ones(128, 256, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="8192 of 8192 groups"):
        to_semi_structured(weight)
