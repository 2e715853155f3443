"""The two networks of the GLTH paper's Fig. 2 (CIFAR-10, 3×32×32, 10 classes)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from glth_core.models.base import check_input, dense_head, mlp, tagged


def cnn_paper(input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """Three 3×3 *valid* convs C→16→8→4 with ReLU, flatten, Linear to the classes.

    On 3×32×32 / 10 classes: 448 + 1,160 + 292 + (4·26·26·10 + 10 = 27,050) = 28,950 parameters.
    Each valid conv trims 2 from each side, so inputs need at least 7×7.
    """
    c, h, w = check_input("cnn_paper", input_shape, num_classes, min_side=7)
    convs: list[nn.Module] = []
    for width in (16, 8, 4):
        convs += [nn.Conv2d(c, width, kernel_size=3), nn.ReLU()]
        c, h, w = width, h - 2, w - 2
    return tagged(
        nn.Sequential(*convs, nn.Flatten(), *dense_head(c * h * w, (), num_classes)), input_shape, num_classes
    )


def mlp_300_100(input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """Flatten, C·H·W→300→100→classes with ReLU: 953,010 parameters on 3×32×32 / 10 classes."""
    return mlp("mlp_300_100", input_shape, (300, 100), num_classes)
