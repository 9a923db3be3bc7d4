"""Prune every eligible layer of a model with one method and report what each layer got.

Methods (one registry, :data:`PRUNING_METHODS`):

* ``"unstructured"``: the lowest scores of each layer, or of all layers together with
  ``global_unstructured=True``;
* ``"nm"``: N:M along the GEMM rows; its sparsity is always ``1 - n/m``;
* ``"ovw"``, ``"hinm"``, ``"flexhinm"``: region methods (see :func:`flexhinm.allocate_regions`);
  their :class:`~flexhinm.RegionLayout` objects are kept in the report.

A permutation hook registered with :func:`register_permutation` replaces the per-layer mask builder
when ``prune_model(..., permutation=name)`` is called. It receives a :class:`LayerRequest` and
returns a :class:`~flexhinm.RegionLayout` or a bool mask. ``request.allocate(row_order=...)`` runs
the ordinary allocation with an output row order, so a channel permutation only adds its own steps
(an output order before, a regrouping of the N:M columns after).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ._checks import check_nm, check_sparsity
from .eligibility import eligibility_report
from .importance import compute_scores
from .masks import global_unstructured_masks, nm_mask, unstructured_mask
from .regions import RegionLayout, allocate_regions
from .prune_report import LayerPruning, PruneReport
from .sparsify import apply_masks, warn_if_revived

__all__ = [
    "PERMUTATIONS",
    "PRUNING_METHODS",
    "TILE_FALLBACKS",
    "LayerRequest",
    "prune_model",
    "register_permutation",
]

_logger = logging.getLogger(__name__)

TILE_FALLBACKS = (64, 32, 16, 8)
REGION_METHOD_NAMES = ("ovw", "hinm", "flexhinm")


@dataclass(frozen=True)
class LayerRequest:
    """Everything needed to build the mask of one layer.

    Attributes:
        name: parameter name, e.g. ``"layer1.0.conv1.weight"``.
        scores: non-negative importance of the weight's shape.
        method: pruning method name.
        sparsity: target sparsity (``1 - n/m`` for ``"nm"``).
        tile_rows: rows per tile for region methods (after any fallback), else ``None``.
        n: weights kept per N:M group.
        m: N:M group size.
        vector_sparsity: FlexHiNM ``v`` to use, or ``None`` to search it.
        previous: layout of the previous gradual stage of this layer, or ``None``.
    """

    name: str
    scores: torch.Tensor
    method: str
    sparsity: float
    tile_rows: int | None
    n: int
    m: int
    vector_sparsity: float | None = None
    previous: RegionLayout | None = None

    def allocate(self, row_order: torch.Tensor | None = None) -> RegionLayout:
        """Run :func:`flexhinm.allocate_regions` for this layer, with an optional output row order."""
        return allocate_regions(
            self.scores, self.sparsity, self.method, self.tile_rows, self.vector_sparsity,
            n=self.n, m=self.m, row_order=row_order, previous=self.previous,
        )


MaskBuilder = Callable[[LayerRequest], "RegionLayout | torch.Tensor"]

PRUNING_METHODS: dict[str, tuple[str, MaskBuilder]] = {
    "unstructured": (
        "lowest scores of each layer (or of all layers with global_unstructured=True)",
        lambda request: unstructured_mask(request.scores, request.sparsity),
    ),
    "nm": (
        "N:M along GEMM rows, sparsity 1 - n/m",
        lambda request: nm_mask(request.scores, request.n, request.m),
    ),
    "ovw": ("outer-vector-wise column pruning per tile", LayerRequest.allocate),
    "hinm": ("column pruning + 2:4 on the rest, per tile", LayerRequest.allocate),
    "flexhinm": ("pruned / 2:4 / dense regions per tile, v searched", LayerRequest.allocate),
}

PERMUTATIONS: dict[str, MaskBuilder] = {}


def register_permutation(name: str, builder: MaskBuilder) -> None:
    """Register ``builder`` as ``prune_model(..., permutation=name)``.

    Args:
        name: the option value, e.g. ``"gyro"``.
        builder: called once per layer with a :class:`LayerRequest`; returns a
            :class:`~flexhinm.RegionLayout` (region methods) or a bool mask of the weight's shape.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"permutation name must be a non-empty string, got {name!r}")
    PERMUTATIONS[name] = builder


def _check_method(method: object) -> str:
    if method not in PRUNING_METHODS:
        choices = ", ".join(f"{name!r} ({text})" for name, (text, _) in PRUNING_METHODS.items())
        raise ValueError(f"unknown pruning method {method!r}; choose one of {choices}")
    return method


