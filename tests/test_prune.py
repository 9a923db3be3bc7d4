"""Tests for model-level pruning (prune_model) and its report."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from flexhinm import allocate_regions, check_monotone, create_model, masks_of, prune_model, sparsity_of
from flexhinm.prune import PERMUTATIONS, PRUNING_METHODS, register_permutation


def small_cnn(seed: int = 0) -> nn.Module:
    """Stem conv (3 in), two prunable convs with 32 and 16 output channels, a 12-row conv, a head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.Conv2d(32, 16, 1),
        nn.Conv2d(16, 12, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 10),
    )


@pytest.mark.parametrize("method", ["unstructured", "ovw", "hinm", "flexhinm"])
@pytest.mark.parametrize("sparsity", [0.75, 0.875])
def test_prune_methods_reach_target(method: str, sparsity: float) -> None:
    """Every pruned layer is within one group of 4 per row of the target, and masks are applied."""
    model = small_cnn()
    report = prune_model(model, method, sparsity, tile_rows=16)
    applied = masks_of(model)
    assert set(applied) == {layer.name for layer in report.layers}
    for layer in report.layers:
        assert abs(layer.sparsity - sparsity) <= 4 / layer.gemm_shape[1] + 1e-12, layer
        assert torch.equal(applied[layer.name], report.masks[layer.name])
        weight = dict(model.named_parameters())[layer.name.replace("weight", "parametrizations.weight.original")]
        assert sparsity_of(weight * applied[layer.name]) >= layer.sparsity


def test_prune_nm_sparsity_is_half() -> None:
    """N:M reaches 1 - n/m and warns when another sparsity is asked."""
    report = prune_model(small_cnn(), "nm")
    assert {layer.sparsity for layer in report.layers} == {0.5}
    with pytest.warns(UserWarning, match="always reaches sparsity 0.5 with 2:4"):
        prune_model(small_cnn(), "nm", 0.75)


def test_prune_tile_fallback_and_skip() -> None:
    """Rows that 64 does not divide get 32 or 16 (noted); 12 rows are skipped with a reason."""
    report = prune_model(small_cnn(), "flexhinm", 0.75)
    tiles = {layer.name: (layer.tile_rows, layer.tile_note) for layer in report.layers}
    assert tiles["1.weight"] == (32, "tile_rows=64 does not divide 32 rows; used 32")
    assert tiles["2.weight"][0] == 16
    assert report.skipped["3.weight"] == "no tile size from (64, 32, 16, 8) divides the 12 output rows"
    assert report.skipped["0.weight"].startswith("conv (stem)")
    assert "classifier head" in report.skipped["6.weight"]


def test_prune_without_fallback_skips() -> None:
    """tile_fallback=False skips every layer whose rows the tile size does not divide."""
    report = prune_model(small_cnn(), "hinm", 0.75, tile_rows=32, tile_fallback=False)
    assert [layer.name for layer in report.layers] == ["1.weight"]
    assert report.skipped["2.weight"] == "no tile size from (32) divides the 16 output rows"


def test_prune_report_layouts_and_counts() -> None:
    """Region methods keep one layout per layer whose mask and counts the report repeats."""
    report = prune_model(small_cnn(), "flexhinm", 0.8, tile_rows=16)
    for layer in report.layers:
        layout = report.layouts[layer.name]
        assert torch.equal(layout.mask(), report.masks[layer.name])
        assert layer.counts == layout.counts
        assert layer.vector_sparsity == layout.vector_sparsity
    assert prune_model(small_cnn(), "unstructured", 0.8).layouts == {}


def test_prune_report_retained_and_totals() -> None:
    """Retained fractions are computed from the scores; overall sparsity counts pruned layers only."""
    model = small_cnn()
    weights = {name: p.detach().abs().clone() for name, p in model.named_parameters()}
    report = prune_model(model, "hinm", 0.75, tile_rows=16)
    for layer in report.layers:
        scores = weights[layer.name].double()
        expected = float((scores * report.masks[layer.name]).sum() / scores.sum())
        assert layer.retained_fraction == pytest.approx(expected, rel=1e-12)
    zeros = sum(int((~mask).sum()) for mask in report.masks.values())
    assert report.sparsity == zeros / sum(mask.numel() for mask in report.masks.values())


