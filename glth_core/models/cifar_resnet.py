"""He et al.'s CIFAR ResNets as open_lth defines them: ``cifar_resnet_N[_W]``.

N = 6D + 2 layers: a 3×3 conv (W filters) + BN, then three segments of D blocks with W, 2W and 4W
filters, global average pooling and one linear output layer ``fc``. A block is conv1 → bn1 → ReLU →
conv2 → bn2, plus the shortcut, then ReLU; convs have no bias. Where a block changes the shape (the
first block of segments 2 and 3: stride 2 and twice the filters) the shortcut is a 1×1 stride-2 conv +
BN (``shortcut.0``, ``shortcut.1``); elsewhere it is the identity. Parameter names are open_lth's:
``conv.weight``, ``bn.weight``, ``blocks.0.conv1.weight``, …, ``blocks.3.shortcut.0.weight``,
``fc.weight``. ResNet-20 (W = 16) on 3×32×32 / 10 classes has 272,474 parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch.nn.functional as F
from torch import nn

from glth_core.models.base import Family, ModelSpecError, check_input, tagged
from glth_core.models.initializers import open_lth_init


class Block(nn.Module):
    """One residual block (see the module's docstring)."""

    def __init__(self, f_in: int, f_out: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, kernel_size=1, stride=2, bias=False), nn.BatchNorm2d(f_out)
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, in_channels: int, plan: Sequence[tuple[int, int]], num_classes: int):
        """``plan``: (filters, blocks) per segment."""
        super().__init__()
        current = plan[0][0]
        self.conv = nn.Conv2d(in_channels, current, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(current)
        blocks = []
        for segment, (filters, count) in enumerate(plan):
            for index in range(count):
                blocks.append(Block(current, filters, downsample=segment > 0 and index == 0))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(current, num_classes)

    def forward(self, x):
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


_NAME = re.compile(r"^cifar_resnet_(\d+)(?:_(\d+))?$")


def parse(name: str):
    """The builder for ``cifar_resnet_N[_W]``, or a one-line ModelSpecError saying why not."""
    match = _NAME.match(name)
    if match is None:
        raise ModelSpecError(
            f"model: {name!r} is not cifar_resnet_N or cifar_resnet_N_W (N = 6D + 2 layers, W the width)"
        )
    depth, width = int(match[1]), int(match[2] or 16)
    if depth < 8 or (depth - 2) % 6:
        raise ModelSpecError(
            f"model: {name!r}: a CIFAR ResNet has N = 6D + 2 layers (D ≥ 1 blocks per segment; "
            f"20, 32, 44, 56 and 110 are the usual ones), got N = {depth}"
        )
    if width < 1:
        raise ModelSpecError(f"model: {name!r}: the width W must be at least 1")
    blocks = (depth - 2) // 6

    def build(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        c, _, _ = check_input(name, input_shape, num_classes, min_side=4)
        net = CifarResNet(c, [(width, blocks), (2 * width, blocks), (4 * width, blocks)], num_classes)
        return tagged(open_lth_init(net), input_shape, num_classes)

    return build


FAMILY = Family("cifar_resnet_", "cifar_resnet_N[_W]", parse)
