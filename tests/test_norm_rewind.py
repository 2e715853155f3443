"""Norm-preserving rewind (``rewind_norm``): the rewound weights of every tensor (or part) have
their initial norm in model coordinates, density 1 changes nothing, and the options that cannot
mean anything are refused in one line."""

from __future__ import annotations

import math

import pytest
import torch

from glth_core import data as datasets
from glth_core.imp import Trajectory
from glth_core.imp_kind import EXPERIMENT, _run_name
from glth_core.rewind import norm_segments, preserve_norm
from glth_core.train import TrainConfig
from glth_core.trajectory import TrajectoryConfig

TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.05)
COMPOSITE = {
    "kind": "composite",
    "parts": [{"kind": "bottleneck", "layer": "1", "basis": "dct"}, {"kind": "canonical"}],
}


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _traj(digits, **kw) -> Trajectory:
    base = dict(dataset="digits", model="mlp_300_100", tau=0.5, rounds=3, seed=0, train=TRAIN)
    return Trajectory(TrajectoryConfig(**{**base, **kw}), data=digits)


def _model_norms(traj, coeffs: torch.Tensor) -> dict[str, float]:
    """Norms of the scope tensors W = D a in model coordinates (float64)."""
    w = traj.dictionary.unflatten(traj.dictionary.synthesize(coeffs))
    return {n: float(t.double().norm()) for n, t in w.items()}


def _after_rounds(digits, n: int, **kw) -> Trajectory:
    traj = _traj(digits, **kw)
    for _ in range(n):
        traj.run_round()
    return traj


@pytest.mark.parametrize(
    "dictionary",
    [
        {"kind": "canonical"},
        {"kind": "bottleneck", "layer": "1", "basis": "dct"},
        {"kind": "blockdiag", "block": "random", "seed": 1},
        COMPOSITE,
    ],
    ids=["canonical", "bottleneck", "blockdiag", "composite"],
)
def test_tensor_mode_gives_every_rewound_tensor_its_initial_norm(digits, dictionary):
    traj = _after_rounds(digits, 2, dictionary=dictionary, rewind_norm="tensor")
    mask, init = traj.state.mask, traj.state.init
    (job,) = traj.round_jobs()
    start = job.start.coeffs * mask
    before, after, plain = (
        _model_norms(traj, init.coeffs),
        _model_norms(traj, start),
        _model_norms(traj, init.coeffs * mask),
    )
    pruned = [n for n in before if plain[n] < before[n] * (1 - 1e-3)]
    assert pruned, "the round prunes some tensor"
    for name in before:
        assert after[name] == pytest.approx(before[name], rel=1e-5), name
    assert any(plain[n] < 0.9 * before[n] for n in pruned)  # without rescaling the kept weights are smaller
    assert job.start.free.keys() == init.free.keys()
    assert all(torch.equal(job.start.free[k], init.free[k]) for k in init.free)  # free parameters untouched


@pytest.mark.parametrize("dictionary", [{"kind": "random", "method": "fast"}, COMPOSITE], ids=["random", "composite"])
def test_part_mode_gives_every_part_its_initial_norm(digits, dictionary):
    traj = _after_rounds(digits, 1, dictionary=dictionary, rewind_norm="part")
    mask, a0 = traj.state.mask, traj.state.init.coeffs
    (job,) = traj.round_jobs()
    start = job.start.coeffs * mask
    ranges = (
        [(s, e) for _, s, e in traj.dictionary.part_ranges()]
        if dictionary["kind"] == "composite"
        else [(0, a0.numel())]
    )
    assert norm_segments(traj.dictionary, "part") == ranges
    for s, e in ranges:
        assert float(start[s:e].double().norm()) == pytest.approx(float(a0[s:e].double().norm()), rel=1e-5)
        if not bool(mask[s:e].all()):  # a pruned part did get rescaled
            assert float(start[s:e].double().norm()) > 1.05 * float((a0 * mask)[s:e].double().norm())
    assert not bool(mask.all())
    # orthonormal parts: the scope's weights in model coordinates keep their norm too
    w0, w = traj.dictionary.synthesize(a0), traj.dictionary.synthesize(start)
    assert float(w.double().norm()) == pytest.approx(float(w0.double().norm()), rel=1e-5)


def test_density_one_changes_nothing_bit_for_bit(digits):
    traj = _traj(digits, rewind_norm="tensor")
    ones = torch.ones_like(traj.state.mask)
    out = preserve_norm(traj.state.init, ones, norm_segments(traj.dictionary, "tensor"))
    assert torch.equal(out.coeffs, traj.state.init.coeffs)
    (job,) = traj.round_jobs()  # round 0: the dense start is the initialization itself
    assert job.start is traj.state.init
    a, b = _traj(digits, rewind_norm="tensor").run_round(), _traj(digits).run_round()
    assert (a["test_accuracy"], a["train_loss"]) == (b["test_accuracy"], b["train_loss"])


def test_rescaling_is_the_ratio_of_norms_per_segment():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10, generator=g, dtype=torch.float64)
    mask = torch.tensor([1, 0, 1, 0, 0, 1, 1, 1, 1, 1], dtype=torch.bool)
    from glth_core.train import Weights

    out = preserve_norm(Weights(a.clone()), mask, [(0, 5), (5, 10)]).coeffs
    s0 = a[:5].norm() / a[:5][mask[:5]].norm()
    assert torch.allclose(out[:5], a[:5] * s0, rtol=1e-12) and torch.equal(out[5:], a[5:])  # all kept: left alone
    empty = preserve_norm(Weights(a.clone()), torch.zeros(10, dtype=torch.bool), [(0, 10)]).coeffs
    assert torch.equal(empty, a)  # nothing kept: nothing to rescale


