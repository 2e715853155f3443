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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from glth_core.rewind import round_generator
from glth_core.schedule import Plan, TrainConfig
from glth_core.train import Parameterization, Weights, evaluate, train, train_eval_split

__all__ = ["LMC_STREAMS", "LMC_COLUMNS", "check_lmc", "error_barrier", "interpolate", "path_errors", "copy_generators",
           "instability"]

#: round_generator streams of the two copies' data orders (0: data, 1: random masks, 2, 3: strong tickets)
LMC_STREAMS = (4, 5)
LMC_COLUMNS: dict[str, type] = {"lmc_barrier_test": float, "lmc_barrier_train": float, "lmc_seconds": float}
SPLITS = ("test", "train")


def check_lmc(points) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or not (points == 0 or points >= 3):
        raise ValueError(f"lmc_points: must be 0 (off) or an integer ≥ 3 (points on the path, ends included), got {points!r}")


def error_barrier(errors: Sequence[float]) -> float:
    """max(errors) − (errors[0] + errors[-1]) / 2 of errors along a path from its first to its last
    point; ≥ 0 by construction (the ends are on the path), float noise clamped at 0."""
    errors = [float(e) for e in errors]
    if len(errors) < 2:
        raise ValueError(f"lmc_points: a path needs at least its two ends, got {len(errors)} errors")
    return max(0.0, max(errors) - 0.5 * (errors[0] + errors[-1]))


def interpolate(a: Weights, b: Weights, alpha: float) -> Weights:
    """w_a + α (w_b − w_a), coefficients and free parameters alike; exactly ``a`` at α = 0 and
    ``b`` at α = 1 (and exactly ``a`` everywhere when a = b)."""
    if alpha == 0.0:
        return a
    if alpha == 1.0:
        return b
    return Weights(a.coeffs + alpha * (b.coeffs - a.coeffs), {n: v + alpha * (b.free[n] - v) for n, v in a.free.items()})


def path_errors(param: Parameterization, a: Weights, b: Weights, mask: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                points: int, batch_size: int = 2048) -> list[float]:
    """E = 1 − accuracy at ``points`` evenly spaced points from ``a`` to ``b`` (ends included)."""
    alphas = [i / (points - 1) for i in range(points)]
    return [1.0 - evaluate(param, interpolate(a, b, t), mask, x, y, batch_size).accuracy for t in alphas]


def copy_generators(seed: int, round_index: int) -> tuple[torch.Generator, torch.Generator]:
    """The two copies' data orders of a round (``LMC_STREAMS``)."""
    return tuple(round_generator(seed, round_index, stream) for stream in LMC_STREAMS)


def instability(param: Parameterization, start: Weights, mask: torch.Tensor, inputs: dict, targets: dict,
                cfg: TrainConfig, generators: Sequence[torch.Generator], points: int, plan: Plan = Plan()) -> dict:
    """Train two copies from ``start`` under ``mask`` over ``plan``'s steps, one on each of
    ``generators``' data orders, and return {"lmc_barrier_<split>": barrier} for the test and train
    splits (``inputs[split]`` as the parameterization sees them, ``targets[split]`` the labels)."""
    check_lmc(points)
    if points == 0:
        raise ValueError("lmc_points: 0 means off; give the number of points on the path")
    x, y = inputs["train"], targets["train"]
    a, _ = train(param, start, mask, x, y, cfg, generators[0], plan=plan)
    b, _ = train(param, start, mask, x, y, cfg, generators[1], plan=plan)
    evaluated = {"test": (inputs["test"], targets["test"]),
                 "train": train_eval_split(x, y, cfg.train_eval_size)}  # the round's own train evaluation
    return {f"lmc_barrier_{split}": error_barrier(path_errors(param, a, b, mask, *evaluated[split], points,
                                                              cfg.eval_batch_size))
            for split in SPLITS}
