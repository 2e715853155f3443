"""Export of channel tickets on the CIFAR networks (tiny widths): a ResNet block's ``conv1`` and a
VGG conv lose their pruned filters, the BatchNorm after them those channels, and the next conv (or
the output layer, past the pooling and the flatten) those inputs — outputs equal to the masked
network's to 1e-5 in eval mode, and exactly the pruned channels' parameters fewer.

The networks carry non-trivial BatchNorm statistics and shifts (drawn here), so a pruned channel
that the BatchNorm turned into a constant (its shift β_k, its running mean) would show: the
``channels`` dictionary prunes the BatchNorm's γ_k and β_k with filter k (docs/dictionaries.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from in_process import glth_here
from torch import nn

from glth_core import models
from glth_core.dictionaries import build
from glth_core.export import count_parameters, export, masked_model
from glth_core.ticket import Ticket
from glth_core.train import Parameterization

torch.set_num_threads(1)
TOL = 1e-5


def trained_looking(name: str, shape) -> nn.Module:
    """``name`` with every BatchNorm's shift, scale and running statistics drawn away from their
    initial values (as training leaves them), in eval mode."""
    torch.manual_seed(0)
    net = models.build(name, shape, 10)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g))
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return net.eval()


def channel_ticket(net: nn.Module, layer: str, drop: list[int]):
    """(dictionary, param, ticket): ``channels per: out`` on ``layer`` with the filters ``drop`` pruned."""
    d = build({"kind": "channels", "layer": layer, "per": "out"}, net)
    param = Parameterization(net, d)
    w = param.weights_of(net)
    mask = ~torch.isin(d.groups, torch.tensor(drop))
    return d, param, Ticket.of(1, mask, w)


def agree(net, d, param, t, x):
    ex = export(net, d, t)
    masked = masked_model(net, d, t)
    with torch.no_grad():
        got, want = ex.module.eval()(x), masked(x)
        ref = param.forward(t.weights(), t.mask, x)  # the training-time forward, in eval mode
    assert (got - want).abs().max().item() <= TOL and (got - ref).abs().max().item() <= TOL
    assert want.abs().max().item() > 1e-2
    return ex, masked


def removed_parameters(net: nn.Module, layer: str, norm: str, consumer: str, k: int, per_channel: int = 1) -> int:
    """What dropping k filters of ``layer`` removes, from the shapes: k filters (and biases), k
    channels of ``norm`` (γ and β), k·per_channel input columns of ``consumer``."""
    conv, bn, nxt = (net.get_submodule(n) for n in (layer, norm, consumer))
    own = conv.weight[0].numel() + (1 if conv.bias is not None else 0)
    columns = nxt.weight.shape[0] * (nxt.weight[0, 0].numel() if isinstance(nxt, nn.Conv2d) else per_channel)
    return k * (own + 2 + columns) if bn.affine else k * (own + columns)


@pytest.mark.parametrize("block", ["blocks.0", "blocks.3"])  # a block without and one with a projection shortcut
def test_a_resnet_blocks_conv1_filters_go_with_bn1s_channels_and_conv2s_inputs(block):
    net = trained_looking("cifar_resnet_20_4", (3, 8, 8))
    drop = [0, 2, 3] if block == "blocks.0" else [1, 4, 5, 6]
    d, param, t = channel_ticket(net, f"{block}.conv1", drop)
    assert d.scope_names == (f"{block}.conv1.weight", f"{block}.bn1.weight", f"{block}.bn1.bias")
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    ex, masked = agree(net, d, param, t, x)
    k = len(drop)
    c = net.get_submodule(f"{block}.conv1").out_channels
    assert (ex.form, ex.kept_groups, ex.extra["next"], ex.extra["norms"]) == (
        "fold-next",
        c - k,
        f"{block}.conv2",
        [f"{block}.bn1"],
    )
    small = ex.module.get_submodule(block)
    assert small.conv1.out_channels == small.bn1.num_features == small.conv2.in_channels == c - k
    assert small.conv1.stride == net.get_submodule(f"{block}.conv1").stride and small.conv2.padding == (1, 1)
    bn1 = masked.get_submodule(f"{block}.bn1")
    assert not bn1.weight[drop].any() and not bn1.bias[drop].any()  # the channel is gone after bn1 too
    assert bn1.bias[[i for i in range(c) if i not in drop]].abs().min() > 0
    removed = removed_parameters(net, f"{block}.conv1", f"{block}.bn1", f"{block}.conv2", k)
    assert count_parameters(masked) - count_parameters(ex.module) == removed
    kept = torch.tensor([i for i in range(c) if i not in drop])
    assert torch.equal(small.bn1.running_mean, bn1.running_mean[kept])


@pytest.mark.parametrize("layer, consumer", [("layers.2.conv", "layers.4.conv"), ("layers.11.conv", "fc")])
def test_a_vgg_convs_filters_go_with_its_bns_channels_and_the_next_layers_inputs(layer, consumer):
    """layers.2 → max-pool → layers.4; the last conv → average pool → flatten → fc."""
    net = trained_looking("cifar_vgg_11_8", (3, 32, 32))
    drop = [0, 1, 5]
    d, param, t = channel_ticket(net, layer, drop)
    norm = layer.replace(".conv", ".bn")
    assert d.scope_names == (f"{layer}.weight", f"{layer}.bias", f"{norm}.weight", f"{norm}.bias")
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ex, masked = agree(net, d, param, t, x)
    assert (ex.form, ex.extra["next"], ex.extra["norms"]) == ("fold-next", consumer, [norm])
    c = net.get_submodule(layer).out_channels
    assert ex.module.get_submodule(norm).num_features == c - len(drop)
    removed = removed_parameters(net, layer, norm, consumer, len(drop))
    assert count_parameters(masked) - count_parameters(ex.module) == removed


def test_the_groups_of_a_channel_include_its_batchnorm_affine():
    """Group k is filter k's weights, then γ_k and β_k: pruning by group energy counts them."""
    net = trained_looking("cifar_resnet_20_4", (3, 8, 8))
    d = build({"kind": "channels", "layer": "blocks.1.conv1", "per": "out"}, net)
    c, per_filter = 4, 4 * 9
    assert d.size == c * per_filter + 2 * c and d.num_groups == c
    assert torch.equal(d.groups[c * per_filter :], torch.arange(c).repeat(2))


