"""Tests of flexhinm.models: the registry, the CIFAR ResNets and the ResNet-18 variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flexhinm
from flexhinm.models import (
    BasicBlock,
    CifarResNet,
    ResNet18,
    ZeroPadShortcut,
    create_model,
    get_model_spec,
    list_models,
    register_model,
)

# Exact parameter counts with 10 classes. He et al. (2016) give 0.27 M, 0.46 M and 0.85 M for
# ResNet-20/32/56; torchvision's ResNet-18 has 11,689,512 with 1000 classes, which is 11,181,642
# with 10 classes, and the 3x3 CIFAR stem saves 9408 - 1728 = 7680 more.
PARAMETER_COUNTS = {
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet18-cifar": 11_173_962,
    "resnet18-imagenette": 11_181_642,
}
BUILT_IN = list(PARAMETER_COUNTS)


def _count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("name", BUILT_IN)
def test_model_parameter_count(name: str) -> None:
    """Each model has its known parameter count."""
    assert _count_parameters(create_model(name)) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("name", BUILT_IN)
def test_model_output_shape(name: str) -> None:
    """A batch of the model's input size maps to (batch, num_classes) logits."""
    model = create_model(name, num_classes=7)
    input_size = get_model_spec(name).input_size
    with torch.no_grad():
        logits = model(torch.randn(2, *input_size))
    assert logits.shape == (2, 7)
    assert bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("name", BUILT_IN)
def test_model_eligibility_skips(name: str) -> None:
    """The stem conv and the classifier head are skipped; every other layer is eligible."""
    model = create_model(name)
    report = flexhinm.eligibility_report(model)
    layers = [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]

    assert set(report.skipped) == {"conv1.weight", "fc.weight"}
    assert "stem" in report.skipped["conv1.weight"]
    assert "classifier head" in report.skipped["fc.weight"]
    assert len(report.eligible) == len(layers) - 2


