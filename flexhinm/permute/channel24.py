"""Single-level 2:4 baseline: one input-channel permutation for the whole layer, after Pool & Yu.

Pool and Yu (NeurIPS 2021, "Channel Permutations for N:M Sparsity") reorder the input channels of
a layer so that the 2:4 mask keeps more magnitude. This module implements a search of that kind,
written for this library: a **randomised stripe-pair exhaustive search**.

* A *stripe* is one group of ``m`` consecutive channels in the current order.
* Each round pairs the stripes at random (a random perfect matching, one stripe left out when the
  count is odd). For every pair, all ways to split its ``2m`` channels into two stripes are tried
  (35 splits for ``m = 4``), and the best split replaces the pair when it keeps strictly more
  importance. Pairs are disjoint, so all pairs of a round are solved at once with tensor
  operations.
* The search stops when ``patience`` rounds in a row raise the retained importance by less than
  ``tol`` (relative), or after ``max_rounds`` rounds.

Pool and Yu's exhaustive variant scores every pair of stripes before each move and uses random
"escapes" from local optima. Here a fresh random pairing every round plays the role of the escapes.
A round costs one pass over the layer, so a 768 x 3072 layer takes seconds.

In hardware, the permutation is realised by permuting the output channels of the previous layer
(and its bias and normalisation parameters) the same way. In this library the mask is mapped back
to the original channel order instead (:func:`permuted_nm_mask`), so training never needs
physically permuted weights.
"""

from __future__ import annotations

import itertools
import logging
import time

import torch

from .._checks import check_nm
from ..gemm import from_gemm
from ..masks import nm_mask_2d
from ..regions.tiles import top_n_sum
from ._args import check_count, gemm_importance, make_generator, progress_bar, single_torch_thread
from .cost import CHUNK_ELEMENTS
from .stats import PhaseStats

__all__ = ["channel_permutation_24", "permuted_nm_mask"]

_logger = logging.getLogger(__name__)


def _channel_view(scores: torch.Tensor, m: int) -> torch.Tensor:
    """Return the float64 ``(C_out * taps, C_in)`` view whose columns are input channels.

    The GEMM view orders columns tap-major and channel-minor, so splitting each GEMM row into
    ``taps`` rows of ``C_in`` columns keeps every N:M group inside one row.
    """
    matrix = gemm_importance(scores)
    channels = scores.shape[1]
    if channels % m:
        raise ValueError(
            f"m={m} does not divide the {channels} input channels of a weight of shape "
            f"{tuple(scores.shape)}; a channel permutation keeps every group of m inside one "
            f"kernel tap, so leave this layer out (see flexhinm.eligibility_report)"
        )
    return matrix.reshape(-1, channels)


