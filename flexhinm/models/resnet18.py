"""ResNet-18 with a stem for 32 px CIFAR images or for 160 px Imagenette images.

The body is the standard ResNet-18 of He et al. 2016: four stages of two basic blocks with 64,
128, 256 and 512 channels, the last three starting with stride 2, and projection ("option B",
1x1 conv + BatchNorm) shortcuts where the shape changes. Only the stem differs:

* ``stem="cifar"``: a 3x3 stride-1 conv and no max-pool, so a 32x32 input reaches the last stage
  at 4x4 (the common CIFAR adaptation).
* ``stem="imagenet"``: the original 7x7 stride-2 conv and a 3x3 stride-2 max-pool, so a 160x160
  input reaches the last stage at 5x5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .resnet_cifar import init_weights, make_stage

__all__ = ["ResNet18"]


class ResNet18(nn.Module):
    """ResNet-18 (about 11.2 M parameters with 10 classes) with a CIFAR or an ImageNet stem.

    Layers: ``conv1`` (the stem, 3 input channels) and ``bn1``, ``maxpool`` (identity for the
    CIFAR stem), ``layer1`` ... ``layer4``, global average pooling and ``fc`` (512 ->
    ``num_classes``, the only Linear, so the classifier head is the last Linear). Weights use
    Kaiming initialisation (see :func:`~flexhinm.models.resnet_cifar.init_weights`).

    Args:
        num_classes: outputs of the classifier head.
        stem: ``"cifar"`` (3x3 stride 1, no max-pool) or ``"imagenet"`` (7x7 stride 2 + max-pool).
        zero_init_residual: start every block as the identity.

    Raises:
        ValueError: for an unknown ``stem``.

    Example:
        >>> model = ResNet18(stem="cifar")
        >>> model(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, num_classes: int = 10, *, stem: str = "cifar", zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            raise ValueError(f"stem={stem!r} is unknown; choose 'cifar' or 'imagenet'")
        self.stem = stem
        self.bn1 = nn.BatchNorm2d(64)

        self.layer1 = make_stage(64, 64, 2, stride=1, shortcut="projection")
        self.layer2 = make_stage(64, 128, 2, stride=2, shortcut="projection")
        self.layer3 = make_stage(128, 256, 2, stride=2, shortcut="projection")
        self.layer4 = make_stage(256, 512, 2, stride=2, shortcut="projection")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

        init_weights(self, zero_init_residual=zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a ``(B, 3, H, W)`` float batch to ``(B, num_classes)`` logits."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


@register_model("resnet18-cifar")
def resnet18_cifar(num_classes: int = 10, **kwargs) -> ResNet18:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 CIFAR images."""
    return ResNet18(num_classes, stem="cifar", **kwargs)


@register_model("resnet18-imagenette", input_size=(3, 160, 160), dataset="imagenette")
def resnet18_imagenette(num_classes: int = 10, **kwargs) -> ResNet18:
    """ResNet-18 with the ImageNet stem (7x7 stride 2 + max-pool), for 160x160 Imagenette images."""
    return ResNet18(num_classes, stem="imagenet", **kwargs)
