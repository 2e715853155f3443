"""Architectures by name: ``build(name, input_shape, num_classes)``.

Adding one is a builder ``(input_shape, num_classes) -> nn.Sequential`` and a line in MODELS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from glth_core.models.base import ModelSpecError
from glth_core.models.frankle_carbin import conv2, conv4, conv6, lenet_300_100
from glth_core.models.paper import cnn_paper, mlp_300_100
from glth_core.models.targets import mlp_500_nobias

MODELS: dict[str, Callable[[Sequence[int], int], nn.Sequential]] = {
    "cnn_paper": cnn_paper,
    "mlp_300_100": mlp_300_100,
    "lenet_300_100": lenet_300_100,
    "conv2": conv2,
    "conv4": conv4,
    "conv6": conv6,
    "mlp_500_nobias": mlp_500_nobias,
}

__all__ = ["MODELS", "ModelSpecError", "build"]


def build(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """A freshly initialised model (seed torch first for a reproducible init)."""
    if name not in MODELS:
        raise ModelSpecError(f"model: {name!r} is not one of {', '.join(MODELS)}")
    return MODELS[name](input_shape, num_classes)
