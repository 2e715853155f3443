"""What every architecture shares: the spec error, input checks, name families, and the two
builders (MLP, VGG-style stack).

A model is any ``nn.Module``; parameters and layers are named by their module paths, the names
dictionary scopes and layers refer to (``blocks.0.conv1.weight`` in a ResNet). The Sequential
builders here name them by index (``"1"`` is the first Linear of an MLP).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn


class ModelSpecError(ValueError):
    """A model that cannot be built; the one-line message names the field and what is allowed."""


@dataclass(frozen=True)
class Family:
    """Models named by a pattern (``cifar_resnet_N[_W]``): every name starting with ``prefix`` is
    this family's; ``parse(name)`` returns its builder ``(input_shape, num_classes) -> nn.Module`` or
    raises a one-line ModelSpecError saying why the name is not one."""

    prefix: str
    pattern: str  # how the names are written, for listings
    parse: Callable[[str], Callable[[Sequence[int], int], nn.Module]]


def check_input(name: str, input_shape: Sequence[int], num_classes: int, min_side: int = 1) -> tuple[int, int, int]:
    """``input_shape`` as (C, H, W) ints, or a ModelSpecError naming the minimum the model needs."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ModelSpecError(f"model {name}: input_shape {shape} is not (channels, height, width) of positive ints")
    if int(num_classes) < 1:
        raise ModelSpecError(f"model {name}: num_classes {num_classes} must be at least 1")
    _, h, w = shape
    if min(h, w) < min_side:
        raise ModelSpecError(f"model {name}: input {h}×{w} is too small (needs at least {min_side}×{min_side})")
    return shape


def tagged(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Record what the model was built for, so callers need not carry it separately."""
    model.input_shape = tuple(int(s) for s in input_shape)
    model.num_classes = int(num_classes)
    return model


def dense_head(in_features: int, hidden: Sequence[int], num_classes: int) -> list[nn.Module]:
    """Linear → ReLU for each hidden width, then a Linear to the classes."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    return layers + [nn.Linear(in_features, num_classes)]


def mlp(name: str, input_shape: Sequence[int], hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """Flatten, then a ReLU MLP; the first Linear is layer "1"."""
    c, h, w = check_input(name, input_shape, num_classes)
    return tagged(nn.Sequential(nn.Flatten(), *dense_head(c * h * w, hidden, num_classes)), input_shape, num_classes)


POOL = "pool"


def conv_stack(
    name: str, input_shape: Sequence[int], plan: Sequence[int | str], hidden: Sequence[int], num_classes: int
) -> nn.Sequential:
    """VGG-style: 3×3 same-padded convs (ints are widths) with ReLU, 2×2 max-pools at ``POOL``, then an MLP head.

    Pools floor the side, so k pools need inputs of at least 2**k on each side.
    """
    pools = sum(1 for p in plan if p == POOL)
    c, h, w = check_input(name, input_shape, num_classes, min_side=2**pools)
    layers: list[nn.Module] = []
    for step in plan:
        if step == POOL:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        else:
            layers += [nn.Conv2d(c, int(step), kernel_size=3, padding=1), nn.ReLU()]
            c = int(step)
    layers += [nn.Flatten(), *dense_head(c * h * w, hidden, num_classes)]
    return tagged(nn.Sequential(*layers), input_shape, num_classes)
