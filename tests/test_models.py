"""Architectures: parameter counts from independent formulas, output shapes, layer names, spec errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glth_core import models
from glth_core.models import ModelSpecError

CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)
MNIST = (1, 28, 28)


def conv(cin: int, cout: int) -> int:
    return cin * cout * 3 * 3 + cout


def linear(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def expected_params(name: str, shape: tuple[int, int, int], classes: int) -> int:
    """Counts written from the architectures' descriptions, not from the modules."""
    c, h, w = shape
    if name == "cnn_paper":  # three valid 3×3 convs each trim 2 per side
        return conv(c, 16) + conv(16, 8) + conv(8, 4) + linear(4 * (h - 6) * (w - 6), classes)
    if name in ("mlp_300_100", "lenet_300_100"):
        return linear(c * h * w, 300) + linear(300, 100) + linear(100, classes)
    if name == "mlp_500_nobias":  # Pensia et al.'s target: no biases
        return c * h * w * 500 + 500 * classes
    widths = {"conv2": [64, 64], "conv4": [64, 64, 128, 128], "conv6": [64, 64, 128, 128, 256, 256]}[name]
    total, cin = 0, c
    for cout in widths:
        total, cin = total + conv(cin, cout), cout
    side = 2 ** (len(widths) // 2)  # a 2×2 max-pool after each pair
    return total + linear(cin * (h // side) * (w // side), 256) + linear(256, 256) + linear(256, classes)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, shape, count",
    [
        ("cnn_paper", CIFAR, 28_950),
        ("mlp_300_100", CIFAR, 953_010),
        ("lenet_300_100", MNIST, 266_610),
        ("conv2", CIFAR, 4_301_642),
        ("conv4", CIFAR, 2_425_930),
        ("conv6", CIFAR, 2_262_602),
    ],
)
def test_documented_counts_match_the_formula(name, shape, count):
    assert expected_params(name, shape, 10) == count
    assert n_params(models.build(name, shape, 10)) == count


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("shape", [CIFAR, DIGITS], ids=["cifar", "digits"])
def test_counts_and_output_shape(name, shape):
    torch.manual_seed(0)
    model = models.build(name, shape, 7)
    assert isinstance(model, nn.Sequential)
    assert model.input_shape == shape and model.num_classes == 7
    assert n_params(model) == expected_params(name, shape, 7)
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", ["mlp_300_100", "lenet_300_100"])
def test_mlp_first_linear_is_layer_1(name):
    layers = dict(models.build(name, DIGITS, 10).named_modules())
    assert isinstance(layers["1"], nn.Linear) and layers["1"].in_features == 64


def test_build_accepts_a_list_shape_and_stores_a_tuple():
    assert models.build("cnn_paper", [1, 7, 7], 3).input_shape == (1, 7, 7)


@pytest.mark.parametrize(
    "name, shape, minimum",
    [
        ("cnn_paper", (1, 6, 9), "7×7"),
        ("conv2", (3, 1, 1), "2×2"),
        ("conv4", (1, 3, 8), "4×4"),
        ("conv6", (3, 4, 4), "8×8"),
    ],
)
def test_too_small_input_names_the_minimum(name, shape, minimum):
    with pytest.raises(ModelSpecError, match=minimum) as err:
        models.build(name, shape, 10)
    assert name in str(err.value)


@pytest.mark.parametrize("name, shape", [("cnn_paper", (1, 7, 7)), ("conv6", (3, 8, 8)), ("conv4", (3, 4, 4))])
def test_smallest_valid_input_runs(name, shape):
    with torch.no_grad():
        assert models.build(name, shape, 10)(torch.zeros(1, *shape)).shape == (1, 10)


def test_unknown_model_lists_the_allowed_names():
    with pytest.raises(ModelSpecError) as err:
        models.build("resnet", CIFAR, 10)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert msg.startswith("model: 'resnet' is not one of cnn_paper, mlp_300_100")
    assert all(name in msg for name in models.MODELS)


@pytest.mark.parametrize("shape, classes", [((3, 32), 10), ((3, 0, 32), 10), (CIFAR, 0)])
def test_malformed_shape_or_classes(shape, classes):
    with pytest.raises(ModelSpecError):
        models.build("mlp_300_100", shape, classes)
