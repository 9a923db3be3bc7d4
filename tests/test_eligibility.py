"""The per-layer eligibility report never crashes and names a reason for every skip."""

import pytest
import torch
from torch import nn

from flexhinm import apply_masks, eligibility_report, eligible_layers


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3)
        self.depthwise = nn.Conv2d(16, 16, 3, groups=16)
        self.grouped_ok = nn.Conv2d(16, 16, 3, groups=2)
        self.grouped_bad = nn.Conv2d(12, 12, 1, groups=6)
        self.odd_linear = nn.Linear(10, 8)
        self.conv1d = nn.Conv1d(8, 8, 3)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)


def test_report_reasons():
    """Each unusual layer is skipped with its own reason; regular ones are eligible."""
    report = eligibility_report(Mixed())
    skipped = report.skipped
    assert report.eligible == ["grouped_ok.weight", "conv1d.weight", "body.weight"]
    assert skipped["stem.weight"].startswith("conv (stem): 3 input channels")
    assert skipped["depthwise.weight"].startswith("depthwise conv")
    assert skipped["grouped_bad.weight"].startswith("grouped conv: 2 input channels per group")
    assert skipped["odd_linear.weight"] == "in_features=10 is not a multiple of m=4"
    assert skipped["head.weight"].startswith("classifier head")


def test_report_include_head_and_exclude():
    """include_head prunes the last layer; exclude keeps named layers dense."""
    report = eligibility_report(Mixed(), include_head=True, exclude=["body"])
    assert "head.weight" in report.eligible
    assert report.skipped["body.weight"] == "excluded by the caller"


def test_report_unknown_exclude_name():
    """A typo in exclude is an error, not a silent no-op."""
    with pytest.raises(ValueError, match=r"exclude names \['bdy'\]"):
        eligibility_report(Mixed(), exclude=["bdy"])


def test_report_table_lists_every_layer():
    """The text table has a header and one line per Linear/Conv layer."""
    report = eligibility_report(Mixed())
    assert len(report.table().splitlines()) == 1 + len(report)


def test_eligible_layers_returns_modules():
    """eligible_layers maps module names to the modules."""
    layers = eligible_layers(Mixed())
    assert list(layers) == ["grouped_ok", "conv1d", "body"]
    assert isinstance(layers["body"], nn.Linear)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 16)
        self.token = nn.Parameter(torch.zeros(1, 1, 16))
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.upsample = nn.ConvTranspose2d(16, 8, 3)
        self.head = nn.Linear(16, 10)


def test_report_lists_other_weights():
    """Weights outside Linear/Conv layers are listed as skipped, each with its reason."""
    report = eligibility_report(Attention())
    skipped = report.skipped
    assert report.eligible == ["attention.out_proj.weight"]
    assert skipped["attention.in_proj_weight"].startswith(
        "the query/key/value projection of nn.MultiheadAttention (in_proj_weight)")
    assert skipped["embedding.weight"] == "Embedding.weight is not a Linear, Conv1d or Conv2d weight, so it stays dense"
    assert skipped["upsample.weight"].startswith("ConvTranspose2d.weight is not")
    assert "token" not in skipped
    assert report[-1].gemm_shape == (16, 72)


def test_report_ignores_mask_parametrizations():
    """A masked Linear is listed once under its weight name, not also under its original tensor."""
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4))
    apply_masks(model, {"0.weight": torch.ones(16, 16, dtype=torch.bool)})
    report = eligibility_report(model)
    assert [layer.name for layer in report] == ["0.weight", "1.weight"]


def test_report_table_fits_long_names():
    """Columns stay aligned when a name is longer than the default width."""
    model = nn.Sequential()
    model.add_module("a_rather_long_module_name_for_a_block", nn.Linear(16, 16))
    model.add_module("head", nn.Linear(16, 4))
    lines = eligibility_report(model).table().splitlines()
    assert len({line.index(" Linear") for line in lines[1:]}) == 1


def test_report_lists_empty_other_weight():
    """An embedding with no rows is listed as skipped instead of raising."""
    model = nn.Sequential(nn.Embedding(0, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    report = eligibility_report(model)
    assert report.skipped["0.weight"].startswith("Embedding.weight is not")
    assert report[-1].gemm_shape == (0, 0)