def test_prune_report_table_and_json() -> None:
    """table() names every layer; to_dict() is JSON-serialisable and repeats the rows."""
    report = prune_model(small_cnn(), "flexhinm", 0.75, tile_rows=16)
    text = report.table()
    for layer in report.layers:
        assert layer.name in text
    assert "skipped: no tile size" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["method"] == "flexhinm"
    assert [row["name"] for row in data["layers"]] == [layer.name for layer in report.layers]
    assert data["layers"][0]["counts"] == list(report.layers[0].counts)


def test_prune_global_unstructured() -> None:
    """One threshold over all layers hits the overall target while layers differ."""
    report = prune_model(small_cnn(), "unstructured", 0.75, global_unstructured=True)
    assert report.sparsity == pytest.approx(0.75, abs=1e-4)
    assert len({round(layer.sparsity, 3) for layer in report.layers}) > 1


def test_prune_apply_false_leaves_model() -> None:
    """apply=False reports without masking the model."""
    model = small_cnn()
    prune_model(model, "ovw", 0.75, tile_rows=16, apply=False)
    assert masks_of(model) == {}


def test_prune_gradual_previous() -> None:
    """Passing the previous stage's layouts gives monotone layouts and shrinking masks."""
    model = small_cnn()
    first = prune_model(model, "flexhinm", 0.5, tile_rows=16)
    second = prune_model(model, "flexhinm", 0.75, tile_rows=16, previous=first.layouts)
    for name, layout in second.layouts.items():
        check_monotone(first.layouts[name], layout)
        assert bool((second.masks[name] <= first.masks[name]).all())


def test_prune_taylor_scores() -> None:
    """Data-driven scores run through prune_model."""
    model = small_cnn()
    data = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))]
    report = prune_model(model, "flexhinm", 0.75, tile_rows=16, score="taylor", loader=data)
    assert report.score == "taylor"
    assert len(report.layers) == 2


def test_prune_permutation_hook(monkeypatch) -> None:
    """A registered permutation hook builds the layouts and can pass an output row order."""
    monkeypatch.setattr("flexhinm.prune.PERMUTATIONS", dict(PERMUTATIONS))

    def reverse_rows(request):
        rows = request.scores.shape[0]
        return request.allocate(row_order=torch.arange(rows - 1, -1, -1))

    register_permutation("reverse", reverse_rows)
    report = prune_model(small_cnn(), "hinm", 0.75, tile_rows=16, permutation="reverse")
    for layout in report.layouts.values():
        assert layout.row_order.tolist() == list(range(layout.rows - 1, -1, -1))
    assert report.to_dict()["permutation"] == "reverse"


def test_prune_resnet20_every_eligible_layer() -> None:
    """On ResNet-20 every conv but the stem is pruned, with tiles of 16, 32 and 64 rows."""
    report = prune_model(create_model("resnet20"), "flexhinm", 0.75)
    assert len(report.layers) == 18
    assert {layer.tile_rows for layer in report.layers} == {16, 32, 64}
    assert abs(report.sparsity - 0.75) < 0.01


def test_prune_matches_allocate_regions() -> None:
    """A layer's mask is the allocate_regions mask of its magnitude scores."""
    model = small_cnn()
    weight = model[1].weight.detach().abs().clone()
    report = prune_model(model, "flexhinm", 0.75, tile_rows=32)
    assert torch.equal(report.masks["1.weight"], allocate_regions(weight, 0.75, "flexhinm", 32).mask())


