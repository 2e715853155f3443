"""TrainConfig's GPU options: validated, out of the content hash at their defaults, no-ops on CPU."""

from __future__ import annotations

import pytest
import torch

from glth_core import data as datasets
from glth_core.imp import Trajectory
from glth_core.streams import round_generator
from glth_core.train import TrainConfig, train
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