def _split_table(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(first, second)``: the ``(splits, m)`` positions of the two stripes of each split.

    Position 0 always goes to the first stripe, so each unordered split appears once, and split 0
    is the current one (positions ``0 .. m-1`` and ``m .. 2m-1``).
    """
    first = [(0, *rest) for rest in itertools.combinations(range(1, 2 * m), m - 1)]
    second = [tuple(p for p in range(2 * m) if p not in split) for split in first]
    return torch.tensor(first), torch.tensor(second)


def _retained(view: torch.Tensor, order: torch.Tensor, n: int, m: int) -> float:
    grouped = view[:, order].reshape(view.shape[0], -1, m)
    return float(top_n_sum(grouped, n).sum())


def _best_splits(values: torch.Tensor, first: torch.Tensor, second: torch.Tensor, n: int):
    """Return the N:M importance ``(pairs, splits)`` of every split of every pair of stripes.

    ``values`` is ``(pairs, 2m, rows)``: the importance of the ``2m`` channels of each pair. Rows
    stay the last, contiguous dimension so that gathering channels copies whole rows.
    """
    pairs, _, rows = values.shape
    splits, m = first.shape
    scores = values.new_empty(pairs, splits)
    step = max(1, CHUNK_ELEMENTS // (rows * splits * 2 * m))
    for start in range(0, pairs, step):
        block = values[start:start + step]
        retained = (top_n_sum(block[:, first].movedim(2, -1), n) +
                    top_n_sum(block[:, second].movedim(2, -1), n))
        scores[start:start + step] = retained.sum(dim=-1)
    return scores


def _apply_splits(view_t, order, pairing, members, chosen, first, second, n, stats) -> float:
    """Write the chosen splits into ``order`` where float64 confirms a gain; return the gain.

    ``view_t`` is the float64 ``(channels, rows)`` transpose of the channel view.
    """
    m = first.shape[1]
    new_members = torch.cat([members.gather(1, first[chosen]), members.gather(1, second[chosen])],
                            dim=1)
    pairs = len(members)
    old_kept = top_n_sum(view_t[members].reshape(pairs, 2, m, -1).movedim(2, -1), n)
    new_kept = top_n_sum(view_t[new_members].reshape(pairs, 2, m, -1).movedim(2, -1), n)
    gain = new_kept.sum(dim=(1, 2)) - old_kept.sum(dim=(1, 2))
    accepted = gain > 0

    grid = order.view(-1, m)
    grid[pairing[accepted].reshape(-1)] = new_members[accepted].reshape(-1, m)
    stats.accepted += int(accepted.sum())
    return float(gain[accepted].sum())


@single_torch_thread
def channel_permutation_24(
    scores: torch.Tensor,
    *,
    n: int = 2,
    m: int = 4,
    max_rounds: int = 100,
    patience: int = 3,
    tol: float = 1e-5,
    seed: int | torch.Generator = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, PhaseStats]:
    """Find one input-channel order for the whole layer that lets N:M keep more importance.

    The objective is the importance that N:M keeps when groups of ``m`` consecutive channels of the
    new order are formed in every row of the GEMM view (for convolutions, at every kernel tap).
    See the module docstring for the search.

    Args:
        scores: non-negative importance shaped like the weight: ``(C_out, C_in)`` for Linear,
            ``(C_out, C_in, k)`` or ``(C_out, C_in, kh, kw)`` for convolutions; any float dtype.
            ``m`` must divide ``C_in``.
        n: weights kept per group.
        m: group size.
        max_rounds: rounds at most, ``>= 1``.
        patience: stop after this many rounds in a row that gain less than ``tol``, ``>= 1``.
        tol: relative gain of the retained importance below which a round counts as flat.
        seed: int seed or a CPU ``torch.Generator``; the same seed gives the same order.
        progress: show a tqdm bar over the rounds.

    Returns:
        ``(channel_order, stats)``: ``channel_order`` is a ``(C_in,)`` int64 permutation;
        channel ``channel_order[g*m + i]`` is member ``i`` of group ``g`` (at every kernel tap).
        ``stats`` is a :class:`PhaseStats` whose retained values are the importance N:M keeps.
        ``stats.accepted`` counts the pair splits that were replaced, and ``stats.failures`` the
        rounds that changed nothing.

    Raises:
        ValueError: if ``m`` does not divide ``C_in``, for invalid ``n``, ``m``, ``max_rounds``,
            ``patience`` or ``tol``, or for NaN, infinite or negative scores.
        NotImplementedError: for ``m > 4``.

    Example:
        >>> scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 0.0, 0.0, 0.0, 0.0]])
        >>> order, stats = channel_permutation_24(scores)
        >>> stats.retained_before, stats.retained_after
        (17.0, 30.0)
        >>> permuted_nm_mask(scores, order)[0, :4].tolist()
        [True, True, True, True]
    """
    started = time.perf_counter()
    check_nm(n, m)
    if m > 4:
        # 2m channels have C(2m - 1, m - 1) splits: 35 for m = 4 but 6435 for m = 8.
        raise NotImplementedError(
            f"m={m} is not supported yet: the exhaustive split of stripe pairs grows too fast "
            f"beyond m=4; use m <= 4, or the plain N:M mask (flexhinm.nm_mask)"
        )
    view = _channel_view(scores, m)
    check_count(max_rounds, "max_rounds", 1)
    check_count(patience, "patience", 1)
    if not 0.0 <= tol < 1.0:
        raise ValueError(f"tol={tol} is outside [0, 1); pass a relative gain such as 1e-5")
    generator = make_generator(seed)

    channels = view.shape[1]
    stripes = channels // m
    order = torch.arange(channels)
    retained = _retained(view, order, n, m)
    stats = PhaseStats("channel24", retained, retained)
    if stripes < 2:
        stats.seconds = time.perf_counter() - started
        return order, stats

    first, second = _split_table(m)
    view_t = view.t().contiguous()                                             # (channels, rows)
    features_t = view_t.float()
    flat_rounds = 0
    for _ in progress_bar(range(max_rounds), progress, "2:4 channel permutation"):
        stats.rounds += 1
        pairing = torch.randperm(stripes, generator=generator)[: stripes // 2 * 2].reshape(-1, 2)
        members = order.reshape(stripes, m)[pairing].reshape(-1, 2 * m)        # (pairs, 2m)
        values = features_t[members]                                            # (pairs, 2m, rows)

        split_scores = _best_splits(values, first, second, n)
        best = split_scores.argmax(dim=1)
        improved = split_scores[torch.arange(len(best)), best] > split_scores[:, 0]
        gain = _apply_splits(view_t, order, pairing[improved], members[improved], best[improved],
                             first, second, n, stats) if bool(improved.any()) else 0.0

        retained += gain
        stats.failures += int(gain == 0.0)
        flat_rounds = flat_rounds + 1 if gain <= tol * retained else 0
        _logger.debug("2:4 channel permutation: round %d, gain %.6g", stats.rounds, gain)
        if flat_rounds >= patience:
            break

    # Recompute from scratch, because the running total only summed the accepted gains. Rounding
    # in that sum must never hand back an order worse than the identity.
    stats.retained_after = _retained(view, order, n, m)
    if stats.retained_after < stats.retained_before:
        order = torch.arange(channels)
        stats.retained_after = stats.retained_before
    stats.seconds = time.perf_counter() - started
    return order, stats


def permuted_nm_mask(
    scores: torch.Tensor, channel_order: torch.Tensor, *, n: int = 2, m: int = 4
) -> torch.Tensor:
    """Return the N:M mask chosen in permuted channel order, in the weight's original coordinates.

    Groups of ``m`` consecutive channels of ``channel_order`` (at every kernel tap) keep their
    ``n`` highest scores. The mask is then put back at the original channel positions.

    Args:
        scores: importance shaped like the weight (2-D, 3-D or 4-D).
        channel_order: ``(C_in,)`` int64 permutation, e.g. from :func:`channel_permutation_24`.
        n: weights kept per group.
        m: group size; it must divide ``C_in``.

    Returns:
        ``torch.bool`` mask shaped like ``scores``, on its device. It is N:M in the permuted
        channel order, not necessarily in the original order.

    Raises:
        ValueError: if ``channel_order`` is not a permutation of the input channels.
    """
    check_nm(n, m)
    view = _channel_view(scores, m)
    channels = view.shape[1]
    order = torch.as_tensor(channel_order).cpu()
    if order.shape != (channels,) or not torch.equal(order.sort().values, torch.arange(channels)):
        raise ValueError(
            f"channel_order must be a permutation of the {channels} input channels, got a tensor "
            f"of shape {tuple(order.shape)}; pass the order returned by channel_permutation_24"
        )

    permuted_mask = nm_mask_2d(view[:, order], n, m)
    mask = torch.empty_like(permuted_mask)
    mask[:, order] = permuted_mask
    return from_gemm(mask.reshape(scores.shape[0], -1), scores.shape).to(scores.device)
