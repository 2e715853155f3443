"""Linear mode connectivity and instability (Frankle, Dziugaite, Roy & Carbin 2020), in any dictionary.

Per round (``lmc_points: N`` on a trajectory, N ≥ 3; 0 = off): two copies of the round's ticket
train from the round's own start (its rewind point, under the round's mask, with the round's
schedule steps) on two different data orders, ``round_generator(seed, round, 4)`` and ``(…, 5)``
(streams no other randomness uses). The path between their trained weights is linear in
coefficient space under the mask, w(α) = w_a + α (w_b − w_a) for α in N evenly spaced points of
[0, 1] (endpoints w_a and w_b themselves; free parameters interpolated alike), and the *error
barrier* of a split is

    barrier = max_α E(w(α)) − (E(w_a) + E(w_b)) / 2,     E = 1 − accuracy,

the height of the path's worst error above the mean of its ends. Because the ends are points of
the path, max ≥ each end ≥ their mean, so a barrier is never negative (``error_barrier`` also
clamps float noise at 0); two copies that train identically (the same data order) are one point,
w(α) = w_a exactly, and their barrier is exactly 0. The paper calls a network *stable* when the
barrier is ≈ 0 (they use 2%); late rewinding to a step k where training is stable is when IMP finds
matching tickets. Recorded as ``lmc_barrier_test`` and ``lmc_barrier_train`` (and ``lmc_seconds``,
the two trainings and the 2N evaluations per split), on every round from 0 (the dense network).

On a network with BatchNorm the running statistics are not interpolated: every point of the path,
ends included, has them recomputed on the fixed training subset that train accuracy is measured on
(``train_eval_size``), in training-mode batches of the round's batch size, averaged equally over the
batches (as ``torch.optim.swa_utils.update_bn`` does); stale statistics would measure another
network. ``lmc_bn_images`` records how many images that took (absent without BatchNorm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from glth_core.evaluation import eval_batches, evaluate, train_eval_split
from glth_core.parameterization import Parameterization, Weights
from glth_core.schedule import SchedulePlan, TrainConfig
from glth_core.streams import LMC_STREAMS, round_generator
from glth_core.train import train

__all__ = ["LMC_COLUMNS", "check_lmc", "error_barrier", "interpolate", "path_errors", "copy_generators", "instability"]

LMC_COLUMNS: dict[str, type] = {
    "lmc_barrier_test": float,
    "lmc_barrier_train": float,
    "lmc_seconds": float,
    "lmc_bn_images": int,
}
SPLITS = ("test", "train")


def check_lmc(points) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or not (points == 0 or points >= 3):
        raise ValueError(
            f"lmc_points: must be 0 (off) or an integer ≥ 3 (points on the path, ends included), got {points!r}"
        )


def error_barrier(errors: Sequence[float]) -> float:
    """max(errors) − (errors[0] + errors[-1]) / 2 of errors along a path from its first to its last
    point; ≥ 0 by construction (the ends are on the path), float noise clamped at 0."""
    errors = [float(e) for e in errors]
    if len(errors) < 2:
        raise ValueError(f"lmc_points: a path needs at least its two ends, got {len(errors)} errors")
    return max(0.0, max(errors) - 0.5 * (errors[0] + errors[-1]))


def interpolate(a: Weights, b: Weights, alpha: float) -> Weights:
    """w_a + α (w_b − w_a), coefficients and free parameters alike; exactly ``a`` at α = 0 and
    ``b`` at α = 1 (and exactly ``a`` everywhere when a = b). Integer buffers (BatchNorm's batch
    counts) are ``a``'s; ``recompute_statistics`` replaces the running statistics."""
    if alpha == 0.0:
        return a
    if alpha == 1.0:
        return b
    return Weights(
        a.coeffs + alpha * (b.coeffs - a.coeffs),
        {n: v + alpha * (b.free[n] - v) if v.is_floating_point() else v for n, v in a.free.items()},
    )


