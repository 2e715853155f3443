"""Export of the structured kinds: conv bottlenecks, channel groups and composites become smaller
plain-PyTorch networks that compute what the masked network computes (to 1e-5).

Tickets here are the models' own initial weights under masks from real sparsify steps (or masks
that drop chosen groups), so every case is exact and fast; tests/test_export.py covers trained
tickets and the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glth_core import models
from glth_core.dictionaries import build
from glth_core.export import IndexSelect, count_parameters, export, masked_model
from glth_core.sparsify import sparsify_dictionary
from glth_core.ticket import Ticket
from glth_core.train import Parameterization

torch.set_num_threads(1)
TOL = 1e-5


def net(name: str, shape=(3, 8, 8)) -> nn.Sequential:
    torch.manual_seed(0)
    return models.build(name, shape, 10)


def ticket(model: nn.Module, spec: dict, steps: int = 0, tau: float = 0.5, drop: list[int] | None = None):
    """(dictionary, param, ticket): the model's weights, pruned ``steps`` times at τ (by energy), or
    with the groups ``drop`` removed."""
    d = build(spec, model)
    param = Parameterization(model, d)
    w = param.weights_of(model)
    mask = torch.ones(d.size, dtype=torch.bool)
    for _ in range(steps):
        mask = sparsify_dictionary(w.coeffs, mask, tau, d)
    if drop is not None:
        mask &= ~torch.isin(d.groups, torch.tensor(drop))
    return d, param, Ticket.of(steps, mask, w)


def check(model, d, param, t, x=None, **kw):
    """Export, and assert it agrees with the masked network and the training-time forward."""
    x = torch.randn(16, *model.input_shape, generator=torch.Generator().manual_seed(5)) if x is None else x
    ex = export(model, d, t, **kw)
    masked = masked_model(model, d, t)
    with torch.no_grad():
        got, want = ex.module.eval()(x), masked(x)
        ref = param.forward(t.weights(), t.mask, x)
    assert (got - want).abs().max().item() <= TOL and (got - ref).abs().max().item() <= TOL
    assert want.abs().max().item() > 1e-3  # a network that computes something
    return ex, masked


def test_conv_bottleneck_dct_factorizes_into_a_kxk_and_a_1x1_conv():
    m = net("conv2")
    d, param, t = ticket(m, {"kind": "bottleneck", "layer": "2", "basis": "dct"}, steps=4)  # 576 → 36 columns
    ex, masked = check(m, d, param, t)
    assert (ex.form, ex.layer, ex.kept_groups, ex.d_in, ex.d_out) == ("factorized", "2", 36, 576, 64)
    first, second = ex.module[2]
    assert (
        isinstance(first, nn.Conv2d)
        and first.weight.shape == (36, 64, 3, 3)
        and first.padding == (1, 1)
        and first.bias is None
    )
    assert isinstance(second, nn.Conv2d) and second.weight.shape == (64, 36, 1, 1) and second.bias is not None
    assert count_parameters(masked) - count_parameters(ex.module) == 576 * 64 - 36 * (576 + 64)
    dense = export(m, *ticket(m, {"kind": "bottleneck", "layer": "2", "basis": "dct"}, steps=3)[::2])
    assert dense.form == "masked-dense" and "not smaller" in dense.describe()["note"]  # 72·640 > 576·64


@pytest.mark.parametrize("basis", ["random", "pca"])
def test_conv_bottleneck_random_and_pca_factorize_when_forced(basis):
    m = net("cnn_paper", (3, 12, 12))
    spec = {"kind": "bottleneck", "layer": "0", "basis": basis, "seed": 1}
    d = build(spec, m, train_x=torch.randn(20, 3, 12, 12))
    param = Parameterization(m, d)
    w = param.weights_of(m)
    mask = sparsify_dictionary(w.coeffs, torch.ones(d.size, dtype=torch.bool), 0.5, d)
    t = Ticket.of(1, mask, w)
    ex, _ = check(m, d, param, t, factorize="always")
    assert ex.form == "factorized" and ex.module[0][0].weight.shape == (13, 3, 3, 3)  # 27 → 13 kept columns


def test_conv_identity_bottleneck_drops_channels_it_pruned_entirely():
    m = net("conv2")
    keep_some = [c * 9 + k for c in range(64) for k in range(9) if c % 4 != 0 and k != 4]
    d, param, t = ticket(m, {"kind": "bottleneck", "layer": "2", "basis": "identity"}, drop=None)
    mask = t.mask & ~torch.isin(d.groups, torch.tensor([g for g in range(576) if g not in keep_some]))
    t = Ticket.of(1, mask, param.weights_of(m))
    ex, _ = check(m, d, param, t)
    assert ex.form == "fold-previous" and ex.extra["kept_channels"] == 48 and ex.kept_groups == 48 * 8
    assert ex.module[0].weight.shape == (48, 3, 3, 3) and ex.module[2].weight.shape == (64, 48, 3, 3)
    ex_sel, _ = check(m, d, param, t, fold_previous=False)
    assert ex_sel.form == "input-select" and isinstance(ex_sel.module[2][0], IndexSelect)


def test_channels_in_folds_into_the_previous_conv_or_selects_image_channels():
    m = net("conv2")
    d, param, t = ticket(m, {"kind": "channels", "layer": "2", "per": "in"}, steps=2)  # 64 → 16 channels
    ex, masked = check(m, d, param, t)
    assert (ex.form, ex.kept_groups) == ("fold-previous", 16)
    assert ex.module[0].weight.shape == (16, 3, 3, 3) and ex.module[0].bias.shape == (16,)
    assert ex.module[2].weight.shape == (64, 16, 3, 3)
    assert count_parameters(masked) - count_parameters(ex.module) == 48 * (27 + 1) + 48 * 9 * 64
    d, param, t = ticket(m, {"kind": "channels", "layer": "0", "per": "in"}, drop=[1])
    ex, _ = check(m, d, param, t)
    assert (
        ex.form == "input-select"
        and ex.module[0][0].index.tolist() == [0, 2]
        and ex.module[0][1].weight.shape == (64, 2, 3, 3)
    )


def test_channels_out_drops_filters_and_the_next_layers_inputs():
    m = net("conv2")
    d, param, t = ticket(m, {"kind": "channels", "layer": "0", "per": "out"}, steps=1)  # 64 → 32 filters
    ex, _ = check(m, d, param, t)
    assert (ex.form, ex.extra["next"]) == ("fold-next", "2")
    assert ex.module[0].weight.shape == (32, 3, 3, 3) and ex.module[2].weight.shape == (64, 32, 3, 3)
    # past ReLU, max-pool and Flatten: the Linear loses the 4×4 columns of each removed channel
    d, param, t = ticket(m, {"kind": "channels", "layer": "2", "per": "out"}, steps=3)  # 64 → 8
    ex, _ = check(m, d, param, t)
    assert (ex.form, ex.extra["next"]) == ("fold-next", "6")
    assert ex.module[2].weight.shape == (8, 64, 3, 3) and ex.module[6].weight.shape == (256, 8 * 16)


def test_channels_on_linear_layers_and_the_output_layer():
    m = net("mlp_300_100", (1, 8, 8))
    d, param, t = ticket(m, {"kind": "channels", "layer": "1", "per": "out"}, steps=2)
    ex, _ = check(m, d, param, t)
    assert ex.form == "fold-next" and ex.module[1].weight.shape == (75, 64) and ex.module[3].weight.shape == (100, 75)
    d, param, t = ticket(m, {"kind": "channels", "layer": "3", "per": "in"}, steps=1)
    ex, _ = check(m, d, param, t)
    assert (
        ex.form == "fold-previous"
        and ex.module[1].weight.shape == (150, 64)
        and ex.module[3].weight.shape == (100, 150)
    )
    d, param, t = ticket(m, {"kind": "channels", "layer": "5", "per": "out"}, steps=1)
    ex, _ = check(m, d, param, t)  # the logits cannot lose units: the removed classes output 0
    assert ex.form == "masked-dense" and "no layer after '5'" in ex.describe()["note"]


def test_composite_exports_each_part_as_its_kind():
    m = net("conv2")
    spec = {
        "kind": "composite",
        "parts": [
            {"kind": "channels", "layer": "0", "per": "out", "tau": 0.5},  # fold-next into "2"
            {"kind": "channels", "layer": "6", "per": "in", "tau": 0.5},  # after Flatten: input-select
            {"kind": "bottleneck", "layer": "8", "basis": "random", "seed": 3, "tau": 0.5},  # factorized
            {"kind": "canonical"},
        ],
    }  # masked-dense
    d, param, t = ticket(m, spec, steps=4)
    ex, masked = check(m, d, param, t)
    forms = [(p["kind"], p["form"]) for p in ex.parts]
    assert ex.form == "composite" and forms == [
        ("channels", "fold-next"),
        ("channels", "input-select"),
        ("bottleneck", "factorized"),
        ("canonical", "masked-dense"),
    ]
    desc = ex.describe()
    assert desc["parts"][3]["note"].startswith("a canonical dictionary has no structure to remove")
    assert ex.module[0].weight.shape[0] == ex.module[2].weight.shape[1] == desc["parts"][0]["kept_groups"] < 64
    assert isinstance(ex.module[6][0], IndexSelect) and ex.module[8][0].weight.shape == (16, 256)
    assert count_parameters(ex.module) < count_parameters(masked)


def test_composite_parts_that_would_change_one_module_leave_the_later_one_dense():
    m = net("conv2")
    spec = {
        "kind": "composite",
        "parts": [
            {"kind": "bottleneck", "layer": "2", "basis": "dct"},
            {"kind": "channels", "layer": "0", "per": "out", "tau": 0.5},
        ],
    }
    d, param, t = ticket(m, spec, steps=5)
    ex, _ = check(m, d, param, t)
    assert [(p["form"], p["kept_groups"]) for p in ex.parts] == [("factorized", 18), ("masked-dense", 2)]
    assert "would replace module '2', which part 0 replaces already" in ex.parts[1]["note"]
    assert ex.module[0].weight.shape == (64, 3, 3, 3)  # left dense: its pruned filters are zeros
    assert int((ex.module[0].weight.abs().sum((1, 2, 3)) > 0).sum()) == 2


def test_a_part_pruned_entirely_by_the_global_ordering_stays_dense():
    """One global ordering can take every column of a part; its layer is then zero plus bias."""
    m = net("conv2")
    spec = {
        "kind": "composite",
        "parts": [
            {"kind": "bottleneck", "layer": "2", "basis": "dct"},
            {"kind": "channels", "layer": "0", "per": "out"},
        ],
    }
    d, param, t = ticket(m, spec, steps=5)
    assert not t.mask[: d.sizes[0]].any()  # the 64 filters of layer 0 outweigh every column of U
    ex, _ = check(m, d, param, t)
    assert [p["form"] for p in ex.parts] == ["masked-dense", "fold-next"]
    assert "every column of U pruned" in ex.parts[0]["note"]


def test_channels_tickets_of_a_resnet_block_export_exactly():
    """Inside a ResNet block: conv2's input channels go with conv1's filters and bn1's channels
    (fold-previous: conv1's output feeds conv2 alone), or as an input-select (a smaller conv over the
    kept inputs) when told not to fold; conv1's filters go with bn1's channels and conv2's inputs
    (fold-next; the dictionary prunes bn1's weight and bias with them: tests/test_export_zoo.py).
    Outputs equal in eval mode."""
    m = net("cifar_resnet_8_2", (3, 8, 8)).eval()
    d, param, t = ticket(m, {"kind": "channels", "layer": "blocks.0.conv2", "per": "in"}, steps=1)
    half = m.get_submodule("blocks.0.conv2").in_channels // 2
    ex, _ = check(m, d, param, t, fold_previous=False)
    assert ex.form == "input-select"
    assert ex.module.get_submodule("blocks.0.conv2")[1].weight.shape[1] == half
    ex, _ = check(m, d, param, t)
    assert ex.form == "fold-previous" and ex.extra["norms"] == ["blocks.0.bn1"]
    block = ex.module.get_submodule("blocks.0")
    assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels == half
    d, param, t = ticket(m, {"kind": "channels", "layer": "blocks.0.conv1", "per": "out"}, steps=1)
    ex, _ = check(m, d, param, t)
    assert ex.form == "fold-next" and ex.extra["next"] == "blocks.0.conv2" and ex.extra["norms"] == ["blocks.0.bn1"]
