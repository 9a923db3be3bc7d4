"""Which layers of a model can take an N:M (or hierarchical N:M) mask, and why others cannot.

A layer is eligible when it is a Linear, Conv1d or Conv2d whose GEMM view has a row length (the
reduction dimension) divisible by ``m``, and it is not the classifier head. Everything else is
listed with the reason it stays dense, including weights of other modules (the query/key/value
projection of ``nn.MultiheadAttention``, embeddings, transposed or 3-D convolutions). The report
never raises for an unusual layer.

The classifier head is the last Linear/Conv layer in module order (``named_modules()``), which is
the last one to run in most models. A model that defines its head before other layers should pass
``include_head=True`` and name the real head in ``exclude``. Layers are listed in module order,
then the other weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from .gemm import gemm_shape

__all__ = ["EligibilityReport", "LayerEligibility", "eligibility_report", "eligible_layers"]

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class LayerEligibility:
    """One layer: its weight name, type, weight and GEMM shapes, and why it is skipped, if it is."""

    name: str
    kind: str
    shape: tuple[int, ...]
    gemm_shape: tuple[int, int]
    reason: str | None = None

    @property
    def eligible(self) -> bool:
        """``True`` when the layer can be pruned."""
        return self.reason is None


class EligibilityReport(list):
    """A list of :class:`LayerEligibility`: every Linear/Conv layer in module order, then the
    other weights of two or more dimensions, which stay dense."""

    @property
    def eligible(self) -> list[str]:
        """Weight names of the layers that can be pruned."""
        return [layer.name for layer in self if layer.eligible]

    @property
    def skipped(self) -> dict[str, str]:
        """Weight name to the reason the layer stays dense."""
        return {layer.name: layer.reason for layer in self if not layer.eligible}

    def table(self) -> str:
        """Return the report as a fixed-width text table."""
        name_width = max([32, *(len(layer.name) for layer in self)])
        kind_width = max([7, *(len(layer.kind) for layer in self)])
        lines = [f"{'weight':<{name_width}} {'type':<{kind_width}} {'GEMM view':>12}  status"]
        for layer in self:
            rows, columns = layer.gemm_shape
            status = "prune" if layer.eligible else f"skip: {layer.reason}"
            lines.append(f"{layer.name:<{name_width}} {layer.kind:<{kind_width}} "
                         f"{f'{rows}x{columns}':>12}  {status}")
        return "\n".join(lines)


def _skip_reason(module: nn.Module, m: int, is_head: bool, excluded: bool) -> str | None:
    if excluded:
        return "excluded by the caller"
    if is_head:
        return "classifier head: the last Linear/Conv layer in module order (include_head=True prunes it)"

    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        channels_per_group = module.in_channels // module.groups
        if module.groups > 1 and module.groups == module.in_channels:
            return f"depthwise conv: 1 input channel per group, not a multiple of m={m}"
        if channels_per_group % m:
            kind = "grouped conv" if module.groups > 1 else "conv"
            stem = " (stem)" if module.in_channels <= 4 and module.groups == 1 else ""
            return (
                f"{kind}{stem}: {channels_per_group} input channels per group, "
                f"not a multiple of m={m}"
            )
        return None

    columns = module.weight.shape[1]
    if columns % m:
        return f"in_features={columns} is not a multiple of m={m}"
    return None


def eligibility_report(
    model: nn.Module,
    *,
    m: int = 4,
    include_head: bool = False,
    exclude: Iterable[str] = (),
) -> EligibilityReport:
    """List every Linear/Conv1d/Conv2d layer of ``model`` and whether it can take an N:M mask.

    Args:
        model: any module; layers are found with ``named_modules()``.
        m: group size along the reduction dimension (4 for 2:4).
        include_head: prune the model's last Linear/Conv layer in module order too (normally kept
            dense as the classifier head).
        exclude: module names (as in ``named_modules()``) to leave dense.

    Returns:
        An :class:`EligibilityReport`; ``report.eligible`` lists weight names to prune and
        ``report.skipped`` maps the others, other modules' weights included, to their reason.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3), nn.Flatten(),
        ...                       nn.Linear(16, 10))
        >>> report = eligibility_report(model)
        >>> report.eligible
        ['1.weight']
        >>> report.skipped['0.weight']
        'conv (stem): 3 input channels per group, not a multiple of m=4'
    """
    excluded = set(exclude)
    layers = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES)
    ]
    unknown = excluded - {name for name, _ in layers}
    if unknown:
        raise ValueError(
            f"exclude names {sorted(unknown)} are not Linear/Conv layers of the model; "
            f"valid names include {[name for name, _ in layers][:5]}"
        )

    report = EligibilityReport()
    for index, (name, module) in enumerate(layers):
        weight = module.weight
        is_head = index == len(layers) - 1 and not include_head
        report.append(
            LayerEligibility(
                name=f"{name}.weight" if name else "weight",
                kind=type(module).__name__,
                shape=tuple(weight.shape),
                gemm_shape=gemm_shape(weight.shape),
                reason=_skip_reason(module, m, is_head, name in excluded),
            )
        )
    report.extend(_other_weights(model, layers))
    return report


def _other_weights(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> list[LayerEligibility]:
    """Return a skipped entry for each weight of 2+ dimensions outside the Linear/Conv layers.

    Only parameters whose name contains "weight" count, so tokens and position embeddings such
    as a ViT's ``class_token`` are not listed.
    """
    covered = {id(parameter) for _, module in layers for parameter in module.parameters()}
    entries = []
    for name, parameter in model.named_parameters():
        owner_name, _, attribute = name.rpartition(".")
        if parameter.dim() < 2 or id(parameter) in covered or "weight" not in attribute:
            continue
        owner = model.get_submodule(owner_name)
        kind = type(owner).__name__
        if isinstance(owner, nn.MultiheadAttention):
            reason = (f"the query/key/value projection of nn.MultiheadAttention ({attribute}) is a "
                      f"plain parameter, not an nn.Linear, so it stays dense")
        else:
            reason = f"{kind}.{attribute} is not a Linear, Conv1d or Conv2d weight, so it stays dense"
        shape = tuple(parameter.shape)
        columns = parameter.numel() // max(shape[0], 1)      # an empty weight has no columns
        entries.append(LayerEligibility(name=name, kind=kind, shape=shape,
                                        gemm_shape=(shape[0], columns), reason=reason))
    return entries


def eligible_layers(model: nn.Module, *, m: int = 4, **options) -> dict[str, nn.Module]:
    """Return module name to module for every eligible layer (options as in the report)."""
    names = set(eligibility_report(model, m=m, **options).eligible)
    return {
        name: module
        for name, module in model.named_modules()
        if (f"{name}.weight" if name else "weight") in names
    }
