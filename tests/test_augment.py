"""Augmentation of training batches (``train.augment: crop_flip``): the batched gather equals a plain
per-image pad/slice/flip for the same draws, and the draws are a function of (data-order seed, step),
so a rerun, a late rewind and a resume see the same augmented batches bit for bit on CPU."""

from __future__ import annotations

import pytest
import torch

from glth_core import data as datasets
from glth_core.batched_train import train_batched
from glth_core.data.augment import (
    PAD,
    Augment,
    augmenter,
    crop_flip,
    draw_crop_flip,
    step_generator,
)
from glth_core.experiment import TIMING_COLUMNS
from glth_core.imp import Trajectory, TrajectoryConfig, TrajectoryState, round_generator
from glth_core.train import SchedulePlan, TrainConfig, train

AUGMENTED = TrainConfig(steps=12, batch_size=64, lr=0.05, momentum=0.9, augment="crop_flip")


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _config(**kw) -> TrajectoryConfig:
    base = {"dataset": "digits", "model": "cnn_paper", "tau": 0.3, "rounds": 2, "seed": 0, "train": AUGMENTED}
    base.update(kw)
    return TrajectoryConfig(**base)


def _same(a, b) -> bool:
    return torch.equal(a.coeffs, b.coeffs) and all(torch.equal(a.free[k], b.free[k]) for k in a.free)


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in records]


def per_image(x: torch.Tensor, rows, cols, flips, fill) -> torch.Tensor:
    """The reference: one image at a time, pad with the fill, slice the window, mirror with torch.flip."""
    out = []
    n, c, h, w = x.shape
    for i in range(n):
        padded = torch.empty(c, h + 2 * PAD, w + 2 * PAD)
        for ch in range(c):
            padded[ch].fill_(float(fill[ch]))
        padded[:, PAD : PAD + h, PAD : PAD + w] = x[i]
        r, k = int(rows[i]), int(cols[i])
        crop = padded[:, r : r + h, k : k + w]
        out.append(torch.flip(crop, dims=[2]) if bool(flips[i]) else crop)
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(64, 3, 32, 32), (50, 1, 8, 8), (17, 2, 5, 9)])
def test_batched_crop_flip_equals_a_per_image_loop(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    fill = torch.tensor([-1.5, 0.25, 3.0][: shape[1]])
    rows, cols, flips = draw_crop_flip(shape[0], step_generator(5, 3))
    got = crop_flip(x, rows, cols, flips, fill)
    assert got.shape == x.shape
    assert torch.equal(got, per_image(x, rows, cols, flips, fill))
    # the draws did vary: some crops moved, some images flipped and some not
    assert 0 < int(flips.sum()) < shape[0] and len(set(rows.tolist())) > 1 and len(set(cols.tolist())) > 1


def test_draws_cover_every_offset_and_flip_half_the_images():
    rows, cols, flips = draw_crop_flip(20_000, step_generator(0, 0))
    for offsets in (rows, cols):
        counts = torch.bincount(offsets, minlength=2 * PAD + 1)
        assert len(counts) == 2 * PAD + 1 and int(counts.min()) > 2000  # uniform over 0…8: ~2,222 each
    assert abs(float(flips.double().mean()) - 0.5) < 0.02


def test_draws_are_a_function_of_seed_and_step():
    same = [draw_crop_flip(128, step_generator(7, 11)) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*same))
    for other in (step_generator(7, 12), step_generator(8, 11)):
        assert not torch.equal(draw_crop_flip(128, other)[0], same[0][0])


def test_a_stream_depends_on_the_generator_seed_not_on_what_it_drew():
    aug = Augment("crop_flip", (0.0,))
    x = torch.randn(32, 1, 8, 8)
    fresh, used = round_generator(3, 1), round_generator(3, 1)
    torch.randperm(100, generator=used)  # the data order drew from it: the augmentation is unchanged
    assert torch.equal(aug.stream(fresh)(x, 4), aug.stream(used)(x, 4))
    assert not torch.equal(aug.stream(round_generator(3, 2))(x, 4), aug.stream(fresh)(x, 4))


