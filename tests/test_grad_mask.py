"""Training masks the gradients, not the coefficients: the same numbers, bit for bit.

``train`` used to multiply the coefficients by the round's mask in every forward, canonical's scope
tensors split out of one flat leaf; it now multiplies the gradients by the mask
(``parameterization.mask_gradients``) and trains canonical's tensors as separate leaves. The previous
path stays callable here (``previous_train``: today's ``train`` before that change, written with the
same pieces) and a few IMP rounds of both are compared exactly (torch.equal): trained weights, the
next mask and the evaluation, for SGD (plain; momentum with weight decay) and Adam (with and without
weight decay). The same check on whole ``Trajectory`` rounds (lenet_300_100 on MNIST and digits
cases of every path, batched seeds included) was run once against rows saved before the change.
"""

from __future__ import annotations

import pytest
import torch

from glth_core import data as datasets
from glth_core.imp import Trajectory
from glth_core.loss import training_loss
from glth_core.sparsify import sparsify
from glth_core.streams import round_generator
from glth_core.train import TrainConfig, batch_indices, evaluate, run_steps, train
from glth_core.train import dense_or_float as float_mask
from glth_core.trajectory import TrajectoryConfig

ROUNDS, TAU, STEPS = 3, 0.3, 15  # digits' 1,293 training images: 11 batches an epoch, so a round crosses one
OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.05},
    "sgd-momentum-wd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-3},
    "adam": {"optimizer": "adam", "lr": 2e-3},
    "adam-wd": {"optimizer": "adam", "lr": 2e-3, "weight_decay": 5e-3},
}
DICTIONARIES = {
    "canonical": {"kind": "canonical"},  # every parameter a separate leaf
    "canonical-weights": {"kind": "canonical", "scope": "weights"},  # the biases free
    "bottleneck": {"kind": "bottleneck", "layer": "1", "basis": "identity"},  # one flat leaf, kept columns
}


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def previous_train(param, start, mask, x, y, cfg, generator):
    """``glth_core.train.train`` as it was: the flat coefficients one leaf, multiplied by the mask
    in every forward."""
    w = start.clone()
    w.coeffs.mul_(mask)
    leaves = [w.coeffs.requires_grad_(True), *(w.free[n].requires_grad_(True) for n in param.free_names)]
    total = cfg.total_steps(x.shape[0])
    kept = param.kept_columns(mask)
    batches = batch_indices(x.shape[0], cfg.batch_size, generator, x.device)
    factor = float_mask(mask, w.coeffs.dtype)

    def losses_at(step: int) -> torch.Tensor:
        idx = next(batches)
        return training_loss(param.forward(w, factor, x.index_select(0, idx), kept), y.index_select(0, idx))

    with param.mode(training=True):
        run_steps(leaves, cfg, total, losses_at)
    return w.masked(mask)


def watch_pruned(mask):
    """(counts, on_step): ``on_step`` appends to ``counts`` how many pruned coefficients are not 0."""
    counts = []

    def on_step(step, w):
        counts.append(int(torch.count_nonzero(w.coeffs.detach()[~mask])))

    return counts, on_step


@pytest.mark.parametrize("dictionary", DICTIONARIES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_masked_gradients_train_the_same_numbers(digits, dictionary, optimizer):
    cfg = TrainConfig(steps=STEPS, batch_size=128, **OPTIMIZERS[optimizer])
    t = Trajectory(TrajectoryConfig(dictionary=DICTIONARIES[dictionary], tau=TAU, seed=3, train=cfg), data=digits)
    param, init, mask = t.param, t.state.init, t.state.mask
    x, y, val = t.inputs["train"], digits.train_y, t.inputs["val"]
    for r in range(ROUNDS):
        nonzero, on_step = watch_pruned(mask)
        now, _ = train(param, init, mask, x, y, cfg, round_generator(3, r), on_step=on_step)
        assert nonzero == [0] * STEPS, f"round {r}"  # pruned coefficients exactly 0 after every step
        before = previous_train(param, init, mask, x, y, cfg, round_generator(3, r))
        assert torch.equal(now.coeffs, before.coeffs), f"round {r}"
        assert now.free.keys() == before.free.keys()
        assert all(torch.equal(now.free[n], before.free[n]) for n in now.free), f"round {r}"
        e_now, e_before = (
            evaluate(param, now, mask, val, digits.val_y),
            evaluate(param, before, mask, val, digits.val_y),
        )
        assert (e_now.loss, e_now.accuracy) == (e_before.loss, e_before.accuracy), f"round {r}"
        next_mask = sparsify(now.coeffs, mask, TAU)
        assert torch.equal(next_mask, sparsify(before.coeffs, mask, TAU))
        assert int(next_mask.sum()) < int(mask.sum())  # the next round trains a smaller ticket
        mask = next_mask
