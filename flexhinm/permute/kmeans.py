"""Balanced k-means: k clusters of exactly equal size, with a linear assignment as the assignment step.

The output-channel phase of Gyro-Permutation moves whole clusters of rows between tiles, and every
tile must keep ``tile_rows`` rows, so each cluster needs the same number of members. Plain k-means
cannot promise that. Here the assignment step repeats every centroid ``size`` times and solves a
linear assignment between points and centroid copies with
:func:`scipy.optimize.linear_sum_assignment`, which gives each centroid exactly ``size`` points.
"""

from __future__ import annotations

import torch

from .._checks import check_finite, check_tensor
from .cost import linear_assignment

__all__ = ["balanced_kmeans"]


def _plus_plus_start(points: torch.Tensor, clusters: int, generator: torch.Generator):
    """Pick ``clusters`` starting centroids by k-means++ seeding.

    Each new centroid is a point drawn with probability proportional to its squared distance to
    the nearest centroid so far, so identical points are never picked twice while others remain.
    """
    count = points.shape[0]
    first = int(torch.randint(count, (1,), generator=generator))
    chosen = [first]
    nearest = (points - points[first]).square().sum(dim=1)
    for _ in range(clusters - 1):
        if float(nearest.sum()) > 0:
            index = int(torch.multinomial(nearest, 1, generator=generator))
        else:
            # Every point coincides with a centroid; any point not yet chosen will do.
            free = torch.ones(count, dtype=torch.bool)
            free[chosen] = False
            index = int(torch.nonzero(free)[0])
        chosen.append(index)
        nearest = torch.minimum(nearest, (points - points[index]).square().sum(dim=1))
    return points[chosen].clone()


def balanced_kmeans(
    points: torch.Tensor,
    clusters: int,
    *,
    generator: torch.Generator,
    max_iterations: int = 20,
    tol: float = 1e-4,
) -> torch.Tensor:
    """Split points into ``clusters`` groups of equal size that are close in squared distance.

    The centroids start from ``k`` points chosen by k-means++ seeding, because uniformly random
    starting points can put two centroids on identical rows. Each iteration then assigns points to
    centroids by a linear assignment on the squared Euclidean
    distances, with every centroid repeated ``size = points // clusters`` times, and then moves each
    centroid to the mean of its members. Squared distances make every iteration lower (or keep) the
    within-cluster sum of squares, which is the k-means objective. The loop stops after
    ``max_iterations`` iterations or when no centroid moves by more than ``tol`` times the mean
    norm of the points.

    Args:
        points: ``(count, features)`` float tensor; ``clusters`` must divide ``count``.
        clusters: number of clusters ``k >= 1``.
        generator: CPU ``torch.Generator`` for the k-means++ choice of the ``k`` starting points.
        max_iterations: assignment and update steps at most, ``>= 1``.
        tol: stop when the largest centroid shift is at most ``tol`` times the mean point norm.

    Returns:
        ``(count,)`` int64 labels in ``[0, clusters)``; every label occurs exactly
        ``count // clusters`` times.

    Raises:
        ValueError: if ``clusters`` does not divide the number of points or the points are not
            finite.

    Example:
        >>> points = torch.tensor([[0.0], [10.0], [0.1], [10.1]])
        >>> labels = balanced_kmeans(points, 2, generator=torch.Generator().manual_seed(0))
        >>> bool(labels[0] == labels[2]) and bool(labels[1] == labels[3])
        True
    """
    check_tensor(points, "points", dims=(2,))
    check_finite(points, "points")
    count = points.shape[0]
    if clusters < 1 or count % clusters:
        raise ValueError(
            f"clusters={clusters} does not divide the {count} points; balanced k-means needs "
            f"clusters of equal size, so pass a divisor of {count}"
        )
    if max_iterations < 1:
        raise ValueError(f"max_iterations={max_iterations} must be at least 1")

    size = count // clusters
    points = points.detach().double().cpu()
    if clusters == 1:
        return torch.zeros(count, dtype=torch.int64)

    centroids = _plus_plus_start(points, clusters, generator)
    scale = float(points.norm(dim=1).mean()) or 1.0

    for _ in range(max_iterations):
        distances = torch.cdist(points, centroids).square()              # (count, clusters)
        copies = distances.repeat_interleave(size, dim=1)                # (count, count)
        labels = linear_assignment(copies) // size

        updated = torch.zeros_like(centroids).index_add_(0, labels, points) / size
        shift = float((updated - centroids).norm(dim=1).max())
        centroids = updated
        if shift <= tol * scale:
            break
    return labels
