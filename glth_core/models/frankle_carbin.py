"""The Lottery Ticket paper's networks (Frankle & Carbin 2019, Table 1).

Parameter counts (weights + biases) on their native inputs, 10 classes:

- lenet_300_100 on 1×28×28: 266,610.
- conv2 on 3×32×32: 4,301,642.
- conv4 on 3×32×32: 2,425,930.
- conv6 on 3×32×32: 2,262,602. (Table 1 prints 1.7M for Conv-6; its own layer list — 4·4·256 = 4,096
  features into FC 256 — gives 2.26M, and its conv-only count, 1.1M, agrees with ours.)

Initialisation is PyTorch's default; the caller seeds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from glth_core.models.base import POOL, conv_stack, mlp

_CONV_PLANS = {
    "conv2": (64, 64, POOL),
    "conv4": (64, 64, POOL, 128, 128, POOL),
    "conv6": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL),
}
_FC = (256, 256)


def lenet_300_100(input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """Flatten, 784→300→100→10 with ReLU on MNIST (266,610 parameters)."""
    return mlp("lenet_300_100", input_shape, (300, 100), num_classes)


def _conv(name: str):
    def build(input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
        return conv_stack(name, input_shape, _CONV_PLANS[name], _FC, num_classes)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"Frankle & Carbin's {name}: 3×3 convs {_CONV_PLANS[name]}, then FC {_FC} and the classes."
    return build


conv2, conv4, conv6 = (_conv(n) for n in ("conv2", "conv4", "conv6"))
