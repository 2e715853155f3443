"""Training and evaluating K trajectories at once: their weights stacked along a leading K dim,
one optimizer over the stacks (SGD and Adam update elementwise, so it is K optimizers), and the
summed loss, which gives each trajectory its own gradient. ``glth_core.batched.BatchedTrajectory``
runs IMP rounds with them.

The K forwards run as one ``torch.func.vmap`` (on an accelerator, or a CPU model without
convolutions) or one by one (``prefers_vmap``); one by one is bit-identical to separate runs,
vmapped matmuls and grouped convolutions sum in another order, so they agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import vmap

from glth_core.data.augment import Augment
from glth_core.evaluation import Evaluation, batch_totals, eval_batches, evaluation_of
from glth_core.loss import training_loss
from glth_core.parameterization import Parameterization, Weights, mask_gradients
from glth_core.precision import forward_precision, matmul_precision
from glth_core.schedule import SchedulePlan, TrainConfig
from glth_core.train import batch_indices, dense_or_float, run_steps

__all__ = ["evaluate_batched", "prefers_vmap", "stack", "train_batched", "unstack"]


def stack(weights: list[Weights]) -> Weights:
    """K trajectories' weights as one with a leading K dim (fresh tensors)."""
    return Weights(
        torch.stack([w.coeffs.detach() for w in weights]),
        {n: torch.stack([w.free[n].detach() for w in weights]) for n in weights[0].free},
    )


def unstack(w: Weights, k: int) -> Weights:
    """Trajectory ``k``'s weights out of stacked ones (views; clone to keep)."""
    return Weights(w.coeffs[k], {n: v[k] for n, v in w.free.items()})


def prefers_vmap(param: Parameterization, x: torch.Tensor) -> bool:
    """Whether one vmapped forward beats K forwards in a loop. vmap turns K convolutions into
    one grouped convolution, which CPU kernels run up to 2× slower than K plain ones; a CPU
    model with convolutions therefore loops (still sharing the optimizer step and backward)."""
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in param.model.modules())
    return x.device.type != "cpu" or not has_conv


def train_batched(
    param: Parameterization,
    starts: list[Weights],
    masks: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    generators: list[torch.Generator],
    *,
    plan: SchedulePlan = SchedulePlan(),
    on_steps: list[Callable[[int, Weights], None] | None] | None = None,
    names: list[str] | None = None,
    vectorize: bool | None = None,
    augment: Augment | None = None,
) -> tuple[list[Weights], int]:
    """``glth_core.train.train`` for K trajectories at once: trajectory k starts at ``starts[k]``,
    trains inside Span(``masks[k]``) on batches drawn from ``generators[k]``, every one over the
    steps of one ``plan``; returns each one's trained weights and the steps taken.
    ``on_steps[k](step, weights)`` sees trajectory k's steps.

    ``vectorize``: True runs the K forwards as one vmapped forward; False runs them one by one
    (the optimizer step and the backward call stay shared); None (default) picks
    ``prefers_vmap``. ``channels_last`` is not applied here (memory formats do not survive vmap).
    ``augment``: trajectory k's batches augmented from its own data stream, as ``train`` does."""
    w = stack(starts)
    m = torch.stack(masks)
    w.coeffs.mul_(m)
    # each seed's mask multiplies its coefficients' gradients, not the coefficients (as in ``train``)
    coeffs = mask_gradients(w.coeffs.requires_grad_(True), dense_or_float(m, w.coeffs.dtype))
    leaves = [coeffs, *(t.requires_grad_(True) for t in w.free.values())]
    total = cfg.total_steps(x.shape[0])
    # the input bottleneck keeps the union of the seeds' kept columns: a column a seed pruned
    # meets its zero coefficients, so each seed's output is unchanged
    kept = param.kept_columns(m.any(0))
    streams = [batch_indices(x.shape[0], cfg.batch_size, g, x.device, start=plan.start_step) for g in generators]
    augmented = None if augment is None else [augment.stream(g) for g in generators]

    def loss(coeffs, free, xb, yb):
        return training_loss(param.forward(Weights(coeffs, free), None, xb, kept), yb)

    def one_by_one(coeffs, free, xb, yb):
        # unbind, not indexing: its backward is one stack, where each index's would fill a zero [K, …]
        free = {n: v.unbind(0) for n, v in free.items()}
        return torch.stack(
            [
                loss(c, {n: v[k] for n, v in free.items()}, xk, yk)
                for k, (c, xk, yk) in enumerate(zip(coeffs.unbind(0), xb, yb))
            ]
        )

    if vectorize is None:
        vectorize = prefers_vmap(param, x)
    losses = vmap(loss) if vectorize else one_by_one

    def losses_at(step: int) -> torch.Tensor:
        idx = torch.stack([next(s) for s in streams])
        xb = x.index_select(0, idx.flatten()).unflatten(0, idx.shape)
        if augmented is not None:
            xb = torch.stack([apply(xk, step) for apply, xk in zip(augmented, xb)])
        with forward_precision(cfg, x):
            return losses(w.coeffs, w.free, xb, y[idx])

    on_step = None
    if on_steps is not None and any(cb is not None for cb in on_steps):

        def on_step(step: int) -> None:
            for k, cb in enumerate(on_steps):
                if cb is not None:
                    cb(step, unstack(w, k))

    with matmul_precision(cfg, x):
        run_steps(
            leaves, cfg, total, losses_at, plan=plan, on_step=on_step, who=None if names is None else names.__getitem__
        )
    out = [
        Weights(w.coeffs[k].detach() * m[k], {n: v[k].detach().clone() for n, v in w.free.items()})
        for k in range(len(starts))
    ]
    return out, total - plan.start_step


@torch.no_grad()
def evaluate_batched(
    param: Parameterization,
    weights: list[Weights],
    masks: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 2048,
) -> list[Evaluation]:
    """``glth_core.evaluation.evaluate`` of K trajectories on one split, with one vmapped forward per
    batch (every trajectory sees the same inputs)."""
    w, m = stack(weights), torch.stack(masks)
    kept = param.kept_columns(m.any(0))
    params = vmap(lambda c, f, mk: param.params(Weights(c, f), mk, kept))(w.coeffs, w.free, m)  # once per split
    totals = vmap(lambda p, xb, yb: batch_totals(param.apply(p, xb, kept), yb), in_dims=(0, None, None))
    per_batch = [totals(params, xb, yb) for xb, yb in eval_batches(x, y, batch_size)]
    return [evaluation_of([t[k] for t in per_batch], x.shape[0]) for k in range(len(weights))]
