"""Rewinding as the literature defines it: fine-tuning at a nonzero rate, late rewinding that resumes
the schedule and the data order at step k, learning-rate rewinding, warmup, and a reinit control
that trains the steps the ticket trains."""

from __future__ import annotations

import math

import pytest
import torch

from glth_core import data as datasets
from glth_core.experiment import TIMING_COLUMNS
from glth_core.imp import Trajectory
from glth_core.rewind import rewind_label
from glth_core.train import SchedulePlan, TrainConfig, run_steps
from glth_core.trajectory import TrajectoryConfig

N_TRAIN, PER_EPOCH = 1293, 21  # digits' training split; ceil(1293 / 64) steps an epoch
SGD_COSINE = TrainConfig(epochs=2, batch_size=64, lr=0.05, momentum=0.9, schedule="cosine")  # T = 42


@pytest.fixture(scope="module")
def digits():
    data = datasets.load("digits")
    assert data.train_x.shape[0] == N_TRAIN
    return data


def _config(**kw) -> TrajectoryConfig:
    base = dict(dataset="digits", model="mlp_300_100", tau=0.3, rounds=2, seed=0, train=SGD_COSINE)
    base.update(kw)
    return TrajectoryConfig(**base)


def _same(a, b) -> bool:
    return (
        torch.equal(a.coeffs, b.coeffs)
        and a.free.keys() == b.free.keys()
        and all(torch.equal(a.free[k], b.free[k]) for k in a.free)
    )


# -- fine-tuning -----------------------------------------------------------------------------------
def test_finetuning_at_a_zero_final_rate_is_refused_in_one_line():
    with pytest.raises(
        ValueError, match=r"^train.finetune_lr: rewind none fine-tunes at train.schedule cosine's final rate"
    ):
        _config(rewind="none")
    with pytest.raises(ValueError, match="train.finetune_lr"):
        _config(rewind="none", train=TrainConfig(schedule="step", gamma=0.0))
    _config(rewind="none", train=TrainConfig(schedule="step"))  # ends at lr·γ², nonzero: accepted
    _config(rewind="none", train=TrainConfig(schedule="cosine", finetune_lr=0.01))
    with pytest.raises(ValueError, match="train.finetune_lr"):
        TrainConfig(finetune_lr=0.0)


def test_finetune_rate_is_the_final_rate_or_finetune_lr():
    assert TrainConfig(lr=0.1).finetune_rate() == 0.1
    assert TrainConfig(lr=0.1, schedule="step").finetune_rate() == pytest.approx(0.1 * 0.1**2)
    assert TrainConfig(lr=0.1, schedule="cosine").final_lr() == 0.0
    assert TrainConfig(lr=0.1, schedule="cosine", finetune_lr=0.003).finetune_rate() == 0.003


def test_finetuning_changes_the_weights(digits):
    """Today's bug: fine-tuning pinned lr at lr_at(T, T) = 0 under cosine, so round 1 'trained' nothing."""
    traj = Trajectory(
        _config(rewind="none", train=TrainConfig(epochs=1, lr=0.05, schedule="cosine", finetune_lr=0.01)), data=digits
    )
    traj.run_round()
    before = traj.state.last.masked(traj.state.mask)  # the pruned weights fine-tuning starts from
    (job,) = traj.round_jobs()
    assert job.start is traj.state.last and job.plan == SchedulePlan(lr=0.01)
    traj.run_round()
    after = traj.state.last
    moved = (after.coeffs - before.coeffs)[traj.ticket.mask].abs()
    assert float(moved.max()) > 1e-3 and float((moved > 0).double().mean()) > 0.9  # nearly every kept weight moves
    assert torch.equal(after.coeffs[~traj.ticket.mask], torch.zeros_like(after.coeffs[~traj.ticket.mask]))


