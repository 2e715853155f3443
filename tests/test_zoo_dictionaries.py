"""Dictionaries on the CIFAR networks (tiny widths): a few IMP rounds of canonical, random fast,
blockdiag and a conv bottleneck on a ResNet and a VGG — masks over the conv/linear scope, BatchNorm
outside it, the synthesized network in the model's shapes — and channels refused where a layer's
outputs feed a residual sum; the rows' per-layer density and FLOPs on these networks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from glth_core import data as datasets
from glth_core import dictionaries, models
from glth_core.dictionaries import DictionarySpecError
from glth_core.imp import Trajectory, TrajectoryConfig
from glth_core.train import TrainConfig

TRAIN = TrainConfig(steps=4, batch_size=64, lr=0.05, momentum=0.9)
SPECS = [
    {"kind": "canonical", "scope": "weights_but_output"},
    {"kind": "random", "method": "fast", "scope": "weights"},
    {"kind": "blockdiag", "per": "unit", "block": "dct", "scope": "weights"},
]
BOTTLENECK = {"cifar_resnet_8_2": "blocks.1.conv1", "cifar_vgg_11_4": "layers.4.conv"}


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def digits32(digits):
    """digits' 8×8 images upsampled to 32×32 (VGG pools five times)."""

    def up(x):
        return F.interpolate(x, size=(32, 32), mode="nearest")

    return dataclasses.replace(
        digits, input_shape=(1, 32, 32), train_x=up(digits.train_x), val_x=up(digits.val_x), test_x=up(digits.test_x)
    )


@pytest.mark.parametrize("model", list(BOTTLENECK))
@pytest.mark.parametrize("spec", SPECS + ["bottleneck"], ids=lambda s: s if isinstance(s, str) else s["kind"])
def test_imp_rounds_on_the_cifar_networks(digits, digits32, model, spec):
    if spec == "bottleneck":
        spec = {"kind": "bottleneck", "layer": BOTTLENECK[model], "basis": "dct"}
    data = digits if model.startswith("cifar_resnet") else digits32
    traj = Trajectory(
        TrajectoryConfig(dataset="digits", model=model, tau=0.3, rounds=3, seed=0, train=TRAIN, dictionary=spec),
        data=data,
    )
    records = traj.run()
    params = dict(traj.model.named_parameters())
    scope = traj.dictionary.scope_names
    assert not any(".bn" in n or n.startswith("bn.") or "shortcut.1" in n for n in scope)  # BatchNorm stays free
    if spec.get("scope") == "weights":
        assert len(scope) == sum(1 for m in traj.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    if spec.get("scope") == "weights_but_output":
        assert "fc.weight" not in scope and all(n.endswith(".weight") for n in scope)
    assert traj.state.mask.numel() == traj.dictionary.size == sum(params[n].numel() for n in scope)
    assert [r["density"] for r in records] == pytest.approx([1.0, 0.7, 0.49], abs=0.04)  # whole groups: ± one
    network = traj.network_params(traj.ticket)
    assert {n: tuple(t.shape) for n, t in network.items() if n in params} == {
        n: tuple(p.shape) for n, p in params.items()
    }
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in records)
    mixed = traj.dictionary.mixes_tensors(traj.dictionary.scope)
    for r in records:  # the rows' per-layer density and FLOPs
        layers = json.loads(r["layer_density"])
        assert list(layers) == [n for n in params if not (mixed and n in scope)]  # model order
        assert all(layers[n] == 1.0 for n in params if n not in scope)  # BatchNorm and the rest: dense
        if not mixed:
            kept = sum(layers[n] * params[n].numel() for n in scope)
            assert kept == pytest.approx(r["density"] * traj.dictionary.size, rel=1e-9)
        if spec["kind"] != "bottleneck":  # single-weight masks export masked-dense: the dense FLOPs
            assert r["flops"] == r["flops_dense"]
        assert 0 < r["flops"] <= r["flops_dense"]
        if model == "cifar_resnet_8_2":
            assert r["flops_dense"] == RESNET_8_2_FLOPS


