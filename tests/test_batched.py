"""Batched seeds: K trajectories trained at once equal K separate trajectories."""

from __future__ import annotations

import pytest
import torch

from glth_core import data as datasets
from glth_core.batched import BatchedTrajectory
from glth_core.batched_train import evaluate_batched, train_batched
from glth_core.experiment import TIMING_COLUMNS
from glth_core.imp import Trajectory
from glth_core.streams import round_generator
from glth_core.train import DivergedError, TrainConfig, evaluate, train
from glth_core.trajectory import TrajectoryConfig, TrajectoryState

SHORT = TrainConfig(steps=8, batch_size=64, lr=0.05)
SEEDS = (0, 1, 2)
METRICS = ("test_accuracy", "test_loss", "val_accuracy", "train_accuracy", "train_loss")


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _configs(seeds=SEEDS, **kw) -> list[TrajectoryConfig]:
    base = dict(dataset="digits", model="mlp_300_100", tau=0.3, rounds=3, train=SHORT)
    base.update(kw)
    return [TrajectoryConfig(seed=s, **base) for s in seeds]


def _run_batched(configs, digits, vectorize=None):
    batch = BatchedTrajectory(configs, data=digits, vectorize=vectorize)
    records, masks, tickets = [], [], []
    while not batch.done:
        records.append(batch.run_round())
        masks.append([s.mask.clone() for s in batch.states])
        tickets.append(batch.tickets)
    return batch, records, masks, tickets


