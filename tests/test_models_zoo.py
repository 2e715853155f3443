"""The field's CIFAR networks (open_lth's ResNets and VGGs): every parameter name and shape against
tables written from the architectures' definitions, counts, initializers, name parsing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glth_core import models
from glth_core.models import ModelSpecError

CIFAR = (3, 32, 32)


def bn(prefix: str, c: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,))]


def resnet_table(depth: int, width: int, classes: int) -> list[tuple[str, tuple]]:
    """He et al.'s CIFAR ResNet as open_lth names it: stem conv + bn; three segments of (depth − 2)/6
    blocks of W, 2W, 4W filters (conv1, bn1, conv2, bn2; bias-free convs); the first block of
    segments 2 and 3 halves the side and has a 1×1 conv + BN shortcut; then fc."""
    rows = [("conv.weight", (width, 3, 3, 3)), *bn("bn", width)]
    d, c_in, i = (depth - 2) // 6, width, 0
    for segment in range(3):
        c = width * 2**segment
        for _b in range(d):
            p = f"blocks.{i}"
            rows += [
                (f"{p}.conv1.weight", (c, c_in, 3, 3)),
                *bn(f"{p}.bn1", c),
                (f"{p}.conv2.weight", (c, c, 3, 3)),
                *bn(f"{p}.bn2", c),
            ]
            if c != c_in:
                rows += [(f"{p}.shortcut.0.weight", (c, c_in, 1, 1)), *bn(f"{p}.shortcut.1", c)]
            c_in, i = c, i + 1
    return rows + [("fc.weight", (classes, 4 * width)), ("fc.bias", (classes,))]


def vgg16_table(classes: int) -> list[tuple[str, tuple]]:
    """VGG-16 as open_lth builds it: 64 64 M 128 128 M 256×3 M 512×3 M 512×3; conv (with bias) + bn
    per module ``layers.<i>`` (pools take an index too), fc 512 → classes."""
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    rows, c_in = [], 3
    for i, step in enumerate(plan):
        if step == "M":
            continue
        rows += [
            (f"layers.{i}.conv.weight", (step, c_in, 3, 3)),
            (f"layers.{i}.conv.bias", (step,)),
            *bn(f"layers.{i}.bn", step),
        ]
        c_in = step
    return rows + [("fc.weight", (classes, 512)), ("fc.bias", (classes,))]


def table(model: nn.Module) -> list[tuple[str, tuple]]:
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def test_resnet20_names_shapes_and_count():
    model = models.build("cifar_resnet_20", CIFAR, 10)
    assert table(model) == resnet_table(20, 16, 10)
    assert sum(p.numel() for p in model.parameters()) == 272_474  # open_lth's ResNet-20: ≈ 0.27 M
    # the running statistics of every BatchNorm are buffers, not parameters
    assert sum(1 for n, _ in model.named_buffers() if n.endswith("running_mean")) == 19 + 2


def test_vgg16_names_shapes_and_count():
    model = models.build("cifar_vgg_16", CIFAR, 10)
    assert table(model) == vgg16_table(10)
    assert sum(p.numel() for p in model.parameters()) == 14_728_266


@pytest.mark.parametrize(
    "name, depth, width", [("cifar_resnet_20_4", 20, 4), ("cifar_resnet_32_2", 32, 2), ("cifar_resnet_8", 8, 16)]
)
def test_resnet_depths_and_widths(name, depth, width):
    torch.manual_seed(0)
    model = models.build(name, CIFAR, 7)
    assert table(model) == resnet_table(depth, width, 7)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 7)


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
def test_vgg_depths_count_their_convs(depth):
    model = models.build(f"cifar_vgg_{depth}_4", CIFAR, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 3 == depth  # N counts VGG's three FC layers; open_lth keeps one (fc)
    assert [c.out_channels for c in convs][:1] == [4] and convs[-1].out_channels == 32
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_open_lth_initializers():
    torch.manual_seed(0)
    model = models.build("cifar_resnet_20", CIFAR, 10)
    w = model.blocks[4].conv1.weight  # kaiming_normal: std √(2 / fan_in), fan_in = 32·9
    assert abs(w.std().item() - (2 / (32 * 9)) ** 0.5) < 0.1 * (2 / (32 * 9)) ** 0.5
    assert abs(w.mean().item()) < 0.01
    gammas = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert gammas.min() >= 0 and gammas.max() < 1 and gammas.std() > 0.2  # uniform in [0, 1)
    assert all(float(m.bias.detach().abs().max()) == 0 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize(
    "name, needle",
    [
        ("cifar_resnet_21", "6D + 2"),
        ("cifar_resnet_2", "6D + 2"),
        ("cifar_resnet_20_0", "width"),
        ("cifar_resnet_twenty", "cifar_resnet_N"),
        ("cifar_vgg_12", "11, 13, 16, 19"),
        ("resnet50", "cifar_resnet_N[_W], cifar_vgg_N[_W]"),
    ],
)
def test_bad_names_say_why_in_one_line(name, needle):
    with pytest.raises(ModelSpecError) as e:
        models.build(name, CIFAR, 10)
    assert needle in str(e.value) and "\n" not in str(e.value)