@torch.no_grad()
def recompute_statistics(
    param: Parameterization, w: Weights, mask: torch.Tensor, x: torch.Tensor, batch_size: int
) -> Weights:
    """``w`` with every BatchNorm's running statistics recomputed from scratch on ``x``: reset, then
    one training-mode pass in batches of ``batch_size``, each batch weighing equally."""
    norms = {
        name: m
        for name, m in param.model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }
    free = dict(w.free)
    for name in norms:
        for buffer, fresh in (
            ("running_mean", torch.zeros_like),
            ("running_var", torch.ones_like),
            ("num_batches_tracked", torch.zeros_like),
        ):
            key = f"{name}.{buffer}" if name else buffer
            free[key] = fresh(free[key])
    out = Weights(w.coeffs, free)
    kept = param.kept_columns(mask)
    params = param.params(out, mask, kept)
    momenta = {name: m.momentum for name, m in norms.items()}
    try:
        for m in norms.values():
            m.momentum = None  # a cumulative average over the batches
        with param.mode(training=True):
            for xb, _ in eval_batches(x, x, batch_size):
                param.apply(params, xb, kept)
    finally:
        for name, m in norms.items():
            m.momentum = momenta[name]
    return out


def path_errors(
    param: Parameterization,
    a: Weights,
    b: Weights,
    mask: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    points: int,
    batch_size: int = 2048,
    statistics: tuple[torch.Tensor, int] | None = None,
) -> list[float]:
    """E = 1 − accuracy at ``points`` evenly spaced points from ``a`` to ``b`` (ends included).
    ``statistics``: (images, batch size) that each point's BatchNorm statistics are recomputed on
    (``recompute_statistics``) before it is evaluated; None keeps the stored ones."""
    alphas = [i / (points - 1) for i in range(points)]

    def point(t: float) -> Weights:
        w = interpolate(a, b, t)
        return w if statistics is None else recompute_statistics(param, w, mask, *statistics)

    return [1.0 - evaluate(param, point(t), mask, x, y, batch_size).accuracy for t in alphas]


def copy_generators(seed: int, round_index: int) -> tuple[torch.Generator, torch.Generator]:
    """The two copies' data orders of a round (``LMC_STREAMS``)."""
    return tuple(round_generator(seed, round_index, stream) for stream in LMC_STREAMS)


def instability(
    param: Parameterization,
    start: Weights,
    mask: torch.Tensor,
    inputs: dict,
    targets: dict,
    cfg: TrainConfig,
    generators: Sequence[torch.Generator],
    points: int,
    plan: SchedulePlan = SchedulePlan(),
    augment=None,
) -> dict:
    """Train two copies from ``start`` under ``mask`` over ``plan``'s steps, one on each of
    ``generators``' data orders, and return {"lmc_barrier_<split>": barrier} for the test and train
    splits (``inputs[split]`` as the parameterization sees them, ``targets[split]`` the labels);
    ``augment``: the trajectory's ``glth_core.data.augment.Augment`` (or None)."""
    check_lmc(points)
    if points == 0:
        raise ValueError("lmc_points: 0 means off; give the number of points on the path")
    x, y = inputs["train"], targets["train"]
    a, _ = train(param, start, mask, x, y, cfg, generators[0], plan=plan, augment=augment)
    b, _ = train(param, start, mask, x, y, cfg, generators[1], plan=plan, augment=augment)
    evaluated = {
        "test": (inputs["test"], targets["test"]),
        "train": train_eval_split(x, y, cfg.train_eval_size),
    }  # the round's own train evaluation
    statistics = (evaluated["train"][0], cfg.batch_size) if param.buffer_names else None
    out = {
        f"lmc_barrier_{split}": error_barrier(
            path_errors(param, a, b, mask, *evaluated[split], points, cfg.eval_batch_size, statistics)
        )
        for split in SPLITS
    }
    if statistics is not None:
        out["lmc_bn_images"] = int(statistics[0].shape[0])
    return out
