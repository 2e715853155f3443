"""VGG for CIFAR as open_lth defines it: ``cifar_vgg_N`` (N = 11, 13, 16, 19: N − 3 convs, as VGG's
N counted three FC layers where this network has one).

A plan of 3×3 same-padded convs (with bias), each followed by BatchNorm and ReLU (module
``layers.<i>`` with ``conv`` and ``bn``), 2×2 max-pools between stages (``layers.<i>`` with no
parameters), a 2×2 average pool and one linear output layer ``fc`` (512 → classes on 32×32 inputs).
``cifar_vgg_N_W`` scales every width by W/64 (W = 64 is open_lth's network; small W for tests).
VGG-16 on 3×32×32 / 10 classes has 14,728,266 parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn

from glth_core.models.base import Family, ModelSpecError, check_input, tagged
from glth_core.models.initializers import open_lth_init

M = "M"
PLANS = {
    11: (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512),
    13: (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512),
    16: (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512),
    19: (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512),
}


class ConvModule(nn.Module):
    def __init__(self, f_in: int, f_out: int):
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(f_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class CifarVGG(nn.Module):
    def __init__(self, in_channels: int, plan: Sequence, side: tuple[int, int], num_classes: int):
        super().__init__()
        layers, c = [], in_channels
        for step in plan:
            if step == M:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(ConvModule(c, step))
                c = step
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c * side[0] * side[1], num_classes)

    def forward(self, x):
        return self.fc(F.avg_pool2d(self.layers(x), 2).flatten(1))


_NAME = re.compile(r"^cifar_vgg_(\d+)(?:_(\d+))?$")


def parse(name: str):
    """The builder for ``cifar_vgg_N[_W]``, or a one-line ModelSpecError saying why not."""
    match = _NAME.match(name)
    depths = ", ".join(map(str, PLANS))
    if match is None or int(match[1]) not in PLANS:
        raise ModelSpecError(
            f"model: {name!r} is not cifar_vgg_N or cifar_vgg_N_W with N one of {depths} (W the first width)"
        )
    width = int(match[2] or 64)
    if width < 1:
        raise ModelSpecError(f"model: {name!r}: the width W must be at least 1")
    plan = tuple(step if step == M else max(1, step * width // 64) for step in PLANS[int(match[1])])

    def build(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        c, h, w = check_input(name, input_shape, num_classes, min_side=32)
        net = CifarVGG(c, plan, (h // 32, w // 32), num_classes)
        return tagged(open_lth_init(net), input_shape, num_classes)

    return build


FAMILY = Family("cifar_vgg_", "cifar_vgg_N[_W]", parse)
