"""Architectures by name: ``build(name, input_shape, num_classes)``.

Adding one is a builder ``(input_shape, num_classes) -> nn.Module`` and a line in MODELS; a family
of names (``cifar_resnet_N[_W]``) is a ``Family`` (a prefix and a name parser) and a line in FAMILIES.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from glth_core.models import cifar_resnet, cifar_vgg
from glth_core.models.base import Family, ModelSpecError
from glth_core.models.frankle_carbin import conv2, conv4, conv6, lenet_300_100
from glth_core.models.paper import cnn_paper, mlp_300_100
from glth_core.models.targets import mlp_500_nobias

MODELS: dict[str, Callable[[Sequence[int], int], nn.Module]] = {
    "cnn_paper": cnn_paper,
    "mlp_300_100": mlp_300_100,
    "lenet_300_100": lenet_300_100,
    "conv2": conv2,
    "conv4": conv4,
    "conv6": conv6,
    "mlp_500_nobias": mlp_500_nobias,
}

FAMILIES: tuple[Family, ...] = (
    cifar_resnet.FAMILY,
    cifar_vgg.FAMILY,
)

__all__ = ["FAMILIES", "MODELS", "Family", "ModelSpecError", "build", "builder", "running_stats"]


def builder(name: str) -> Callable[[Sequence[int], int], nn.Module]:
    """The builder a model name stands for, or a one-line ModelSpecError listing the models."""
    if name in MODELS:
        return MODELS[name]
    for family in FAMILIES:
        if isinstance(name, str) and name.startswith(family.prefix):
            return family.parse(name)
    listing = ", ".join([*MODELS, *(f.pattern for f in FAMILIES)])
    raise ModelSpecError(f"model: {name!r} is not one of {listing}")


def build(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A freshly initialised model (seed torch first for a reproducible init)."""
    return builder(name)(input_shape, num_classes)


def running_stats(model: nn.Module) -> list[str]:
    """The names of ``model``'s buffers (BatchNorm's running statistics): state that trains
    without gradients and belongs to every saved network."""
    return [n for n, _ in model.named_buffers()]