def _tile_size(rows: int, tile_rows: int, fallback: bool) -> tuple[int | None, str | None]:
    # Return (tile size, note). A None size means the layer is skipped, and the note gives the reason.
    if rows % tile_rows == 0:
        return tile_rows, None
    options = [size for size in TILE_FALLBACKS if size < tile_rows] if fallback else []
    for size in options:
        if rows % size == 0:
            return size, f"tile_rows={tile_rows} does not divide {rows} rows; used {size}"
    tried = ", ".join(str(size) for size in [tile_rows, *options])
    return None, f"no tile size from ({tried}) divides the {rows} output rows"


def _target(method: str, sparsity: float | None, n: int, m: int) -> float:
    if method != "nm":
        if sparsity is None:
            raise ValueError(f"method={method!r} needs a sparsity, e.g. sparsity=0.75")
        return check_sparsity(sparsity)
    fixed = 1 - n / m
    if sparsity is not None and abs(check_sparsity(sparsity) - fixed) > 1e-12:
        warnings.warn(
            f"method='nm' always reaches sparsity {fixed} with {n}:{m}; sparsity={sparsity} is ignored",
            UserWarning,
            stacklevel=3,
        )
    return fixed


def prune_model(
    model: nn.Module,
    method: str,
    sparsity: float | None = None,
    *,
    score: str = "magnitude",
    tile_rows: int = 64,
    n: int = 2,
    m: int = 4,
    vector_sparsity: float | None = None,
    loader: Iterable | None = None,
    loss_fn: Callable | None = None,
    exclude: Iterable[str] = (),
    include_head: bool = False,
    global_unstructured: bool = False,
    tile_fallback: bool = True,
    score_options: Mapping[str, object] | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
    previous: Mapping[str, RegionLayout] | None = None,
    permutation: str | None = None,
    apply: bool = True,
) -> PruneReport:
    """Prune the eligible layers of ``model`` to ``sparsity`` with ``method`` and report per layer.

    Args:
        model: any module; eligible layers come from :func:`flexhinm.eligibility_report`.
        method: ``"unstructured"``, ``"nm"``, ``"ovw"``, ``"hinm"`` or ``"flexhinm"``.
        sparsity: target fraction of zeros per pruned layer; ignored (with a warning if it differs)
            by ``"nm"``, which always reaches ``1 - n/m``. Region counts are whole groups of ``m``
            columns, so each layer reaches the closest sparsity it can (``report.table()`` lists
            them), and a region layout never prunes a whole layer.
        score: importance, ``"magnitude"``, ``"taylor"``, ``"fisher"`` or ``"fisher-block"``.
        tile_rows: rows per tile for region methods. A layer whose output rows it does not divide
            gets the largest of 64, 32, 16, 8 below ``tile_rows`` that does (reported), or is skipped.
        n: weights kept per N:M group.
        m: N:M group size.
        vector_sparsity: FlexHiNM ``v`` for every layer (``None`` searches it per layer).
        loader: ``(inputs, targets)`` batches for data-driven scores.
        loss_fn: ``loss_fn(outputs, targets)``; defaults to cross-entropy.
        exclude: module names to leave dense.
        include_head: prune the classifier head too: the last Linear/Conv layer in module order.
            If the model defines its head before other layers, pass ``include_head=True`` and
            name the head in ``exclude``.
        global_unstructured: with ``"unstructured"``, one threshold over all layers.
        tile_fallback: allow the smaller tile sizes; ``False`` skips such layers.
        score_options: extra keywords for :func:`flexhinm.importance.compute_scores`
            (``num_batches``, ``block_size``, ``damping``, ``grad_batch_size``).
        scores: precomputed scores by parameter name (then ``score`` only labels the report).
        previous: layouts of the previous gradual stage by parameter name (region methods).
        permutation: name of a hook registered with :func:`register_permutation`.
        apply: attach the masks with :func:`flexhinm.apply_masks`; ``False`` only reports. Masks
            already on a layer are replaced, with a warning if that brings pruned weights back.

    Returns:
        A :class:`PruneReport` with per-layer rows, skipped layers, masks and region layouts.

    Raises:
        ValueError: for an unknown method, score or permutation, a bad sparsity, no eligible layer,
            or options that do not fit the method.

    Example:
        >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.Linear(16, 4))
        >>> report = prune_model(model, "hinm", 0.75, tile_rows=32)
        >>> [(layer.name, layer.tile_rows, layer.counts, layer.sparsity) for layer in report.layers]
        [('0.weight', 32, (8, 8, 0), 0.75), ('2.weight', 16, (16, 16, 0), 0.75)]
        >>> report.skipped
        {'3.weight': 'classifier head: the last Linear/Conv layer in module order (include_head=True prunes it)'}
    """
    _check_method(method)
    check_nm(n, m)
    target = _target(method, sparsity, n, m)
    region = method in REGION_METHOD_NAMES
    if global_unstructured and method != "unstructured":
        raise ValueError(f"global_unstructured=True only applies to method='unstructured', not {method!r}")
    if previous and not region:
        raise ValueError(f"previous layouts only apply to region methods {REGION_METHOD_NAMES}, not {method!r}")
    if vector_sparsity is not None and method != "flexhinm":
        raise ValueError(f"vector_sparsity only applies to method='flexhinm', not {method!r}")
    if permutation is not None and permutation not in PERMUTATIONS:
        raise ValueError(
            f"unknown permutation {permutation!r}; registered: {sorted(PERMUTATIONS) or 'none'} "
            f"(add one with flexhinm.prune.register_permutation)"
        )
    if region and (isinstance(tile_rows, bool) or not isinstance(tile_rows, int) or tile_rows < 1):
        raise ValueError(f"tile_rows={tile_rows!r} is invalid; pass a positive int such as 64")
    previous = dict(previous or {})

    eligibility = eligibility_report(model, m=m, include_head=include_head, exclude=exclude)
    skipped = dict(eligibility.skipped)
    chosen = []
    for layer in eligibility:
        if not layer.eligible:
            continue
        groups = getattr(model.get_submodule(layer.name.rpartition(".")[0]), "groups", 1)
        if region and groups > 1:
            skipped[layer.name] = (
                f"grouped conv (groups={groups}): a tile would mix rows that read different input "
                f"channels, so region methods keep it dense (method='nm' can prune it)"
            )
            continue
        tile, note = (None, None)
        if region:
            requested = previous[layer.name].tile_rows if layer.name in previous else tile_rows
            tile, note = _tile_size(layer.gemm_shape[0], requested, tile_fallback)
            if tile is None:
                skipped[layer.name] = note
                continue
        chosen.append((layer, tile, note))
    if not chosen:
        hint = ""
        if any(reason.startswith("no tile size") for reason in skipped.values()):
            hint = (f"; tile_rows={tile_rows} divides no eligible layer's output rows, so pass a "
                    f"tile size that does (64, 32, 16 or 8 for most networks)")
        raise ValueError(
            f"no layer of the model can be pruned with method={method!r}{hint}; skipped: {skipped}"
        )

    names = [layer.name for layer, _, _ in chosen]
    if scores is None:
        scores = compute_scores(model, names, score, loader=loader, loss_fn=loss_fn, **dict(score_options or {}))
    missing = [name for name in names if name not in scores]
    if missing:
        raise ValueError(f"scores has no entry for {missing}; pass scores for every eligible layer")

    global_masks = {}
    if global_unstructured:
        global_masks = global_unstructured_masks({name: scores[name] for name in names}, target)
    builder = PERMUTATIONS[permutation] if permutation is not None else PRUNING_METHODS[method][1]

    layers, masks, layouts = [], {}, {}
    for layer, tile, note in chosen:
        layer_scores = scores[layer.name]
        if layer.name in global_masks:
            result = global_masks[layer.name]
        else:
            request = LayerRequest(
                name=layer.name, scores=layer_scores, method=method, sparsity=target,
                tile_rows=tile, n=n, m=m, vector_sparsity=vector_sparsity,
                previous=previous.get(layer.name),
            )
            result = builder(request)

        layout = result if isinstance(result, RegionLayout) else None
        mask = layout.mask() if layout is not None else result
        masks[layer.name] = mask
        if layout is not None:
            layouts[layer.name] = layout
        layers.append(LayerPruning.from_mask(layer, method, mask, layer_scores, layout, note))
        _logger.info("pruned %s to sparsity %.4f", layer.name, layers[-1].sparsity)

    empty = [layer.name for layer in layers if layer.sparsity >= 1.0]
    if empty:
        warnings.warn(
            f"every weight of {empty} is pruned, so these layers output only their bias; lower "
            f"the sparsity or leave them dense with exclude=[...]",
            UserWarning,
            stacklevel=2,
        )

    if apply:
        warn_if_revived(model, masks)
        apply_masks(model, masks)
    return PruneReport(
        method=method, score=score, target_sparsity=target, n=n, m=m, layers=layers,
        skipped=skipped, masks=masks, layouts=layouts, permutation=permutation,
    )