@pytest.mark.parametrize("name", BUILT_IN)
def test_model_head_is_last_linear(name: str) -> None:
    """The classifier head is the last Conv/Linear module and the only Linear."""
    model = create_model(name)
    layers = [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    linears = [module for module in layers if isinstance(module, nn.Linear)]
    assert layers[-1] is model.fc
    assert linears == [model.fc]


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_cifar_resnet_layer_count(depth: int) -> None:
    """A CIFAR ResNet has depth weight layers, since option-A shortcuts have no conv."""
    model = CifarResNet(depth)
    layers = [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth


def test_cifar_resnet_stage_shapes() -> None:
    """The three stages produce 16x32x32, 32x16x16 and 64x8x8 feature maps."""
    model = CifarResNet(20).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        x = torch.relu(model.bn1(model.conv1(x)))
        first = model.layer1(x)
        second = model.layer2(first)
        third = model.layer3(second)
    assert first.shape == (1, 16, 32, 32)
    assert second.shape == (1, 32, 16, 16)
    assert third.shape == (1, 64, 8, 8)


def test_resnet18_imagenette_final_map() -> None:
    """The ImageNet stem takes 160 px inputs to a 5x5 map in the last stage."""
    model = ResNet18(stem="imagenet").eval()
    features = {}
    model.layer4.register_forward_hook(lambda module, inputs, output: features.update(out=output))
    with torch.no_grad():
        model(torch.randn(1, 3, 160, 160))
    assert features["out"].shape == (1, 512, 5, 5)


def test_zero_pad_shortcut_values() -> None:
    """Option A keeps every second pixel of the input channels and appends zero channels."""
    x = torch.arange(32.0).view(1, 2, 4, 4)
    output = ZeroPadShortcut(stride=2, extra_channels=2)(x)
    expected = torch.zeros(1, 4, 2, 2)
    expected[0, 0] = torch.tensor([[0.0, 2.0], [8.0, 10.0]])
    expected[0, 1] = expected[0, 0] + 16
    assert torch.equal(output, expected)


def test_basic_block_identity_when_zero_init() -> None:
    """With zero_init_residual a stride-1 block returns relu(x)."""
    model = CifarResNet(20, zero_init_residual=True).eval()
    block = model.layer1[0]
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(x), rtol=0, atol=0)


def test_basic_block_projection_parameters() -> None:
    """A projection shortcut adds a 1x1 conv and a BatchNorm."""
    block = BasicBlock(16, 32, stride=2, shortcut="projection")
    assert isinstance(block.shortcut[0], nn.Conv2d)
    assert block.shortcut[0].weight.shape == (32, 16, 1, 1)


def test_basic_block_bad_shortcut() -> None:
    """An unknown shortcut name raises ValueError listing the choices."""
    with pytest.raises(ValueError, match="shortcut='C' is unknown; choose 'zero_pad'"):
        BasicBlock(16, 32, stride=2, shortcut="C")


def test_basic_block_zero_pad_cannot_shrink() -> None:
    """The zero_pad shortcut cannot reduce the channel count."""
    with pytest.raises(ValueError, match="cannot reduce 32 to 16 channels"):
        BasicBlock(32, 16, stride=2)


def test_kaiming_init_statistics() -> None:
    """Conv weights have std near sqrt(2 / fan_out); BatchNorm starts at scale 1, shift 0."""
    torch.manual_seed(0)
    model = CifarResNet(20)
    conv = model.layer3[1].conv1
    expected = (2.0 / (64 * 3 * 3)) ** 0.5
    measured = float(conv.weight.detach().std())

    assert abs(measured / expected - 1) < 0.05, f"std {measured:.4f}, expected {expected:.4f}"
    assert torch.equal(model.layer3[1].bn1.weight, torch.ones(64))
    assert torch.equal(model.fc.bias, torch.zeros(10))


def test_model_seeded_creation() -> None:
    """The same torch seed creates identical weights."""
    torch.manual_seed(3)
    first = create_model("resnet20").state_dict()
    torch.manual_seed(3)
    second = create_model("resnet20").state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_model_channels_last_matches() -> None:
    """channels_last inputs and weights give the same logits as contiguous ones."""
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        output = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(output, reference, rtol=1e-4, atol=1e-5)


def test_cifar_resnet_bad_depth() -> None:
    """A depth that is not 6n + 2 raises ValueError."""
    with pytest.raises(ValueError, match="depth=21 is invalid; a CIFAR ResNet has 6n \\+ 2"):
        CifarResNet(21)


def test_resnet18_bad_stem() -> None:
    """An unknown stem raises ValueError."""
    with pytest.raises(ValueError, match="stem='tiny' is unknown"):
        ResNet18(stem="tiny")


# Registry


def test_list_models_built_in() -> None:
    """list_models is sorted and contains every built-in model."""
    names = list_models()
    assert names == sorted(names)
    assert set(BUILT_IN) <= set(names)


def test_create_model_unknown_name() -> None:
    """An unknown name raises ValueError that lists the registered names."""
    with pytest.raises(ValueError, match=r"unknown model name='resnet19'.*'resnet20'"):
        create_model("resnet19")


@pytest.mark.parametrize("num_classes", [0, -3, True, 2.0])
def test_create_model_bad_num_classes(num_classes: object) -> None:
    """num_classes must be a positive int."""
    with pytest.raises(ValueError, match="must be a positive int"):
        create_model("resnet20", num_classes=num_classes)


def test_create_model_passes_kwargs() -> None:
    """Extra keyword arguments reach the factory."""
    model = create_model("resnet20", zero_init_residual=True)
    assert torch.equal(model.layer1[0].bn2.weight, torch.zeros(16))


def test_model_spec_metadata() -> None:
    """Specs record the input size and usual data set."""
    assert get_model_spec("resnet20").input_size == (3, 32, 32)
    assert get_model_spec("resnet18-imagenette").dataset == "imagenette"


def test_register_model_duplicate() -> None:
    """Registering a taken name from another function raises ValueError."""
    with pytest.raises(ValueError, match="'resnet20' is already registered by .*resnet20"):

        @register_model("resnet20")
        def other(num_classes: int = 10) -> nn.Module:
            return nn.Linear(4, num_classes)


def test_register_model_new_name() -> None:
    """A registered factory is created by name and re-registering it replaces the entry."""

    def define() -> None:
        @register_model("test-linear-probe")
        def linear_probe(num_classes: int = 10) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    define()
    define()
    assert create_model("test-linear-probe", num_classes=3)[1].out_features == 3
    assert "test-linear-probe" in list_models()


def test_register_model_bad_name() -> None:
    """An empty name raises ValueError."""
    with pytest.raises(ValueError, match="name='' must be a non-empty string"):
        register_model("")
