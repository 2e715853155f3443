"""Linear mode connectivity (Frankle et al. 2020) in any dictionary: the error barrier has known
answers (0 for two identical copies, never negative, the max minus the ends' mean), equals an
independent computation on the masked network, and reaches the rows of a real sweep."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from glth_core import data as datasets
from glth_core.batched import check_batchable
from glth_core.export import masked_model
from glth_core.imp import Trajectory
from glth_core.lmc import copy_generators, error_barrier, instability, interpolate, path_errors
from glth_core.streams import LMC_STREAMS, round_generator
from glth_core.ticket import Ticket
from glth_core.train import SchedulePlan, TrainConfig, Weights, train
from glth_core.trajectory import TrajectoryConfig

TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.05)
DICTIONARIES = [
    {"kind": "canonical"},
    {"kind": "random", "method": "fast"},
    {"kind": "bottleneck", "layer": "1", "basis": "dct"},
]


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _traj(digits, **kw) -> Trajectory:
    base = dict(dataset="digits", model="mlp_300_100", tau=0.5, rounds=2, seed=0, train=TRAIN)
    return Trajectory(TrajectoryConfig(**{**base, **kw}), data=digits)


def _targets(traj):
    return {s: getattr(traj.data, f"{s}_y") for s in ("train", "test")}


# -- the barrier itself ----------------------------------------------------------------------------
def test_error_barrier_known_values():
    assert error_barrier([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)
    assert error_barrier([0.2, 0.1, 0.05, 0.4]) == pytest.approx(0.4 - 0.3)
    assert error_barrier([0.1, 0.15, 0.2]) == pytest.approx(0.05)  # a monotone path: half the ends' gap
    assert error_barrier([0.25, 0.25, 0.25]) == 0.0
    assert error_barrier([0.3, 0.1, 0.3]) == 0.0  # a dip is no barrier
    with pytest.raises(ValueError, match="^lmc_points"):
        error_barrier([0.1])


def test_error_barrier_is_never_negative():
    rng = random.Random(0)
    for _ in range(2000):
        errors = [rng.random() for _ in range(rng.randint(2, 12))]
        b = error_barrier(errors)
        assert b >= 0.0 and b == pytest.approx(max(0.0, max(errors) - (errors[0] + errors[-1]) / 2), abs=1e-15)


def test_interpolate_is_exact_at_the_ends_and_between_equal_weights():
    g = torch.Generator().manual_seed(0)
    a = Weights(torch.randn(50, generator=g), {"b": torch.randn(3, generator=g)})
    b = Weights(torch.randn(50, generator=g), {"b": torch.randn(3, generator=g)})
    assert interpolate(a, b, 0.0) is a and interpolate(a, b, 1.0) is b
    mid = interpolate(a, b, 0.25)
    assert torch.allclose(mid.coeffs, 0.75 * a.coeffs + 0.25 * b.coeffs, atol=1e-6)
    assert torch.allclose(mid.free["b"], 0.75 * a.free["b"] + 0.25 * b.free["b"], atol=1e-6)
    same = interpolate(a, a.clone(), 0.3)
    assert torch.equal(same.coeffs, a.coeffs) and torch.equal(same.free["b"], a.free["b"])


def test_lmc_points_is_checked_in_one_line():
    for bad in (1, 2, -3, True, 2.5):
        with pytest.raises(ValueError, match=r"^lmc_points: must be 0 \(off\) or an integer ≥ 3") as e:
            TrajectoryConfig(lmc_points=bad)
        assert "\n" not in str(e.value)
    assert TrajectoryConfig(lmc_points=3).lmc_points == 3


# -- known answers in any dictionary ---------------------------------------------------------------
@pytest.mark.parametrize("dictionary", DICTIONARIES, ids=lambda d: d["kind"])
def test_same_data_order_gives_a_barrier_of_exactly_zero(digits, dictionary):
    traj = _traj(digits, dictionary=dictionary)
    traj.run_round()  # a pruned mask for round 1
    mask = traj.state.mask
    assert 0.4 < float(mask.double().mean()) < 0.6
    same = (round_generator(0, 1, 4), round_generator(0, 1, 4))
    out = instability(traj.param, traj.state.init, mask, traj.inputs, _targets(traj), TRAIN, same, 7)
    assert out == {"lmc_barrier_test": 0.0, "lmc_barrier_train": 0.0}


@pytest.mark.parametrize("dictionary", DICTIONARIES[:2], ids=lambda d: d["kind"])
def test_barrier_equals_an_independent_computation_on_the_masked_network(digits, dictionary):
    """Two copies on LMC's two data orders; the path's errors recomputed from the masked model
    (W = D a in model coordinates, NumPy argmax) agree with the barrier to one test image."""
    traj = _traj(digits, dictionary=dictionary)
    traj.run_round()
    mask, start = traj.state.mask, traj.state.init
    gens = copy_generators(0, 1)
    got = instability(traj.param, start, mask, traj.inputs, _targets(traj), TRAIN, gens, 5)

    x, y = traj.data.train_x, traj.data.train_y
    a, _ = train(traj.param, start, mask, x, y, TRAIN, round_generator(0, 1, LMC_STREAMS[0]))
    b, _ = train(traj.param, start, mask, x, y, TRAIN, round_generator(0, 1, LMC_STREAMS[1]))
    assert not torch.equal(a.coeffs, b.coeffs)  # different data orders, different copies
    errors = []
    for alpha in np.linspace(0, 1, 5):
        w = Weights(
            (1 - alpha) * a.coeffs + alpha * b.coeffs, {n: (1 - alpha) * a.free[n] + alpha * b.free[n] for n in a.free}
        )
        net = masked_model(traj.model, traj.dictionary, Ticket.of(1, mask, w))
        with torch.no_grad():
            pred = net(traj.data.test_x).argmax(1).numpy()
        errors.append(float(np.mean(pred != traj.data.test_y.numpy())))
    expect = max(errors) - (errors[0] + errors[-1]) / 2
    n_test = len(traj.data.test_y)
    assert abs(got["lmc_barrier_test"] - expect) <= 1.0 / n_test + 1e-12
    assert got["lmc_barrier_test"] >= 0 and got["lmc_barrier_train"] >= 0
    # the path helper's own ends are the copies' own errors
    ends = path_errors(traj.param, a, b, mask, traj.inputs["test"], traj.data.test_y, 2)
    assert ends == pytest.approx([errors[0], errors[-1]], abs=1.0 / n_test + 1e-12)


# -- in a trajectory ------------------------------------------------------------------------------
@pytest.mark.parametrize("rewind", ["init", {"step": 10}])
def test_trajectory_records_lmc_without_changing_its_tickets(digits, rewind):
    with_lmc = _traj(digits, lmc_points=3, rewind=rewind)
    plain = _traj(digits, rewind=rewind)
    a, b = with_lmc.run(), plain.run()
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert 0.0 <= ra["lmc_barrier_test"] <= 1.0 and 0.0 <= ra["lmc_barrier_train"] <= 1.0
        assert ra["lmc_seconds"] > 0
        assert "lmc_barrier_test" not in rb
        assert (ra["test_accuracy"], ra["kept"], ra["train_loss"]) == (
            rb["test_accuracy"],
            rb["kept"],
            rb["train_loss"],
        )
    assert torch.equal(with_lmc.state.mask, plain.state.mask)
    assert torch.equal(with_lmc.state.last.coeffs, plain.state.last.coeffs)


def test_round_zero_of_late_rewinding_measures_from_w_k(digits):
    """Round 0 of rewind {step: k}: the copies start at w_k (captured by the round) and train k…T,
    as every later round does; two equal orders from there give 0, and a copy run by hand from the
    captured w_k on LMC's first order equals the one ``instability`` trains."""
    traj = _traj(digits, lmc_points=3, rewind={"step": 10})
    traj.run_round()
    wk = traj.state.rewind_point
    mask = torch.ones_like(traj.state.mask)
    one = round_generator(0, 0, LMC_STREAMS[0])
    same = instability(
        traj.param,
        wk,
        mask,
        traj.inputs,
        _targets(traj),
        TRAIN,
        (one, round_generator(0, 0, 4)),
        3,
        SchedulePlan(start_step=10),
    )
    assert same == {"lmc_barrier_test": 0.0, "lmc_barrier_train": 0.0}
    recorded = traj.state.records[0]["lmc_barrier_test"]
    again = instability(
        traj.param, wk, mask, traj.inputs, _targets(traj), TRAIN, copy_generators(0, 0), 3, SchedulePlan(start_step=10)
    )
    assert again["lmc_barrier_test"] == recorded


