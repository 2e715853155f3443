"""BatchNorm networks (a tiny open_lth ResNet on digits): BN parameters train densely outside the
default scopes; running statistics belong to every rewind point, ticket and resume state (bit-identical
on CPU); evaluation in eval mode; LMC recomputes each point's statistics; batched seeds refuse them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from glth_core import data as datasets
from glth_core.batched import BatchedTrajectory
from glth_core.experiment import TIMING_COLUMNS
from glth_core.export import export
from glth_core.imp import Ticket, Trajectory, TrajectoryConfig, TrajectoryState
from glth_core.lmc import instability, recompute_statistics
from glth_core.streams import round_generator
from glth_core.train import TrainConfig, evaluate

MODEL = "cifar_resnet_8_2"  # 1 block per segment, widths 2, 4, 8: runs on digits' 8×8 images
TRAIN = TrainConfig(steps=12, batch_size=64, lr=0.05, momentum=0.9)
CONVS = [
    "conv.weight",
    "blocks.0.conv1.weight",
    "blocks.0.conv2.weight",
    "blocks.1.conv1.weight",
    "blocks.1.conv2.weight",
    "blocks.1.shortcut.0.weight",
    "blocks.2.conv1.weight",
    "blocks.2.conv2.weight",
    "blocks.2.shortcut.0.weight",
]


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _traj(digits, state=None, **kw) -> Trajectory:
    base = dict(dataset="digits", model=MODEL, tau=0.3, rounds=2, seed=0, train=TRAIN)
    return Trajectory(TrajectoryConfig(**{**base, **kw}), data=digits, state=state)


def _same(a, b) -> bool:
    return (
        torch.equal(a.coeffs, b.coeffs)
        and a.free.keys() == b.free.keys()
        and all(torch.equal(a.free[k], b.free[k]) for k in a.free)
    )


@pytest.mark.parametrize(
    "scope, expected",
    [
        (None, CONVS + ["fc.weight", "fc.bias"]),  # every parameter but BatchNorm's
        ("weights", CONVS + ["fc.weight"]),  # open_lth's prunable set: conv and linear weights
        ("weights_but_output", CONVS),  # less the output layer
    ],
)
def test_scopes_leave_batchnorm_outside(digits, scope, expected):
    spec = {"kind": "canonical"} if scope is None else {"kind": "canonical", "scope": scope}
    traj = _traj(digits, dictionary=spec)
    assert list(traj.dictionary.scope_names) == expected
    bn = [n for n in traj.param.free_names if ".bn" in n or n.startswith("bn.") or "shortcut.1" in n]
    assert len(bn) == 2 * 9 and all(n in traj.state.init.free for n in bn)  # 9 BatchNorms' γ and β, free


def test_training_moves_the_statistics_and_evaluation_reads_them_in_eval_mode(digits):
    traj = _traj(digits, rounds=1)
    record = traj.run_round()
    init, last = traj.state.init.free, traj.state.last.free
    assert float(init["blocks.1.bn1.running_mean"].abs().max()) == 0 and int(init["bn.num_batches_tracked"]) == 0
    assert int(last["bn.num_batches_tracked"]) == 12  # one update per training step
    assert float((last["blocks.1.bn1.running_mean"] - init["blocks.1.bn1.running_mean"]).abs().max()) > 1e-3
    assert last["bn.weight"].requires_grad is False and not torch.equal(last["bn.weight"], init["bn.weight"])
    # an independent evaluation: the synthesized network loaded into a fresh model, in eval mode
    model = type(traj.model)(1, [(2, 1), (4, 1), (8, 1)], 10)
    model.load_state_dict(traj.network_params(traj.ticket))
    model.eval()
    x, y = traj.data.test_x, traj.data.test_y
    with torch.no_grad():
        expect = float((model(x).argmax(1) == y).double().mean())
    before = {k: v.clone() for k, v in last.items()}
    assert record["test_accuracy"] == pytest.approx(expect, abs=1e-12)
    assert evaluate(traj.param, traj.state.last, traj.state.mask, x, y).accuracy == pytest.approx(expect, abs=1e-12)
    assert all(torch.equal(before[k], last[k]) for k in last) and traj.model.training  # nothing moved; mode restored


def test_tickets_and_states_carry_the_running_statistics(digits, tmp_path):
    traj = _traj(digits, rounds=1)
    traj.run_round()
    net = export(traj.model, traj.dictionary, traj.ticket).module  # the exported ticket: its statistics too
    assert torch.equal(net.blocks[2].bn2.running_var, traj.state.last.free["blocks.2.bn2.running_var"])
    x = traj.data.test_x[:50]
    with torch.no_grad(), traj.param.mode(training=False):
        expect = traj.param.forward(traj.state.last, traj.state.mask, x)
    assert torch.allclose(net(x), expect, atol=1e-5)
    ticket = Ticket.from_dict(traj.ticket.to_dict())
    assert torch.equal(ticket.free["blocks.2.bn2.running_var"], traj.state.last.free["blocks.2.bn2.running_var"])
    traj.state.save(tmp_path / "s.pt")
    assert _same(TrajectoryState.load(tmp_path / "s.pt").last, traj.state.last)


def test_late_rewinding_on_a_resnet_repeats_steps_k_to_T_bit_for_bit(digits):
    """With an all-ones mask, a round rewound to step 5 redoes round 0's steps 5…11 exactly, running
    statistics included (the rewind point holds them after 5 updates)."""
    traj = _traj(digits, rewind={"step": 5})
    first = traj.run_round()
    dense = traj.state.last.clone()
    assert int(traj.state.rewind_point.free["blocks.0.bn2.num_batches_tracked"]) == 5
    traj.state.mask = torch.ones_like(traj.state.mask)
    second = traj.run_round()
    assert _same(traj.state.last, dense)
    assert second["test_accuracy"] == first["test_accuracy"] and second["train_loss"] == first["train_loss"]


@pytest.mark.parametrize("rewind", ["init", {"step": 4}])
def test_a_resumed_resnet_trajectory_equals_an_uninterrupted_one(digits, tmp_path, rewind):
    full = _traj(digits, rounds=3, rewind=rewind)
    records = full.run()
    part = _traj(digits, rounds=3, rewind=rewind)
    part.run_round()
    part.state.save(tmp_path / "s.pt")
    resumed = _traj(digits, rounds=3, rewind=rewind, state=TrajectoryState.load(tmp_path / "s.pt"))
    rest = resumed.run()

    def strip(rs):
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rs]

    assert strip(rest) == strip(records)
    assert _same(resumed.state.last, full.state.last)
    if rewind != "init":
        assert _same(resumed.state.rewind_point, full.state.rewind_point)


def test_recomputed_statistics_equal_torch_update_bn(digits):
    traj = _traj(digits, rounds=1)
    traj.run_round()
    x = traj.data.train_x[:300]
    got = recompute_statistics(traj.param, traj.state.last, traj.state.mask, x, 64)
    model = type(traj.model)(1, [(2, 1), (4, 1), (8, 1)], 10)
    model.load_state_dict(traj.network_params(traj.ticket))
    update_bn([x[i : i + 64] for i in range(0, 300, 64)], model)  # PyTorch's own: reset, momentum None, one pass
    for name, buffer in model.named_buffers():
        assert torch.allclose(got.free[name], buffer, rtol=1e-5, atol=1e-6), name
    assert int(got.free["bn.num_batches_tracked"]) == 5
    assert not torch.allclose(got.free["bn.running_mean"], traj.state.last.free["bn.running_mean"])


def test_lmc_of_two_identical_copies_is_exactly_zero_with_batchnorm(digits):
    traj = _traj(digits)
    traj.run_round()
    same = (round_generator(0, 1, 4), round_generator(0, 1, 4))
    targets = {s: getattr(traj.data, f"{s}_y") for s in ("train", "test")}
    cfg = TrainConfig(steps=12, batch_size=64, lr=0.05, momentum=0.9, train_eval_size=500)
    out = instability(traj.param, traj.state.init, traj.state.mask, traj.inputs, targets, cfg, same, 5)
    assert out == {"lmc_barrier_test": 0.0, "lmc_barrier_train": 0.0, "lmc_bn_images": 500}


def test_batched_seeds_refuse_batchnorm_in_one_line(digits):
    configs = [TrajectoryConfig(dataset="digits", model=MODEL, seed=s, train=TRAIN) for s in (0, 1)]
    with pytest.raises(ValueError, match="^batch_seeds: the model has running statistics") as e:
        BatchedTrajectory(configs, data=digits)
    assert "\n" not in str(e.value)


def test_a_model_without_batchnorm_has_no_buffers_in_its_weights(digits):
    traj = Trajectory(TrajectoryConfig(dataset="digits", model="mlp_300_100", train=TRAIN), data=digits)
    assert traj.param.buffer_names == [] and set(traj.state.init.free) == set()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in traj.model.modules())
