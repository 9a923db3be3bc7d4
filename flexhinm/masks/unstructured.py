"""Unstructured magnitude masks, per layer and global, and the sparsity of a tensor."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .._checks import check_finite, check_sparsity, check_tensor

__all__ = ["global_unstructured_masks", "sparsity_of", "unstructured_mask"]


def sparsity_of(tensor: torch.Tensor) -> float:
    """Return the fraction of zeros in ``tensor`` (for a bool mask, the fraction of ``False``).

    Example:
        >>> sparsity_of(torch.tensor([1.0, 0.0, 0.0, 2.0]))
        0.5
    """
    check_tensor(tensor, "tensor")
    if tensor.numel() == 0:
        raise ValueError("tensor is empty; sparsity is undefined for a tensor with no elements")
    return float((tensor == 0).sum()) / tensor.numel()


def _keep_top(flat: torch.Tensor, num_pruned: int) -> torch.Tensor:
    # Stable descending sort, so among equal scores the lower flat index is kept.
    order = torch.sort(flat.float(), descending=True, stable=True).indices
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[: flat.numel() - num_pruned]] = True
    return keep


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Return a bool mask that prunes the ``round(sparsity * numel)`` lowest scores.

    Args:
        scores: importance per weight, any shape and float dtype (``weight.abs()`` for magnitude).
        sparsity: fraction of zeros in ``[0, 1)``.

    Returns:
        ``torch.bool`` tensor of the shape and device of ``scores``; ``True`` marks kept weights.

    Example:
        >>> unstructured_mask(torch.tensor([[0.5, 0.1], [0.9, 0.2]]), 0.5).tolist()
        [[True, False], [True, False]]
    """
    check_tensor(scores, "scores")
    sparsity = check_sparsity(sparsity)
    check_finite(scores)

    num_pruned = round(sparsity * scores.numel())
    return _keep_top(scores.reshape(-1), num_pruned).reshape(scores.shape)


def global_unstructured_masks(
    scores: Mapping[str, torch.Tensor], sparsity: float
) -> dict[str, torch.Tensor]:
    """Return per-tensor masks that prune the lowest scores across all tensors together.

    One threshold is shared by every tensor, so layers whose scores are small lose more weights.
    Scores of different layers must be comparable (for example all ``|w|``).

    Args:
        scores: name to importance tensor; names are kept as keys of the result.
        sparsity: overall fraction of zeros in ``[0, 1)``, counted over all tensors.

    Returns:
        name to ``torch.bool`` mask of the same shape as its scores.

    Example:
        >>> masks = global_unstructured_masks({"a": torch.tensor([3.0, 4.0]),
        ...                                    "b": torch.tensor([1.0, 2.0])}, 0.5)
        >>> {name: mask.tolist() for name, mask in masks.items()}
        {'a': [True, True], 'b': [False, False]}
    """
    sparsity = check_sparsity(sparsity)
    if not scores:
        raise ValueError("scores is empty; pass a mapping from tensor name to importance tensor")
    for name, value in scores.items():
        check_tensor(value, f"scores[{name!r}]")
        check_finite(value, f"scores[{name!r}]")

    names = list(scores)
    flat = torch.cat([scores[name].reshape(-1).float().cpu() for name in names])
    keep = _keep_top(flat, round(sparsity * flat.numel()))

    masks, start = {}, 0
    for name in names:
        tensor = scores[name]
        masks[name] = keep[start : start + tensor.numel()].reshape(tensor.shape).to(tensor.device)
        start += tensor.numel()
    return masks
