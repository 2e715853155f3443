"""IMP in a dictionary: sparsify against independent computations, rewinding, resume."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from glth_core import data as datasets
from glth_core.experiment import TIMING_COLUMNS
from glth_core.imp import Trajectory
from glth_core.sparsify import sparsify
from glth_core.train import DivergedError, TrainConfig
from glth_core.trajectory import TrajectoryConfig, TrajectoryState

FAST = TrainConfig(epochs=1, batch_size=64, lr=0.05)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _config(**kw) -> TrajectoryConfig:
    base = dict(dataset="digits", model="mlp_300_100", tau=0.3, rounds=3, seed=0, train=FAST)
    base.update(kw)
    return TrajectoryConfig(**base)


# -- sparsify ------------------------------------------------------------------------------
def test_canonical_sparsify_equals_torch_global_l1_unstructured():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    params = [(m, name) for m in net if isinstance(m, nn.Linear) for name in ("weight", "bias")]
    flat = torch.cat([getattr(m, n).detach().flatten() for m, n in params])
    for amount in (0.2, 0.37):
        ours = sparsify(flat, torch.ones_like(flat, dtype=torch.bool), amount)
        copies = [(nn.Linear(m.in_features, m.out_features), n) for m, n in params]
        for (c, n), (m, _) in zip(copies, params):
            getattr(c, n).data.copy_(getattr(m, n).data)
        prune.global_unstructured(copies, pruning_method=prune.L1Unstructured, amount=amount)
        theirs = torch.cat([getattr(c, n + "_mask").flatten() for c, n in copies]).bool()
        assert ours.sum() == theirs.sum() == flat.numel() - round(amount * flat.numel())
        assert torch.equal(ours, theirs)


def test_sparsify_counts_only_remaining_and_breaks_ties_by_index():
    a = torch.tensor([0.5, 0.1, 0.1, 0.1, 2.0, -0.05, 3.0, 0.0])
    mask = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0], dtype=torch.bool)
    new = sparsify(a, mask, 0.5)  # 7 remaining → remove round(3.5)=4: -0.05, then ties 0.1 at 1, 2, 3
    assert new.tolist() == [True, False, False, False, True, False, True, False]
    assert sparsify(a, torch.tensor([0, 0, 0, 0, 0, 0, 1, 0], dtype=torch.bool), 0.9).sum() == 1  # never the last


def test_group_sparsify_ranks_group_energy():
    groups = torch.tensor([0, 1, 2, 3] * 3)  # 3 units × 4 columns, element k*4+l → group l
    a = torch.tensor([1.0, 0.1, 3.0, 0.2, 1.0, 0.1, -3.0, 0.2, 1.0, 0.9, 3.0, 0.0])
    mask = torch.ones(12, dtype=torch.bool)
    new = sparsify(a, mask, 0.5, groups)  # energies: g0 3.0, g1 0.83, g2 27, g3 0.08 → drop g3, g1
    kept_groups = sorted(set(groups[new].tolist()))
    assert kept_groups == [0, 2]
    assert new.sum() == 6


# -- trajectories ----------------------------------------------------------------------------
def test_bottleneck_identity_prunes_whole_input_columns(digits):
    cfg = _config(dictionary={"kind": "bottleneck", "layer": "1", "basis": "identity"}, rounds=3)
    traj = Trajectory(cfg, data=digits)
    records = traj.run()
    kept = records[-1]["rank"]
    assert kept == len(records[-1]["kept_inputs"]) < 64
    W = traj.scope_weights()["1.weight"]  # 300 × 64
    nonzero_cols = (W != 0).any(dim=0)
    assert int(nonzero_cols.sum()) == kept
    assert sorted(nonzero_cols.nonzero().flatten().tolist()) == records[-1]["kept_inputs"]
    assert bool(((W != 0) == nonzero_cols).all())  # the same kept columns in all 300 units
    assert torch.linalg.matrix_rank(W) <= kept
    assert [r["rank"] for r in records] == [64, 64 - round(0.3 * 64), 45 - round(0.3 * 45)]


def test_resume_after_round_3_is_bit_identical(digits, tmp_path):
    cfg = _config(tau=0.3, rounds=8)
    full = Trajectory(cfg, data=digits)
    full_records, full_masks = [], []
    while not full.done:
        full_records.append(full.run_round())
        full_masks.append(full.state.mask.clone())

    first = Trajectory(cfg, data=digits)
    masks = []
    for _ in range(3):
        first.run_round()
        masks.append(first.state.mask.clone())
    first.state.save(tmp_path / "state.pt")
    resumed = Trajectory(cfg, data=datasets.load("digits"), state=TrajectoryState.load(tmp_path / "state.pt"))
    while not resumed.done:
        resumed.run_round()
        masks.append(resumed.state.mask.clone())

    def strip(rs):
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rs]

    assert strip(resumed.state.records) == strip(full_records)
    assert all(torch.equal(a, b) for a, b in zip(masks, full_masks))
    assert torch.equal(resumed.state.last.coeffs, full.state.last.coeffs)
    d = 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10  # mlp_300_100 on 8×8 digits
    k1 = d - round(0.3 * d)
    assert [r["kept"] for r in full_records][:3] == [d, k1, k1 - round(0.3 * k1)]


@pytest.mark.parametrize("rewind", ["init", "none", "lr", {"step": 5}])
def test_rewinding_start_points(digits, rewind):
    cfg = _config(rewind=rewind, rounds=2)
    traj = Trajectory(cfg, data=digits)
    traj.run_round()
    (job,) = traj.round_jobs()
    if rewind == "init":
        expected = traj.state.init
    elif isinstance(rewind, dict):
        expected = traj.state.rewind_point
        assert not torch.equal(expected.coeffs, traj.state.init.coeffs)
    else:
        expected = traj.state.last
    assert job.start is expected
    assert (job.plan.lr is not None) == (rewind == "none")  # fine-tuning pins the rate
    assert job.plan.start_step == (5 if isinstance(rewind, dict) else 0)
    rec = traj.run_round()
    assert rec["round"] == 1 and rec["kept"] < rec["total"]


def test_training_learns_digits(digits):
    cfg = _config(rounds=1, train=TrainConfig(epochs=5, batch_size=64, lr=0.05))
    rec = Trajectory(cfg, data=digits).run()[0]
    assert rec["test_accuracy"] > 0.9 and rec["val_accuracy"] > 0.9
    assert rec["density"] == 1.0 and rec["compression"] == 0.0


def test_divergence_raises(digits):
    cfg = _config(rounds=1, train=TrainConfig(epochs=1, lr=1e6, momentum=0.9))
    with pytest.raises(DivergedError):
        Trajectory(cfg, data=digits).run()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="tau"):
        _config(tau=1.5)
    with pytest.raises(ValueError, match="rounds"):
        _config(rounds=0)
    with pytest.raises(ValueError, match="rewind"):
        _config(rewind="sometimes")
    with pytest.raises(ValueError, match="train.optimizer"):
        TrainConfig(optimizer="lbfgs")


def test_evaluation_equals_a_plain_forward_of_the_synthesized_network(digits):
    """``evaluate`` builds the parameters once per split and runs every batch on them: its numbers
    must be those of an ordinary module holding the synthesized weights, whatever the batching."""
    import torch.nn.functional as F
    from torch.func import functional_call

    from glth_core.train import evaluate

    cfg = _config(rounds=2, dictionary={"kind": "random", "seed": 3})
    traj = Trajectory(cfg, data=digits)
    traj.run_round()  # round 1's mask prunes 30 % in a random rotation
    w, mask, param = traj.state.last, traj.state.mask, traj.param
    x, y = traj.inputs["test"], digits.test_y
    with torch.no_grad():
        params = {n: p.detach().clone() for n, p in param.model.named_parameters()}
        params.update(param.dictionary.unflatten(param.dictionary.synthesize(w.coeffs * mask)))
        logits = functional_call(param.model, params, (x,))
    for batch_size in (97, 4096):
        ev = evaluate(param, w, mask, x, y, batch_size)
        assert ev.accuracy == pytest.approx(int((logits.argmax(1) == y).sum()) / len(y), abs=1e-12)
        assert ev.loss == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-5)
    record = traj.run_round()
    assert isinstance(record["eval_seconds"], float) and record["eval_seconds"] > 0


def test_train_eval_size_measures_train_accuracy_on_one_fixed_subset(digits):
    from glth_core.train import evaluate, train_eval_split

    x, y = digits.train_x, digits.train_y
    sub_x, sub_y = train_eval_split(x, y, 300)
    assert sub_x.shape[0] == 300 and train_eval_split(x, y, 0)[0] is x and train_eval_split(x, y, 10**6)[0] is x
    rows = [i for i in range(x.shape[0]) if any(torch.equal(x[i], r) for r in sub_x)]
    assert len(rows) == 300 and torch.equal(x[rows], sub_x) and torch.equal(y[rows], sub_y)  # in index order
    whole, part = (
        Trajectory(_config(rounds=1, seed=s, train=replace(FAST, train_eval_size=n)), data=digits)
        for s, n in ((0, 0), (0, 300))
    )
    a, b = whole.run()[0], part.run()[0]
    assert {k: v for k, v in a.items() if k not in (*TIMING_COLUMNS, "train_accuracy", "train_loss")} == {
        k: v for k, v in b.items() if k not in (*TIMING_COLUMNS, "train_accuracy", "train_loss")
    }
    ev = evaluate(part.param, part.state.last, part.state.mask, sub_x, sub_y)
    assert b["train_accuracy"] == ev.accuracy and b["train_loss"] == pytest.approx(ev.loss, abs=1e-7)
    assert a["train_accuracy"] == evaluate(whole.param, whole.state.last, whole.state.mask, x, y).accuracy
    other_seed = Trajectory(_config(rounds=1, seed=1, train=replace(FAST, train_eval_size=300)), data=digits)
    assert torch.equal(train_eval_split(other_seed.inputs["train"], digits.train_y, 300)[1], sub_y)
    with pytest.raises(ValueError, match=r"train\.train_eval_size: must be an integer ≥ 0"):
        TrainConfig(train_eval_size=-1)
