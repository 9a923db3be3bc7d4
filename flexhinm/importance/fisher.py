"""Second-order (OBS) saliency from an empirical Fisher: diagonal and block-diagonal.

Optimal Brain Surgeon (Hassibi and Stork, 1993) estimates the loss increase of setting weight ``i``
to zero, after the other weights are re-fitted, as

    rho_i = w_i^2 / (2 [F^-1]_ii),

with ``F`` the Hessian of the loss, here approximated by the empirical Fisher
``F = (1/S) sum_s g_s g_s^T + lambda I`` over ``S`` gradient samples ``g_s``. The block-diagonal
version (as in oBERT, Kurtic et al. 2022) keeps the correlations inside blocks of ``block_size``
consecutive weights and ignores those across blocks; ``block_size=1`` is the diagonal version.

Block order: blocks run along the flattened GEMM view (``to_gemm(weight).reshape(-1)``): row by row
(output channel), and inside a row along the reduction dimension. For a Conv2d this puts the input
channels of one kernel tap next to each other, which is the neighbourhood a 2:4 group covers. For a
Linear it is the parameter's own flat order. A last partial block is padded with zero gradients,
which leaves the other entries of the inverse unchanged.

Dampening ``lambda`` is relative: ``damping`` times the mean of the Fisher diagonal over the layer,
so the scores scale with the loss and their ranking does not depend on the loss scale.
"""

from __future__ import annotations

import torch

from ..gemm import from_gemm, gemm_shape

__all__ = ["FisherAccumulator"]


class FisherAccumulator:
    """Running sum of ``g g^T`` blocks of one weight, and the OBS saliency it gives.

    Memory: ``ceil(numel / block_size) * block_size**2`` float64 values, i.e. about
    ``numel * block_size * 8`` bytes (9.4 MB for a 64x64x3x3 conv with blocks of 32).

    Args:
        shape: the weight's shape (2-D, 3-D or 4-D).
        block_size: weights per Fisher block; 1 keeps only the diagonal.
        device: where the sums live.

    Example:
        >>> fisher = FisherAccumulator((2, 4), block_size=4)
        >>> fisher.add(torch.ones(3, 2, 4))
        >>> fisher.saliency(torch.ones(2, 4), damping=1.0).shape
        torch.Size([2, 4])
    """

    def __init__(self, shape: tuple[int, ...], block_size: int = 32, device: torch.device | str = "cpu") -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size={block_size!r} must be a positive int (1 gives the diagonal Fisher)")
        self.shape = tuple(shape)
        self.block_size = block_size
        numel = 1
        for size in self.shape:
            numel *= size
        self.numel = numel
        self.num_blocks = -(-numel // block_size)
        self.sums = torch.zeros(self.num_blocks, block_size, block_size, dtype=torch.float64, device=device)
        self.samples = 0

    def _blocks(self, gradients: torch.Tensor) -> torch.Tensor:
        # (samples, *shape) -> (samples, num_blocks, block_size) along the flattened GEMM view.
        samples = gradients.shape[0]
        if gradients.dim() == 4:
            gradients = gradients.permute(0, 1, 3, 2)
        elif gradients.dim() == 5:
            gradients = gradients.permute(0, 1, 3, 4, 2)
        flat = gradients.reshape(samples, -1).to(self.sums)
        padding = self.num_blocks * self.block_size - self.numel
        if padding:
            flat = torch.nn.functional.pad(flat, (0, padding))
        return flat.reshape(samples, self.num_blocks, self.block_size)

    def add(self, gradients: torch.Tensor) -> None:
        """Add gradient samples, ``(samples, *shape)``, one per sample (or micro-batch)."""
        if tuple(gradients.shape[1:]) != self.shape:
            raise ValueError(
                f"gradients have shape {tuple(gradients.shape)}; expected (samples, *{self.shape})"
            )
        blocks = self._blocks(gradients)
        self.sums += torch.einsum("sbi,sbj->bij", blocks, blocks)
        self.samples += gradients.shape[0]

    def inverse_diagonal(self, damping: float) -> torch.Tensor:
        """Return ``[F^-1]_ii`` in the weight's shape (float64), ``F = sums / samples + lambda I``."""
        if self.samples == 0:
            raise ValueError("no gradient samples were added; pass a loader with at least one batch")
        if not damping > 0:
            raise ValueError(f"damping={damping} must be positive (relative dampening, e.g. 0.01)")
        fisher = self.sums / self.samples
        diagonal = torch.diagonal(fisher, dim1=1, dim2=2).reshape(-1)[: self.numel]
        scale = float(diagonal.mean())
        if scale == 0.0:
            # No gradient signal at all: F = lambda I, and the saliency falls back to w^2 (scaled).
            scale = 1.0
        eye = torch.eye(self.block_size, dtype=fisher.dtype, device=fisher.device)
        damped = fisher + damping * scale * eye

        if self.block_size == 1:
            inverse = 1.0 / damped.reshape(-1)
        else:
            inverse = torch.diagonal(torch.cholesky_inverse(torch.linalg.cholesky(damped)), dim1=1, dim2=2)
        matrix = inverse.reshape(-1)[: self.numel].reshape(gemm_shape(self.shape))
        return from_gemm(matrix, self.shape)

    def saliency(self, weight: torch.Tensor, damping: float = 0.01) -> torch.Tensor:
        """Return ``w^2 / (2 [F^-1]_ii)`` in the weight's shape, on the weight's device (float64)."""
        inverse = self.inverse_diagonal(damping).to(weight.device)
        return weight.detach().double().square() / (2 * inverse)