def test_random_masks_shrink_the_init_by_sqrt_density_and_imp_masks_less(digits):
    """The docstring's claim, measured: under control random_mask the kept initial coefficients of a
    random rotation hold √ρ of w_0's norm; IMP's magnitude masks keep more of it."""
    for control, check in (
        ("random_mask", lambda r, rho: abs(r - math.sqrt(rho)) < 0.03 * math.sqrt(rho)),
        ("none", lambda r, rho: r > 1.5 * math.sqrt(rho)),
    ):
        traj = _after_rounds(digits, 3, dictionary={"kind": "random", "method": "fast"}, control=control, rounds=4)
        m, a0 = traj.state.mask, traj.state.init.coeffs
        rho = float(m.double().mean())
        ratio = float((a0 * m).double().norm() / a0.double().norm())
        assert rho == pytest.approx(0.125, rel=1e-3) and check(ratio, rho), (control, ratio, rho)


def test_reinit_control_rescales_its_fresh_start_too(digits):
    traj = _after_rounds(digits, 1, control="reinit", rewind_norm="tensor")
    ticket, fresh = traj.round_jobs()
    mask = traj.state.mask
    for job, ref in ((ticket, traj.state.init), (fresh, traj.state.reinit)):
        got, want = _model_norms(traj, job.start.coeffs * mask), _model_norms(traj, ref.coeffs)
        assert all(got[n] == pytest.approx(want[n], rel=1e-5) for n in want)


def test_late_rewinding_keeps_the_norm_of_w_k(digits):
    traj = _after_rounds(digits, 1, rewind={"step": 10}, rewind_norm="tensor")
    (job,) = traj.round_jobs()
    got, want = (
        _model_norms(traj, job.start.coeffs * traj.state.mask),
        _model_norms(traj, traj.state.rewind_point.coeffs),
    )
    assert all(got[n] == pytest.approx(want[n], rel=1e-5) for n in want)


def test_refusals_are_one_line_naming_rewind_norm(digits):
    with pytest.raises(ValueError, match=r"^rewind_norm: 'sometimes' is not one of none, tensor, part$"):
        TrajectoryConfig(rewind_norm="sometimes")
    with pytest.raises(ValueError, match=r"^rewind_norm: part rescales a rewound start; rewind none continues"):
        TrajectoryConfig(rewind_norm="part", rewind="none", train=TrainConfig(finetune_lr=0.01))
    with pytest.raises(ValueError, match=r"^rewind_norm: tensor rescales a rewound start; rewind lrstep3"):
        TrajectoryConfig(rewind_norm="tensor", rewind={"lr_step": 3})
    # tensor mode on a rotation of several tensors: refused at spec time, before any basis is built
    from orchestrator import spec

    text = "name: n\ndataset: digits\nseeds: [0]\nrounds: 2\nrewind_norm: tensor\ndictionary: {kind: random, method: fast}\n"
    with pytest.raises(spec.SpecError) as e:
        spec.parse(text)
    assert str(e.value).startswith(
        "rewind_norm: tensor rescales each tensor's own coefficients; the dictionary's kind "
        "random mixes its 6 scope tensors (use rewind_norm part)"
    )
    composite = text.replace(
        "{kind: random, method: fast}", "{kind: composite, parts: [{kind: canonical, scope: ['1.*']}, {kind: random}]}"
    )
    with pytest.raises(
        spec.SpecError, match=r"^rewind_norm: tensor .* part 1 \(kind random\) mixes its 4 scope tensors"
    ):
        spec.parse(composite)
    single = text.replace("{kind: random, method: fast}", "{kind: random, scope: ['3.weight']}")
    assert spec.parse(single).trials[0].config.rewind_norm == "tensor"  # one tensor: its own coefficients
    with pytest.raises(ValueError, match="^rewind_norm: tensor needs coefficients"):
        _traj(digits, dictionary={"kind": "random"}, rewind_norm="tensor")  # and at build time too
    assert len(spec.parse(text.replace("tensor", "part")).trials) == 1


def test_a_norm_preserving_trajectory_is_its_own_curve():
    c = TrajectoryConfig(dictionary={"kind": "random", "method": "fast"}, rewind_norm="part")
    assert EXPERIMENT.describe(c)["dictionary"] == "random-fast-normpart"
    assert _run_name(c) == "random-fast-normpart-tau0.2-init-s0"
    assert EXPERIMENT.describe(TrajectoryConfig())["dictionary"] == "canonical"
    assert "rewind_norm" not in TrajectoryConfig().identity()


def test_batched_seeds_rescale_as_separate_trajectories_do(digits):
    from glth_core.batched import BatchedTrajectory

    configs = [
        TrajectoryConfig(dataset="digits", tau=0.5, rounds=3, seed=s, train=TRAIN, rewind_norm="tensor") for s in (0, 1)
    ]
    batched = BatchedTrajectory(configs, data=digits).run()
    for config, rows in zip(configs, batched):
        alone = Trajectory(config, data=digits).run()
        assert [r["kept"] for r in rows] == [r["kept"] for r in alone]
        for a, b in zip(rows, alone):
            assert (
                abs(a["test_accuracy"] - b["test_accuracy"]) <= 1e-6 and abs(a["train_loss"] - b["train_loss"]) <= 1e-5
            )
