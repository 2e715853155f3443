"""TrainConfig's GPU options: validated, out of the content hash at their defaults, no-ops on CPU."""

from __future__ import annotations

import pytest
import torch

from glth_core import data as datasets
from glth_core.imp import Trajectory
from glth_core.streams import round_generator
from glth_core.train import CHECK_EVERY, DivergedError, TrainConfig, run_steps, train
from glth_core.trajectory import TrajectoryConfig


def test_precision_is_validated():
    with pytest.raises(ValueError, match="train.precision"):
        TrainConfig(precision="fp16")


def test_gpu_options_stay_out_of_the_hash_at_their_defaults():
    d = TrainConfig().identity()  # what the content hash reads: fields away from their defaults
    assert "precision" not in d and "channels_last" not in d  # trial ids from before the options stay put
    bf16 = TrainConfig(precision="bf16", channels_last=True)
    assert bf16.to_dict()["precision"] == "bf16" and bf16.to_dict()["channels_last"] is True
    assert TrainConfig(**bf16.to_dict()) == bf16
    plain, fast = TrajectoryConfig(), TrajectoryConfig(train=bf16)
    assert plain.content_hash() != fast.content_hash()


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_gpu_options_do_not_change_cpu_results(precision):
    digits = datasets.load("digits")
    results = []
    for cfg in (TrainConfig(steps=5), TrainConfig(steps=5, precision=precision, channels_last=True)):
        t = Trajectory(TrajectoryConfig(model="cnn_paper", train=cfg), data=digits)
        trained, _ = train(
            t.param, t.state.init, t.state.mask, t.inputs["train"], digits.train_y, cfg, round_generator(0, 0)
        )
        results.append(trained)
    assert torch.equal(results[0].coeffs, results[1].coeffs)
    assert all(torch.equal(results[0].free[n], results[1].free[n]) for n in results[0].free)


@pytest.mark.parametrize(
    "total, bad",  # bad: {step: (trajectory, value)}; losses are checked CHECK_EVERY steps at a time
    [
        (20, {5: (0, float("inf"))}),  # inside the first chunk, steps after it run before the check
        (20, {11: (2, float("nan")), 12: (0, float("inf"))}),  # the earlier step wins over the lower index
        (20, {19: (1, float("-inf"))}),  # the last, short chunk is checked too
        (20, {8: (1, float("nan")), 9: (0, float("nan"))}),  # a chunk's first step
    ],
)
@pytest.mark.parametrize("trajectories", [None, 3])
def test_divergence_is_reported_at_its_first_step_whatever_the_check_interval(total, bad, trajectories):
    """``run_steps`` checks the losses every ``CHECK_EVERY`` steps; the error names the first
    non-finite step, its value and trajectory, as a check at every step would."""
    leaf = torch.zeros(3 if trajectories else 1, requires_grad=True)
    seen = []

    def losses_at(step: int) -> torch.Tensor:
        seen.append(step)
        values = torch.ones(3)
        for s, (k, value) in bad.items():
            if s <= step and (s == step or trajectories is None):
                values[k if trajectories else 0] = value
        losses = leaf * 0 + values[: leaf.shape[0]]
        return losses if trajectories else losses[0]

    first = min(bad)
    k, value = bad[first]
    names = lambda i: f"trajectory {i}"  # noqa: E731
    with pytest.raises(DivergedError) as err:
        run_steps([leaf], TrainConfig(lr=0.1), total, losses_at, who=names if trajectories else None)
    where = f" in trajectory {k}" if trajectories else ""
    assert str(err.value) == f"training loss became {value} at step {first} (lr 0.1){where}"
    assert err.value.index == (k if trajectories else None)
    assert first <= seen[-1] < first + CHECK_EVERY
