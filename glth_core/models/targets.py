"""Bias-free ReLU MLPs: the target networks of the constructive strong-ticket results."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from glth_core.models.base import check_input, tagged


def mlp_500_nobias(input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """Pensia et al.'s MNIST target: in → 500 → classes, ReLU, no biases (397,000 weights on 28×28)."""
    c, h, w = check_input("mlp_500_nobias", input_shape, num_classes)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, 500, bias=False), nn.ReLU(), nn.Linear(500, num_classes, bias=False)
    )
    return tagged(net, input_shape, num_classes)
