"""The GEMM view of Linear, Conv1d and Conv2d weights and its inverse."""

import pytest
import torch
from torch import nn

from flexhinm import from_gemm, gemm_shape, to_gemm


@pytest.mark.parametrize(
    "shape", [(8, 12), (8, 4, 3), (16, 8, 3, 3), (4, 12, 1, 1), (6, 4, 2, 5)]
)
def test_gemm_round_trip_exact(shape):
    """from_gemm(to_gemm(w)) returns w bit for bit."""
    weight = torch.randn(shape)
    matrix = to_gemm(weight)
    assert tuple(matrix.shape) == gemm_shape(shape)
    assert torch.equal(from_gemm(matrix, shape), weight)


def test_gemm_conv2d_groups_are_channels_at_one_tap():
    """Consecutive GEMM columns of a Conv2d weight are input channels at one kernel tap."""
    c_out, c_in, kh, kw = 2, 8, 3, 3
    weight = torch.zeros(c_out, c_in, kh, kw)
    for channel in range(c_in):
        for row in range(kh):
            for col in range(kw):
                weight[:, channel, row, col] = 1000 * (row * kw + col) + channel
    matrix = to_gemm(weight)
    taps = (matrix[0] // 1000).long()
    channels = (matrix[0] % 1000).long()
    assert torch.equal(taps, torch.arange(kh * kw).repeat_interleave(c_in))
    assert torch.equal(channels, torch.arange(c_in).repeat(kh * kw))


def test_gemm_matches_channels_last_conv_as_matmul():
    """Conv2d equals the GEMM view times the NHWC im2col of the input."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 3, padding=1, bias=False).double()
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    patches = nn.functional.unfold(x, 3, padding=1)  # (1, C_in*9, L), channel-major
    patches = patches.reshape(1, 8, 9, -1).permute(0, 2, 1, 3).reshape(1, 72, -1)  # tap-major
    out = (to_gemm(conv.weight) @ patches[0]).reshape(1, 4, 5, 5)
    torch.testing.assert_close(out, conv(x), rtol=0, atol=1e-12)


def test_gemm_linear_is_unchanged():
    """A Linear weight is its own GEMM view (no copy)."""
    weight = torch.randn(3, 8)
    assert to_gemm(weight) is weight


def test_gemm_rejects_bad_shapes():
    """1-D weights and mismatched matrices give clear errors."""
    with pytest.raises(ValueError, match="must have 2 or 3 or 4 dimensions"):
        to_gemm(torch.zeros(5))
    with pytest.raises(ValueError, match=r"GEMM view of shape \(4, 18\)"):
        from_gemm(torch.zeros(4, 10), (4, 2, 3, 3))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        to_gemm([[1.0, 2.0]])