# -- `glth export --bench` on a ResNet sweep ---------------------------------------------------------
RESNET_SWEEP = """\
name: resnet-export
dataset: digits
model: cifar_resnet_8_2
dictionary:
  - {kind: channels, layer: blocks.1.conv1, per: out}
tau: 0.5
seeds: [0]
rounds: 2
train: {steps: 2, batch_size: 32, lr: 0.05}
resources: {cpu: 1}
"""
NUMBER = r"([\d,]+(?:\.\d+)?)"


@pytest.mark.slow
def test_glth_export_bench_times_the_exported_resnet_against_the_dense_one(tmp_path):
    """A real sweep (one trial, two rounds of a few steps), then `glth export --bench` of its last
    round: the channel ticket exports as fold-next and the bench prints the dense and the exported
    network's parameters, latency and FLOPs (no timing is asserted)."""
    import re

    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet

    glth = str(Path(sys.executable).with_name("glth"))
    (tmp_path / "spec.yaml").write_text(RESNET_SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = subprocess.run(
        [glth, "run", "spec.yaml", "--out", "out", "--tracking-uri", uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (sweep_dir,) = [d for d in (tmp_path / "out").iterdir() if d.is_dir()]
    (trial,) = parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep_dir.name)).trial_id.unique()
    out = tmp_path / "ticket.pt"
    argv = ["export", sweep_dir.name, "--trial", trial, "-o", str(out), "--out", "out", "--tracking-uri", uri]
    argv += ["--bench", "--repeats", "3", "--images", "50"]
    proc = glth_here(*argv, cwd=tmp_path)  # export starts no Ray: in this process
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["form"], meta["round"], meta["next"], meta["norms"]) == (
        "fold-next",
        1,
        "blocks.1.conv2",
        ["blocks.1.bn1"],
    )
    dense = models.build("cifar_resnet_8_2", (1, 8, 8), 10)
    removed = removed_parameters(dense, "blocks.1.conv1", "blocks.1.bn1", "blocks.1.conv2", 2)  # 2 of 4 filters
    assert meta["parameters_dense"] == count_parameters(dense)
    assert meta["parameters_dense"] - meta["parameters"] == removed
    assert meta["max_abs_diff_vs_masked"] <= TOL and meta["flops"] < meta["flops_dense"]
    rows = {}
    for line in proc.stdout.splitlines():
        match = re.match(rf"^\s+(dense|exported)\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", line)
        if match:
            rows[match[1]] = [float(v.replace(",", "")) for v in match.groups()[1:]]
    bench = meta["bench"]
    assert rows["dense"] == [
        meta["parameters_dense"],
        pytest.approx(bench["latency_ms_dense"], abs=1e-3),
        meta["flops_dense"],
    ]
    assert rows["exported"] == [meta["parameters"], pytest.approx(bench["latency_ms"], abs=1e-3), meta["flops"]]
    assert bench["latency_ms_dense"] > 0 and bench["latency_ms"] > 0 and bench["images"] == 50
    module = torch.load(out, weights_only=False)
    assert module.get_submodule("blocks.1.bn1").num_features == module.get_submodule("blocks.1.conv2").in_channels == 2


def test_a_resnet_blocks_conv2_inputs_go_with_conv1s_filters_and_bn1s_channels():
    """``per: in`` on conv2: conv1's output feeds conv2 alone, so the pruned inputs take conv1's
    filters and bn1's channels with them (fold-previous), whatever bn1 made of them."""
    net = trained_looking("cifar_resnet_20_4", (3, 8, 8))
    d = build({"kind": "channels", "layer": "blocks.4.conv2", "per": "in"}, net)
    param = Parameterization(net, d)
    drop = [0, 3, 7]
    t = Ticket.of(1, ~torch.isin(d.groups, torch.tensor(drop)), param.weights_of(net))
    ex, masked = agree(net, d, param, t, torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(5)))
    assert (ex.form, ex.extra["norms"]) == ("fold-previous", ["blocks.4.bn1"])
    assert count_parameters(masked) - count_parameters(ex.module) == removed_parameters(
        net, "blocks.4.conv1", "blocks.4.bn1", "blocks.4.conv2", len(drop)
    )
    assert ex.module.get_submodule("blocks.4.conv1").out_channels == 8 - len(drop)