def test_the_padding_is_a_black_raw_pixel(digits):
    """Digits have black pixels (raw 0, the smallest value): the padding is exactly their stored value."""
    aug = augmenter("crop_flip", digits)
    assert aug.fill == (float(digits.train_x.min()),) and aug.fill[0] < 0
    assert augmenter("crop_flip", datasets.load("digits", normalize="none")).fill == (0.0,)
    assert augmenter("none", digits) is None


def test_augmentation_changes_training_and_two_runs_agree(digits):
    runs = [Trajectory(_config(rounds=1), data=digits) for _ in range(2)]
    plain = Trajectory(_config(rounds=1, train=TrainConfig(steps=12, batch_size=64, lr=0.05)), data=digits)
    a, b, c = (_strip([t.run_round()]) for t in (*runs, plain))
    assert a == b and _same(runs[0].state.last, runs[1].state.last)
    assert not _same(runs[0].state.last, plain.state.last) and a != c


def test_a_late_rewind_replays_the_augmented_steps_k_to_T_bit_for_bit(digits):
    """Round 1 rewound to step k under round 0's (dense) mask redoes steps k…T of round 0 exactly:
    same batches, same crops and flips."""
    traj = Trajectory(_config(rewind={"step": 5}), data=digits)
    traj.run_round()
    dense = traj.state.last.clone()
    traj.state.mask = torch.ones_like(traj.state.mask)
    (job,) = traj.round_jobs()
    assert job.plan.start_step == 5 and job.data_round == 0
    traj.run_round()
    assert _same(traj.state.last, dense)


def test_training_from_step_k_sees_the_batches_a_run_from_0_sees(digits):
    """``train`` with SchedulePlan(start_step=k) from w_k ends where the run from 0 ends (SGD without
    momentum: no optimizer state to carry), for the same data stream's augmentation."""
    traj = Trajectory(
        _config(train=TrainConfig(steps=12, batch_size=64, lr=0.05, momentum=0.0, augment="crop_flip")), data=digits
    )
    x, y, cfg, mask = traj.inputs["train"], digits.train_y, traj.config.train, traj.state.mask
    seen = {}
    full, _ = train(
        traj.param,
        traj.state.init,
        mask,
        x,
        y,
        cfg,
        round_generator(0, 0),
        augment=traj.augment,
        on_step=lambda n, w: seen.setdefault(n, w.clone()) if n == 7 else None,
    )
    rest, steps = train(
        traj.param,
        seen[7],
        mask,
        x,
        y,
        cfg,
        round_generator(0, 0),
        plan=SchedulePlan(start_step=7),
        augment=traj.augment,
    )
    assert steps == 5 and _same(full, rest)


def test_a_resumed_trajectory_equals_an_uninterrupted_one(digits, tmp_path):
    cfg = _config(rewind={"step": 5}, rounds=3)
    full = Trajectory(cfg, data=digits)
    records = full.run()
    part = Trajectory(cfg, data=digits)
    part.run_round()
    part.state.save(tmp_path / "s.pt")
    resumed = Trajectory(cfg, data=digits, state=TrajectoryState.load(tmp_path / "s.pt"))
    rest = resumed.run()
    assert _strip(rest) == _strip(records) and _same(resumed.state.last, full.state.last)


def test_batched_seeds_augment_each_from_its_own_stream_bit_for_bit(digits):
    configs = [_config(seed=s) for s in (0, 1)]
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
        augment=members[0].augment,
    )
    for t, c, w in zip(members, configs, together):
        alone, _ = train(
            t.param, t.state.init, t.state.mask, x, digits.train_y, cfg, round_generator(c.seed, 0), augment=t.augment
        )
        assert _same(alone, w)


def test_an_input_bottleneck_is_refused_at_run_time_too(digits):
    with pytest.raises(ValueError, match="train.augment: crop_flip needs image inputs"):
        Trajectory(
            _config(model="mlp_300_100", dictionary={"kind": "bottleneck", "layer": "1", "basis": "dct"}), data=digits
        )
