"""Image classifiers created by name: CIFAR ResNet-20/32/44/56/110 and ResNet-18 variants.

Example:
    >>> from flexhinm.models import create_model, list_models
    >>> [name for name in list_models() if name.startswith("resnet18")]
    ['resnet18-cifar', 'resnet18-imagenette']
"""

from .registry import ModelSpec, create_model, get_model_spec, list_models, register_model
from .resnet18 import ResNet18
from .resnet_cifar import BasicBlock, CifarResNet, ZeroPadShortcut, init_weights

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "ModelSpec",
    "ResNet18",
    "ZeroPadShortcut",
    "create_model",
    "get_model_spec",
    "init_weights",
    "list_models",
    "register_model",
]