def test_lmc_seeds_are_recorded_and_default_ids_unchanged():
    assert TrajectoryConfig(lmc_points=11, seed=4).seeds()["lmc_data_orders"] == 4
    assert TrajectoryConfig(seed=4).seeds()["lmc_data_orders"] is None
    assert "lmc_points" not in TrajectoryConfig().identity()
    assert TrajectoryConfig(lmc_points=0).content_hash() == TrajectoryConfig().content_hash()
    assert TrajectoryConfig(lmc_points=11).content_hash() != TrajectoryConfig().content_hash()


def test_batched_seeds_refuse_lmc_at_spec_time():
    configs = [TrajectoryConfig(seed=s, lmc_points=5) for s in (0, 1)]
    with pytest.raises(ValueError, match="^lmc_points: linear mode connectivity"):
        check_batchable(configs)
    from orchestrator import spec

    text = "name: b\ndataset: digits\nseeds: [0, 1]\nrounds: 2\nlmc_points: 5\nbatch_seeds: 2\n"
    with pytest.raises(spec.SpecError) as e:
        spec.parse(text)
    assert str(e.value).startswith("batch_seeds: lmc_points:") and "\n" not in str(e.value)
    assert len(spec.parse(text.replace("batch_seeds: 2\n", "")).trials) == 2