def test_prune_rejects_bad_options() -> None:
    """Unknown names and options that do not fit the method raise clear errors."""
    with pytest.raises(ValueError, match="unknown pruning method 'venom'; choose one of 'unstructured'"):
        prune_model(small_cnn(), "venom", 0.75)
    with pytest.raises(ValueError, match="unknown permutation 'no-such-permutation'"):
        prune_model(small_cnn(), "hinm", 0.75, permutation="no-such-permutation")
    with pytest.raises(ValueError, match="only applies to method='unstructured'"):
        prune_model(small_cnn(), "hinm", 0.75, global_unstructured=True)
    with pytest.raises(ValueError, match="vector_sparsity only applies to method='flexhinm'"):
        prune_model(small_cnn(), "hinm", 0.75, vector_sparsity=0.5)
    with pytest.raises(ValueError, match="previous layouts only apply to region methods"):
        prune_model(small_cnn(), "unstructured", 0.75, previous={"1.weight": None})
    with pytest.raises(ValueError, match="needs a sparsity"):
        prune_model(small_cnn(), "flexhinm")
    with pytest.raises(ValueError, match="outside"):
        prune_model(small_cnn(), "flexhinm", 1.2)
    with pytest.raises(ValueError, match="method='hinm' needs sparsity >= 0.5"):
        prune_model(small_cnn(), "hinm", 0.3, tile_rows=16)
    with pytest.raises(ValueError, match="no layer of the model can be pruned"):
        prune_model(nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 2)), "flexhinm", 0.75)
    with pytest.raises(ValueError, match="scores has no entry for"):
        prune_model(small_cnn(), "hinm", 0.75, tile_rows=16, scores={})
    with pytest.raises(ValueError, match="permutation name must be a non-empty string"):
        register_permutation("", lambda request: None)
    assert set(PRUNING_METHODS) == {"unstructured", "nm", "ovw", "hinm", "flexhinm"}


@pytest.mark.parametrize("tile_rows", [0, -8, 2.5, True])
def test_prune_rejects_bad_tile_rows(tile_rows) -> None:
    """A tile size that is not a positive int is rejected before any work."""
    with pytest.raises(ValueError, match=f"tile_rows={tile_rows!r} is invalid"):
        prune_model(small_cnn(), "flexhinm", 0.75, tile_rows=tile_rows)


def test_prune_tile_rows_dividing_nothing() -> None:
    """When no layer takes the tile size, the error names the fix: a tile size that divides the rows."""
    with pytest.raises(ValueError, match="tile_rows=7 divides no eligible layer's output rows"):
        prune_model(small_cnn(), "hinm", 0.75, tile_rows=7)


def test_prune_warns_when_pruned_weights_return() -> None:
    """Pruning a masked model less sparsely warns that weights pruned before come back."""
    model = small_cnn()
    prune_model(model, "unstructured", 0.75)
    with pytest.warns(UserWarning, match="layers already carry masks .* come back with their old values"):
        prune_model(model, "unstructured", 0.5)


def test_prune_gradual_stage_does_not_warn() -> None:
    """A sparser stage built on the previous layouts keeps every pruned weight pruned, silently."""
    model = small_cnn()
    first = prune_model(model, "flexhinm", 0.5, tile_rows=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prune_model(model, "flexhinm", 0.75, tile_rows=16, previous=first.layouts)


def test_prune_warns_for_all_zero_layer() -> None:
    """A layer whose every weight is pruned is named in a warning."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match=r"every weight of \['0.weight'\] is pruned"):
        prune_model(model, "unstructured", 0.99)


def test_prune_hinm_keeps_narrow_layer_alive() -> None:
    """HiNM at 87.5 % on an 8-column layer keeps one 2:4 group instead of pruning it all."""
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 2))
    report = prune_model(model, "hinm", 0.875, tile_rows=16)
    assert report.layers[0].counts == (4, 4, 0)
    assert report.layers[0].sparsity == 0.75


def test_prune_report_table_fits_long_names() -> None:
    """The GEMM-view column stays aligned when a layer name is longer than the default width."""
    model = nn.Sequential()
    model.add_module("encoder_layer_0_self_attention_out_proj", nn.Linear(16, 16))
    model.add_module("block", nn.Linear(16, 16))
    model.add_module("head", nn.Linear(16, 4))
    lines = prune_model(model, "hinm", 0.75, tile_rows=16).table().splitlines()
    assert lines[2].index("16x16") == lines[3].index("16x16")


def test_prune_region_methods_skip_grouped_conv() -> None:
    """Region methods leave a grouped conv dense with a reason; 2:4 still prunes it."""
    def model():
        return nn.Sequential(nn.Conv2d(16, 16, 3, groups=2), nn.Conv2d(16, 16, 1), nn.Flatten(),
                             nn.Linear(16, 2))

    report = prune_model(model(), "hinm", 0.75, tile_rows=16)
    assert report.skipped["0.weight"].startswith("grouped conv (groups=2): a tile would mix rows")
    assert [layer.name for layer in report.layers] == ["1.weight"]
    assert "0.weight" in prune_model(model(), "nm").masks
