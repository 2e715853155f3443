"""FLOPs of a ticket, counted by FlopCounterMode on the exported network: closed-form counts for
layers and whole models, the dense cost for single-weight masks, the smaller real cost where export
removes structure, and the round rows that carry both."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glth_core import data as datasets
from glth_core import dictionaries, models
from glth_core.export import export
from glth_core.flops import count_flops, probe_input, ticket_flops
from glth_core.imp import Trajectory
from glth_core.ticket import Ticket
from glth_core.train import Parameterization, TrainConfig
from glth_core.trajectory import TrajectoryConfig

TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.05)
MLP_DENSE = 2 * (64 * 300 + 300 * 100 + 100 * 10)  # mlp_300_100 on digits: 100,400


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _mlp_traj(digits, spec, rounds=3) -> Trajectory:
    traj = Trajectory(
        TrajectoryConfig(dataset="digits", dictionary=spec, tau=0.5, rounds=rounds, train=TRAIN), data=digits
    )
    traj.run()
    return traj


def test_layer_counts_are_two_per_multiply_accumulate():
    assert count_flops(nn.Linear(10, 5), torch.zeros(1, 10)) == 2 * 10 * 5
    assert count_flops(nn.Linear(10, 5), torch.zeros(3, 10)) == 3 * 2 * 10 * 5  # per batch: one input is the unit
    conv = nn.Conv2d(3, 4, 3)  # valid: 8×8 → 6×6
    assert count_flops(conv, torch.zeros(1, 3, 8, 8)) == 2 * 4 * 3 * 9 * 36
    assert count_flops(nn.Sequential(nn.ReLU(), nn.Flatten()), torch.zeros(1, 3, 4, 4)) == 0


def test_dense_models_on_their_inputs():
    mlp = models.build("mlp_300_100", (1, 8, 8), 10)
    assert count_flops(mlp, probe_input(mlp, (1, 8, 8))) == MLP_DENSE
    cnn = models.build("cnn_paper", (3, 32, 32), 10)  # 3×3 valid convs 3→16→8→4 on 32×32, then 4·26·26 → 10
    want = 2 * (16 * 3 * 9 * 30 * 30 + 8 * 16 * 9 * 28 * 28 + 4 * 8 * 9 * 26 * 26 + 2704 * 10)
    assert count_flops(cnn, probe_input(cnn, (3, 32, 32))) == want


def test_single_weight_masks_cost_the_dense_network(digits):
    for spec in ({"kind": "canonical"}, {"kind": "random", "method": "fast"}):
        traj = _mlp_traj(digits, spec)
        assert traj.state.records[-1]["density"] == pytest.approx(0.25, rel=1e-3)
        for r in traj.state.records:
            assert (r["flops"], r["flops_dense"]) == (MLP_DENSE, MLP_DENSE)


def test_an_input_bottleneck_costs_its_kept_columns(digits):
    """Identity (input-select: no multiply) and DCT (factorized: 64 → m, then m → 300) at rank m."""
    ident = _mlp_traj(digits, {"kind": "bottleneck", "layer": "1", "basis": "identity"})
    for r in ident.state.records:
        assert r["flops"] == 2 * (r["rank"] * 300 + 300 * 100 + 100 * 10) and r["flops_dense"] == MLP_DENSE
    dct = _mlp_traj(digits, {"kind": "bottleneck", "layer": "1", "basis": "dct"}, rounds=4)
    last = dct.state.records[-1]
    m = last["rank"]
    assert m == 8 and export(dct.model, dct.dictionary, dct.ticket).form == "factorized"  # 8·(64 + 300) < 64·300
    assert last["flops"] == 2 * (64 * m + m * 300 + 300 * 100 + 100 * 10)


def test_channels_out_on_a_hidden_layer_shrinks_it_and_the_next(digits):
    traj = _mlp_traj(digits, {"kind": "channels", "layer": "1", "per": "out"})
    k = traj.state.records[-1]["rank"]
    assert k == 75
    assert traj.state.records[-1]["flops"] == 2 * (64 * k + k * 100 + 100 * 10)


def _hand_ticket(spec: dict, keep_groups: list[int], shape=(1, 8, 8), model="cnn_paper"):
    torch.manual_seed(0)
    net = models.build(model, shape, 10)
    d = dictionaries.build(spec, net)
    mask = torch.isin(d.groups, torch.tensor(keep_groups))
    w = Parameterization(net, d).weights_of(net)
    return net, d, Ticket.of(1, mask, w)


def test_conv_channels_and_dct_bottleneck_against_closed_forms():
    # cnn_paper on 1×8×8: valid 3×3 convs 1→16→8→4 give 6×6, 4×4, 2×2 maps, then 16 → 10
    dense = 2 * (16 * 1 * 9 * 36 + 8 * 16 * 9 * 16 + 4 * 8 * 9 * 4 + 16 * 10)
    net, d, t = _hand_ticket({"kind": "channels", "layer": "0", "per": "out"}, [0, 3, 5, 9, 10])
    k = 5
    assert ticket_flops(net, d, t, (1, 8, 8)) == {
        "flops": 2 * (k * 1 * 9 * 36 + 8 * k * 9 * 16 + 4 * 8 * 9 * 4 + 16 * 10),
        "flops_dense": dense,
    }
    net, d, t = _hand_ticket({"kind": "bottleneck", "layer": "2", "basis": "dct"}, [0, 1, 2, 3])
    m = 4  # 4·(144 + 8) < 8·144: a 3×3 conv 16 → m on 4×4 outputs, then a 1×1 conv m → 8
    assert export(net, d, t).form == "factorized"
    assert ticket_flops(net, d, t, (1, 8, 8))["flops"] == dense - 2 * 8 * 16 * 9 * 16 + 2 * (
        m * 16 * 9 * 16 + 8 * m * 16
    )


def test_the_count_follows_the_model_device_and_ignores_values():
    net = models.build("mlp_300_100", (1, 8, 8), 10)
    x = probe_input(net, (1, 8, 8))
    assert x.shape == (1, 1, 8, 8) and x.device == next(net.parameters()).device and float(x.abs().sum()) == 0
    assert count_flops(net, torch.randn(1, 1, 8, 8)) == count_flops(net, x)