# -- a real sweep ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_digits_sweep_with_lmc_writes_barriers_to_parquet_and_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from orchestrator import spec
    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet
    from orchestrator.sweep import run_sweep

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    text = (
        "name: lmc\nexperiment: glth-test-lmc\ndataset: digits\nmodel: mlp_300_100\n"
        "dictionary: [{kind: canonical}, {kind: bottleneck, layer: '1', basis: dct}]\n"
        "tau: 0.5\nseeds: [0]\nrounds: 2\nlmc_points: 3\nrewind: {step: 5}\n"
        "train: {epochs: 1, batch_size: 64, lr: 0.05}\nresources: {cpu: 1}\nmax_concurrent: 2\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_sweep(spec.parse(text), out_dir=tmp_path / "out", tracking_uri=uri, num_cpus=2)
    assert result.failed == [] and result.computed == 2
    rows = parquet.read_rounds(SweepDir.under(tmp_path / "out", result.sweep_id))
    assert len(rows) == 4 and set(rows.status) == {"ok"}
    assert rows["lmc_barrier_test"].notna().all() and (rows["lmc_barrier_test"] >= 0).all()
    assert rows["lmc_barrier_train"].notna().all() and (rows["lmc_barrier_train"] >= 0).all()
    assert all(isinstance(json.loads(s), dict) for s in rows["layer_density"])
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("glth-test-lmc")
    children = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        history = client.get_metric_history(child.info.run_id, "lmc_barrier_test")
        tid = child.data.tags["glth.trial_id"]
        want = rows[rows.trial_id == tid].sort_values("round")["lmc_barrier_test"].tolist()
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1]
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(want)
