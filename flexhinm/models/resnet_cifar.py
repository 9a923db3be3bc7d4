"""CIFAR ResNets of depth 6n + 2 (ResNet-20/32/44/56/110) and the basic residual block.

The architecture follows He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016, section 4.2. A 3x3 stem conv with 16 channels is followed by three stages of ``n``
basic blocks with 16, 32 and 64 channels, on 32x32, 16x16 and 8x8 feature maps. Global average
pooling and a linear classifier end the network, which gives ``6n + 2`` weight layers.

As in the paper's CIFAR experiments, a block that halves the resolution and doubles the channels
uses the parameter-free "option A" shortcut: the input is subsampled with stride 2 and the new
channels are filled with zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["BasicBlock", "CifarResNet", "ZeroPadShortcut", "init_weights", "make_stage"]


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut ("option A"): subsample with ``stride``, then append zero channels.

    Args:
        stride: spatial subsampling factor (2 when a stage halves the resolution).
        extra_channels: zero channels appended after the input channels.

    Example:
        >>> shortcut = ZeroPadShortcut(stride=2, extra_channels=2)
        >>> shortcut(torch.ones(1, 2, 4, 4)).shape
        torch.Size([1, 4, 2, 2])
    """

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a residual connection, ``relu(F(x) + shortcut(x))``.

    Args:
        in_channels: input channels.
        out_channels: output channels of both convs.
        stride: stride of the first conv; 2 halves the resolution.
        shortcut: how the residual path matches a changed shape: ``"zero_pad"`` (option A of He
            et al., no parameters) or ``"projection"`` (option B, a 1x1 conv + BatchNorm). When
            the shape does not change, the shortcut is the identity either way.

    Raises:
        ValueError: for an unknown ``shortcut``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, *, shortcut: str = "zero_pad"
    ) -> None:
        super().__init__()
        if shortcut not in ("zero_pad", "projection"):
            raise ValueError(
                f"shortcut={shortcut!r} is unknown; choose 'zero_pad' (option A) or 'projection' "
                f"(option B)"
            )
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "projection":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            if out_channels < in_channels:
                raise ValueError(
                    f"the zero_pad shortcut cannot reduce {in_channels} to {out_channels} "
                    f"channels; use shortcut='projection'"
                )
            self.shortcut = ZeroPadShortcut(stride, out_channels - in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def make_stage(
    in_channels: int, out_channels: int, blocks: int, stride: int, shortcut: str
) -> nn.Sequential:
    """Return ``blocks`` basic blocks; only the first changes the stride and channel count."""
    layers = [BasicBlock(in_channels, out_channels, stride, shortcut=shortcut)]
    for _ in range(blocks - 1):
        layers.append(BasicBlock(out_channels, out_channels, 1, shortcut=shortcut))
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, *, zero_init_residual: bool = False) -> None:
    """Initialise a ResNet in place with Kaiming (He) initialisation.

    Conv weights are drawn from ``N(0, 2 / fan_out)`` (``kaiming_normal_``, ReLU gain),
    BatchNorm scales are 1 and shifts 0. Linear weights use ``kaiming_normal_`` with the linear
    gain (``N(0, 1 / fan_in)``) because no ReLU follows the head; Linear biases are 0. With
    ``zero_init_residual`` the last BatchNorm of every :class:`BasicBlock` starts at 0, so each
    block begins as the identity.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            nn.init.zeros_(module.bias)

    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with ``depth = 6n + 2`` weight layers (He et al. 2016, CIFAR).

    Layers: ``conv1`` (3x3, 3 -> 16, the stem) and ``bn1``, then ``layer1``, ``layer2``,
    ``layer3`` (``n`` blocks each, 16/32/64 channels, the last two start with stride 2), global
    average pooling and ``fc`` (64 -> ``num_classes``, the only Linear, so the classifier head is
    the last Linear). Shortcuts that change the shape use option A (:class:`ZeroPadShortcut`).

    Args:
        depth: 20, 32, 44, 56, 110 or any ``6n + 2`` with ``n >= 1``.
        num_classes: outputs of the classifier head.
        zero_init_residual: start every block as the identity (see :func:`init_weights`).

    Raises:
        ValueError: if ``depth`` is not ``6n + 2``.

    Example:
        >>> model = CifarResNet(depth=20)
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, depth: int, num_classes: int = 10, *, zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"depth={depth!r} is invalid; a CIFAR ResNet has 6n + 2 layers with n >= 1, "
                f"e.g. 20, 32, 44, 56 or 110"
            )
        blocks = (depth - 2) // 6
        self.depth = depth

        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = make_stage(16, 16, blocks, stride=1, shortcut="zero_pad")
        self.layer2 = make_stage(16, 32, blocks, stride=2, shortcut="zero_pad")
        self.layer3 = make_stage(32, 64, blocks, stride=2, shortcut="zero_pad")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

        init_weights(self, zero_init_residual=zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a ``(B, 3, 32, 32)`` float batch to ``(B, num_classes)`` logits."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


@register_model("resnet20")
def resnet20(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-20 for CIFAR (about 0.27 M parameters)."""
    return CifarResNet(20, num_classes, **kwargs)


@register_model("resnet32")
def resnet32(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-32 for CIFAR (about 0.46 M parameters)."""
    return CifarResNet(32, num_classes, **kwargs)


@register_model("resnet44")
def resnet44(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-44 for CIFAR (about 0.66 M parameters)."""
    return CifarResNet(44, num_classes, **kwargs)


@register_model("resnet56")
def resnet56(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-56 for CIFAR (about 0.85 M parameters)."""
    return CifarResNet(56, num_classes, **kwargs)


@register_model("resnet110")
def resnet110(num_classes: int = 10, **kwargs) -> CifarResNet:
    """ResNet-110 for CIFAR (about 1.7 M parameters)."""
    return CifarResNet(110, num_classes, **kwargs)