#: cifar_resnet_8_2 on digits (1×8×8), 2 FLOPs a multiply-accumulate: the stem conv 1→2 and block 0's
#: two convs 2→2 at 8×8; block 1: 2→4 (stride 2) and 4→4 at 4×4, its 1×1 shortcut 2→4; block 2:
#: 4→8 and 8→8 at 2×2, its shortcut 4→8; fc 8→10
RESNET_8_2_FLOPS = 2 * (
    (1 * 2 + 2 * 2 + 2 * 2) * 9 * 64 + (2 * 4 + 4 * 4) * 9 * 16 + 2 * 4 * 16 + (4 * 8 + 8 * 8) * 9 * 4 + 4 * 8 * 4 + 80
)


def output_sides(model: torch.nn.Module, names: list[str], x: torch.Tensor) -> dict[str, int]:
    """H·W of each named module's output on ``x`` (forward hooks on the dense model)."""
    sides = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: sides.__setitem__(n, o[0, 0].numel()))
        for n in names
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return sides


@pytest.mark.parametrize(
    "layer, where", [("conv", "blocks.0"), ("blocks.0.conv2", "blocks.0"), ("blocks.1.shortcut.0", "blocks.1")]
)
def test_channels_out_is_refused_where_it_feeds_a_residual_sum(layer, where):
    net = models.build("cifar_resnet_8_2", (1, 8, 8), 10)
    with pytest.raises(
        DictionarySpecError, match=f"^dictionary.layer: '{layer}' \\(per: out\\) feeds the residual sum in '{where}'"
    ) as e:
        dictionaries.validate({"kind": "channels", "layer": layer, "per": "out"}, net)
    assert "\n" not in str(e.value)


#: a channel layer's BatchNorm and the conv that reads its channels
CHANNEL_NEIGHBOURS = {
    "blocks.1.conv1": ("blocks.1.bn1", "blocks.1.conv2"),
    "layers.4.conv": ("layers.4.bn", "layers.5.conv"),
}


@pytest.mark.parametrize("model, layer", [("cifar_resnet_8_2", "blocks.1.conv1"), ("cifar_vgg_11_4", "layers.4.conv")])
def test_channels_inside_a_block_run(digits, digits32, model, layer):
    data = digits if model.startswith("cifar_resnet") else digits32
    traj = Trajectory(
        TrajectoryConfig(
            dataset="digits",
            model=model,
            tau=0.5,
            rounds=2,
            seed=0,
            train=TRAIN,
            dictionary={"kind": "channels", "layer": layer, "per": "out"},
        ),
        data=data,
    )
    records = traj.run()
    units = dict(traj.model.named_modules())[layer].out_channels
    assert records[-1]["rank"] == units // 2  # half of the filters kept
    # the rows: the layer and its BatchNorm at half density, the rest dense; the FLOPs of the
    # exported network, whose layer lost half its filters and the next conv half its inputs
    norm, consumer = CHANNEL_NEIGHBOURS[layer]
    layers = json.loads(records[-1]["layer_density"])
    halved = {f"{layer}.weight", f"{layer}.bias", f"{norm}.weight", f"{norm}.bias"}
    assert {n for n, v in layers.items() if v != 1.0} == halved & set(layers)
    assert all(layers[n] == 0.5 for n in halved & set(layers))
    conv, nxt = traj.model.get_submodule(layer), traj.model.get_submodule(consumer)
    sides = output_sides(traj.model, [layer, consumer], data.test_x[:1])
    per_filter = conv.weight[0].numel() * sides[layer] + nxt.out_channels * nxt.weight[0, 0].numel() * sides[consumer]
    assert records[-1]["flops_dense"] - records[-1]["flops"] == 2 * (units // 2) * per_filter
    assert records[0]["flops"] == records[0]["flops_dense"]
    dictionaries.validate(
        {"kind": "channels", "layer": "blocks.1.conv2", "per": "in"}, models.build("cifar_resnet_8_2", (1, 8, 8), 10)
    )  # conv2's inputs are internal