# -- late rewinding --------------------------------------------------------------------------------
@pytest.mark.parametrize("rewind, k", [({"step": 25}, 25), ({"epoch": 1}, PER_EPOCH)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_late_rewinding_repeats_steps_k_to_T_bit_for_bit(digits, rewind, k, optimizer):
    """With an all-ones mask, a round rewound to step k reproduces round 0's steps k…T exactly: the
    weights w_k, the schedule from k and the data order from k (k = 25 is inside the second epoch)
    are restored. The optimizer is not: open_lth saves weights only, so every training that passes k,
    round 0 included, starts a fresh optimizer there; the round-0 reference is the same."""
    train = (
        SGD_COSINE
        if optimizer == "sgd"
        else TrainConfig(epochs=2, batch_size=64, optimizer="adam", lr=1e-3, schedule="cosine", warmup_steps=5)
    )
    traj = Trajectory(_config(rewind=rewind, train=train), data=digits)
    first = traj.run_round()
    dense = traj.state.last.clone()
    assert not _same(traj.state.rewind_point, traj.state.init)
    traj.state.mask = torch.ones_like(traj.state.mask)  # the dense mask again: round 1 must redo steps k…T
    (job,) = traj.round_jobs()
    assert job.start is traj.state.rewind_point and job.plan.start_step == k and job.data_round == 0
    second = traj.run_round()
    assert _same(traj.state.last, dense)
    assert second["test_accuracy"] == first["test_accuracy"] and second["train_loss"] == first["train_loss"]
    assert second["epochs"] == pytest.approx((42 - k) * 64 / N_TRAIN) and first["epochs"] == pytest.approx(
        42 * 64 / N_TRAIN
    )


def test_the_rewind_point_is_round_0_after_k_steps(digits):
    """w_k is the weights after exactly k optimizer steps of round 0's schedule and data order (a plain
    training of the same schedule, watched step by step, agrees at k and not at k ± 1)."""
    from glth_core.streams import round_generator
    from glth_core.train import train

    traj = Trajectory(_config(rewind={"step": 7}), data=digits)
    traj.run_round()
    seen = {}
    train(
        traj.param,
        traj.state.init,
        torch.ones_like(traj.state.mask),
        traj.inputs["train"],
        digits.train_y,
        SGD_COSINE,
        round_generator(0, 0),
        on_step=lambda n, w: seen.setdefault(n, w.clone()),
    )
    assert _same(traj.state.rewind_point, seen[7])
    assert not _same(traj.state.rewind_point, seen[6]) and not _same(traj.state.rewind_point, seen[8])


def test_late_rewinding_differs_from_restarting_the_schedule(digits):
    """What the fix changes: resumed at k, round 1 is not a restart of the schedule on a fresh order."""
    traj = Trajectory(_config(rewind={"step": 25}), data=digits)
    traj.run_round()
    traj.run_round()
    assert traj.state.records[1]["epochs"] == pytest.approx(17 * 64 / N_TRAIN)


def test_rewind_steps_are_checked_against_the_round():
    with pytest.raises(ValueError, match="rewind.step: 42 is step 42, not below the 42 steps"):
        Trajectory(_config(rewind={"step": 42})).round_jobs()
    with pytest.raises(ValueError, match="rewind.epoch: 2 is step 42"):
        Trajectory(_config(rewind={"epoch": 2})).round_jobs()
    for bad in ({"step": -1}, {"step": 1.5}, {"steps": 3}, {"step": 1, "epoch": 1}, {"lr_step": True}):
        with pytest.raises(ValueError, match="^rewind: "):
            _config(rewind=bad)
    assert [rewind_label(r) for r in ("init", {"step": 5}, {"epoch": 2}, {"lr_step": 5}, {"lr_epoch": 1})] == [
        "init",
        "step5",
        "epoch2",
        "lrstep5",
        "lrepoch1",
    ]


# -- learning-rate rewinding -------------------------------------------------------------------------
def test_lr_step_0_is_lr_rewinding_from_the_start(digits):
    a = Trajectory(_config(rewind="lr", rounds=3), data=digits)
    b = Trajectory(_config(rewind={"lr_step": 0}, rounds=3), data=digits)
    for _ in range(3):
        ra, rb = a.run_round(), b.run_round()
        assert {k: v for k, v in ra.items() if k not in TIMING_COLUMNS} == {
            k: v for k, v in rb.items() if k not in TIMING_COLUMNS
        }
        assert torch.equal(a.state.mask, b.state.mask)


def test_lr_rewinding_keeps_the_trained_weights_and_replays_from_k(digits):
    traj = Trajectory(_config(rewind={"lr_step": 30}), data=digits)
    traj.run_round()
    (job,) = traj.round_jobs()
    assert job.start is traj.state.last and job.plan == SchedulePlan(start_step=30) and job.data_round == 1
    assert traj.run_round()["epochs"] == pytest.approx(12 * 64 / N_TRAIN)


@pytest.mark.parametrize("plan", [SchedulePlan(), SchedulePlan(start_step=13), SchedulePlan(lr=0.01)])
def test_the_rates_a_plan_runs_equal_the_schedule_written_out(plan):
    """Plain SGD on L(w) = w (gradient 1): after steps k…T-1, w = -Σ lr_s, so the sum of the rates a
    plan used is read off the final weight; the schedule is written out here independently."""
    cfg = TrainConfig(steps=40, lr=0.2, momentum=0.0, schedule="cosine", warmup_steps=8)
    w = torch.zeros((), dtype=torch.float64, requires_grad=True)
    run_steps([w], cfg, 40, lambda step: w * 1.0, plan=plan)

    def rate(s):
        return 0.2 * 0.5 * (1 + math.cos(math.pi * s / 40)) * min(1.0, s / 8)

    expected = 40 * plan.lr if plan.lr is not None else sum(rate(s) for s in range(plan.start_step, 40))
    assert float(-w.detach()) == pytest.approx(expected, rel=1e-12)


def test_warmup_is_validated_and_multiplies_the_schedule():
    with pytest.raises(ValueError, match="train.warmup_steps"):
        TrainConfig(warmup_steps=-1)
    cfg = TrainConfig(lr=0.1, schedule="step", warmup_steps=10, milestones=(0.5,))
    assert [cfg.lr_at(s, 100) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.05, 0.1, 0.01])


# -- the reinit control follows the rewind mode --------------------------------------------------------
@pytest.mark.parametrize(
    "rewind, start_step, steps", [({"step": 25}, 25, 17), ("init", 0, 42), ("none", 0, 42), ({"lr_step": 30}, 0, 42)]
)
def test_reinit_trains_the_steps_the_ticket_trains(digits, rewind, start_step, steps):
    train = SGD_COSINE if rewind != "none" else TrainConfig(epochs=2, batch_size=64, lr=0.05, finetune_lr=0.01)
    traj = Trajectory(_config(rewind=rewind, control="reinit", train=train), data=digits)
    traj.run_round()
    ticket, control = traj.round_jobs()
    assert control.start is traj.state.reinit
    assert control.plan.start_step == start_step and control.plan.lr is None
    if start_step:  # late rewinding: the fresh weights stand in for w_k, on the ticket's steps and batches
        assert control.plan == ticket.plan and control.data_round == ticket.data_round == 0
    assert traj.run_round()["epochs"] == pytest.approx(steps * 64 / N_TRAIN)


def test_late_rewinding_keeps_its_state_across_a_resume(digits, tmp_path):
    cfg = _config(rewind={"step": 9}, rounds=3, control="reinit")
    full = Trajectory(cfg, data=digits)
    records = full.run()
    part = Trajectory(cfg, data=digits)
    part.run_round()
    part.state.save(tmp_path / "s.pt")
    from glth_core.trajectory import TrajectoryState

    resumed = Trajectory(cfg, data=digits, state=TrajectoryState.load(tmp_path / "s.pt"))
    rest = resumed.run()
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rs]  # noqa: E731
    assert strip(rest) == strip(records) and torch.equal(resumed.state.last.coeffs, full.state.last.coeffs)


def test_a_step_past_train_steps_is_refused_with_the_config():
    with pytest.raises(ValueError, match=r"^rewind.lr_step: 8 is not below the 8 steps of a round \(train.steps\)"):
        _config(rewind={"lr_step": 8}, train=TrainConfig(steps=8))
    _config(rewind={"step": 7}, train=TrainConfig(steps=8))