def _assert_same_record(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key, value in a.items():
        if key in METRICS:
            assert value == pytest.approx(b[key], abs=1e-5), key
        elif key not in TIMING_COLUMNS:
            assert value == b[key], key


def _assert_equals_separate_runs(configs, digits, vectorize=None):
    batch, records, masks, tickets = _run_batched(configs, digits, vectorize)
    for k, config in enumerate(configs):
        alone = Trajectory(config, data=digits)
        r = 0
        while not alone.done:
            _assert_same_record(alone.run_round(), records[r][k])
            assert torch.equal(alone.state.mask, masks[r][k])
            assert torch.equal(alone.ticket.mask, tickets[r][k].mask)
            assert torch.allclose(alone.ticket.kept_coeffs, tickets[r][k].kept_coeffs, atol=1e-5)
            r += 1
        assert r == len(records)
    return batch


@pytest.mark.parametrize(
    "dictionary, extra",
    [
        ({"kind": "canonical"}, {}),
        ({"kind": "random", "method": "fast", "seed": 7}, {}),
        ({"kind": "bottleneck", "layer": "1", "basis": "identity"}, {}),  # the input bottleneck's kept columns
        ({"kind": "blockdiag", "per": "unit", "block": "dct"}, {"rewind": {"step": 3}}),
        ({"kind": "bottleneck", "layer": "1", "basis": "pca"}, {"control": "random_mask", "rewind": "none"}),
        # late rewinding with its reinit control, layerwise ceil pruning of the weights alone
        (
            {"kind": "canonical", "scope": "weights"},
            {"rewind": {"step": 3}, "control": "reinit", "pruning": "layerwise", "prune_rounding": "ceil"},
        ),
        ({"kind": "bottleneck", "layer": "1", "basis": "dct"}, {"control": "structured", "rewind": {"lr_step": 2}}),
        ({"kind": "canonical"}, {"control": "oneshot", "layer_tau": {"5.weight": 0.1}}),
    ],
)
def test_batched_seeds_equal_separate_trajectories(digits, dictionary, extra):
    _assert_equals_separate_runs(_configs(dictionary=dictionary, **extra), digits)


def test_reinit_control_and_adam_equal_separate_trajectories(digits):
    train = TrainConfig(steps=6, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=1e-4, schedule="cosine")
    _assert_equals_separate_runs(_configs(seeds=(3, 5), rounds=2, control="reinit", train=train), digits)


@pytest.mark.parametrize("vectorize", [True, False])  # a CPU conv model loops by default
def test_conv_model_equals_separate_trajectories(digits, vectorize):
    _assert_equals_separate_runs(_configs(seeds=(0, 1), model="cnn_paper", rounds=2), digits, vectorize)


def test_looped_forwards_are_bit_identical_to_separate_training(digits):
    configs = _configs(seeds=(0, 1), model="cnn_paper")
    members = [Trajectory(c, data=digits) for c in configs]
    x, cfg = members[0].inputs["train"], configs[0].train
    together, _ = train_batched(
        members[0].param,
        [t.state.init for t in members],
        [t.state.mask for t in members],
        x,
        digits.train_y,
        cfg,
        [round_generator(c.seed, 0) for c in configs],
        vectorize=False,
    )
    for t, c, w in zip(members, configs, together):
        alone, _ = train(t.param, t.state.init, t.state.mask, x, digits.train_y, cfg, round_generator(c.seed, 0))
        assert torch.equal(alone.coeffs, w.coeffs)
        assert all(torch.equal(alone.free[n], w.free[n]) for n in alone.free)


def test_each_state_resumes_like_a_separate_trajectory(digits, tmp_path):
    configs = _configs(seeds=(0, 4), rounds=3)
    full = _run_batched(configs, digits)[1]

    first = BatchedTrajectory(configs, data=digits)
    first.run_round()
    for k, state in enumerate(first.states):
        state.save(tmp_path / f"{k}.pt")
    states = [TrajectoryState.load(tmp_path / f"{k}.pt") for k in range(len(configs))]
    resumed = BatchedTrajectory(configs, data=digits, states=states)
    rest = [resumed.run_round() for _ in range(2)]
    alone = Trajectory(configs[1], data=digits, state=TrajectoryState.load(tmp_path / "1.pt"))
    alone_rest = [alone.run_round() for _ in range(2)]
    for r in range(2):
        for k in range(len(configs)):
            _assert_same_record(rest[r][k], full[r + 1][k])
        _assert_same_record(alone_rest[r], full[r + 1][1])
    assert resumed.done and [len(s.records) for s in resumed.states] == [3, 3]


def test_vmapped_evaluation_equals_separate_evaluations(digits):
    bottleneck = {"kind": "bottleneck", "layer": "1", "basis": "identity"}  # pruned columns: the kept-union path
    members = [Trajectory(c, data=digits) for c in _configs(seeds=(0, 1, 2), dictionary=bottleneck)]
    masks = [
        torch.rand(t.dictionary.size, generator=torch.Generator().manual_seed(k)) > 0.5 for k, t in enumerate(members)
    ]
    x = members[0].inputs["test"]
    together = evaluate_batched(
        members[0].param, [t.state.init for t in members], masks, x, digits.test_y, batch_size=100
    )
    for t, mask, ev in zip(members, masks, together):
        alone = evaluate(t.param, t.state.init, mask, x, digits.test_y, batch_size=100)
        assert ev.accuracy == pytest.approx(alone.accuracy, abs=1e-12) and ev.loss == pytest.approx(
            alone.loss, abs=1e-5
        )


def test_records_share_the_batch_training_time(digits):
    batch = BatchedTrajectory(_configs(seeds=(0, 1), rounds=1), data=digits)
    records = batch.run_round()
    assert records[0]["wall_seconds"] == records[1]["wall_seconds"] > 0
    assert batch.done and [t.round for t in batch.tickets] == [0, 0]


def test_configs_must_differ_only_in_seed(digits):
    a, b = _configs(seeds=(0, 1))
    with pytest.raises(ValueError, match="tau"):
        BatchedTrajectory([a, TrajectoryConfig(**{**b.__dict__, "tau": 0.5})], data=digits)
    with pytest.raises(ValueError, match="train"):
        BatchedTrajectory([a, TrajectoryConfig(**{**b.__dict__, "train": TrainConfig(steps=9)})], data=digits)
    with pytest.raises(ValueError, match="seed"):
        BatchedTrajectory([a, a], data=digits)
    with pytest.raises(ValueError, match="configs"):
        BatchedTrajectory([], data=digits)
    with pytest.raises(ValueError, match="states"):
        BatchedTrajectory([a, b], data=digits, states=[None])


@pytest.mark.parametrize(
    "dictionary",
    [
        {"kind": "random", "method": "fast"},
        {"kind": "blockdiag", "block": "random"},
        {"kind": "bottleneck", "layer": "1", "basis": "random"},
    ],
)
def test_seed_drawn_dictionary_needs_an_explicit_seed(digits, dictionary):
    with pytest.raises(ValueError, match="dictionary.seed"):
        BatchedTrajectory(_configs(seeds=(0, 1), dictionary=dictionary), data=digits)
    BatchedTrajectory(_configs(seeds=(0, 1), dictionary={**dictionary, "seed": 3}), data=digits)  # accepted


def test_pca_past_the_input_depends_on_the_init(digits):
    with pytest.raises(ValueError, match="pca"):
        BatchedTrajectory(
            _configs(seeds=(0, 1), dictionary={"kind": "bottleneck", "layer": "3", "basis": "pca"}), data=digits
        )


def test_divergence_names_the_seed(digits):
    configs = _configs(seeds=(0, 1), rounds=1, train=TrainConfig(epochs=1, lr=1e6, momentum=0.9))
    with pytest.raises(DivergedError, match="seed") as err:
        BatchedTrajectory(configs, data=digits).run_round()
    assert err.value.index in (0, 1) and f"seed {configs[err.value.index].seed}" in str(err.value)


def test_a_diverged_round_leaves_every_state_as_it_was_so_the_rest_can_go_on(digits):
    """What ``orchestrator.trainable.run_tune_trial`` relies on to fail a diverged seed alone: the round
    that raised changed no member's state, so the other seeds, rebatched from their states,
    give the results of separate runs."""
    wild = _configs(rounds=2, train=TrainConfig(steps=8, batch_size=64, lr=1e6, momentum=0.9))
    batch = BatchedTrajectory(wild, data=digits)
    fresh = [Trajectory(c, data=digits).state for c in wild]
    with pytest.raises(DivergedError) as err:
        batch.run_round()
    assert err.value.index == 0  # the first seed whose loss is not finite
    for state, untouched in zip(batch.states, fresh):
        assert state.round == 0 and state.records == [] and torch.equal(state.mask, untouched.mask)
        assert torch.equal(state.init.coeffs, untouched.init.coeffs)
    tame = _configs(rounds=2)[1:]
    rest = BatchedTrajectory(tame, data=digits, states=batch.states[1:]).run()
    for config, records in zip(tame, rest):
        for a, b in zip(Trajectory(config, data=digits).run(), records):
            _assert_same_record(a, b)
