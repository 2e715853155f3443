"""The training loop in coefficient space: ``train`` runs one trajectory's steps of a round's
schedule (``run_steps``, shared with the batched trainer ``glth_core.batched_train``) on batches
drawn from the round's data stream (``batch_indices``).

The network's parameters come from a ``Parameterization`` (``glth_core.parameterization``) and
its evaluation from ``glth_core.evaluation``; this module re-exports them with the schedule's
``TrainConfig`` and ``SchedulePlan``, so ``glth_core.train`` is the one import a caller needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from glth_core.data.augment import Augment, batch_stream
from glth_core.evaluation import Evaluation, evaluate, train_eval_split
from glth_core.loss import training_loss
from glth_core.parameterization import Parameterization, Weights
from glth_core.precision import forward_precision, input_format, matmul_precision, on_cuda
from glth_core.schedule import OPTIMIZERS, PRECISIONS, SCHEDULES, SchedulePlan, TrainConfig

__all__ = [
    "DivergedError",
    "Weights",
    "Parameterization",
    "Evaluation",
    "TrainConfig",
    "SchedulePlan",
    "OPTIMIZERS",
    "SCHEDULES",
    "PRECISIONS",
    "evaluate",
    "train_eval_split",
    "batch_indices",
    "run_steps",
    "train",
    "forward_precision",
    "input_format",
    "matmul_precision",
    "on_cuda",
]


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite. ``index``: which trajectory of a batch trained
    together (``glth_core.batched``) diverged first; None for a single trajectory."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


def dense_or_float(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The mask a training forward multiplies by: None when all is kept (the dense round skips
    the multiply and its backward), else float (no bool → float cast each step; same values)."""
    return None if bool(mask.all()) else mask.to(dtype)


def make_optimizer(leaves: list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or Adam over ``leaves``. Both update elementwise, so one optimizer over K stacked
    trajectories' tensors is K independent optimizers."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(leaves, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(leaves, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator, device, start: int = 0
) -> Iterator[torch.Tensor]:
    """Training batches forever: each epoch a fresh permutation drawn from ``generator`` (only
    when its first batch is asked for), cut into ``batch_size`` pieces (the last one shorter).
    ``start``: begin at batch ``start`` of that sequence (the permutations of the epochs before
    it are drawn and dropped), so the batches are exactly those a run from 0 sees from there."""
    per_epoch = -(-n // batch_size)
    epochs, skip = divmod(start, per_epoch)
    for _ in range(epochs):
        torch.randperm(n, generator=generator)
    while True:
        order = torch.randperm(n, generator=generator).to(device)
        for begin in range(skip * batch_size, n, batch_size):
            yield order[begin : begin + batch_size]
        skip = 0


#: how many steps' losses are checked for NaN/inf at once: a check reads them back (on CUDA a wait
#: for the device, on CPU a few µs a step); a divergence is still reported at its first step
CHECK_EVERY = 8


def run_steps(
    leaves: list[torch.Tensor],
    cfg: TrainConfig,
    total: int,
    losses_at: Callable[[int], torch.Tensor],
    *,
    plan: SchedulePlan = SchedulePlan(),
    on_step: Callable[[int], None] | None = None,
    who: Callable[[int], str] | None = None,
) -> None:
    """Steps ``plan.start_step`` … ``total`` − 1 of a ``total``-step schedule on ``leaves``
    (see ``SchedulePlan``). ``losses_at(step)`` gives the batch loss of each trajectory being trained (a
    scalar for one, shape [K] for K); their sum is minimized, so each trajectory gets its own
    gradient. ``on_step(n)`` runs after step n − 1 (so n steps of the schedule are behind it).
    ``who(i)`` names trajectory i in a DivergedError.

    A non-finite loss raises DivergedError naming its step, value and trajectory: the first one, in
    step order and then trajectory order. The losses are checked every ``CHECK_EVERY`` steps (and at
    the last), so up to ``CHECK_EVERY`` − 1 steps (and their ``on_step``) may run past it first; the
    error, and every number before it, are those of a check at each step."""
    opt = make_optimizer(leaves, cfg)
    rate, unchecked = None, []
    for step in range(plan.start_step, total):
        if step == plan.restart_at and step > plan.start_step:
            opt, rate = make_optimizer(leaves, cfg), None  # weights carry on; momentum and moments start again
        now = plan.lr if plan.lr is not None else cfg.lr_at(step, total)
        if now != rate:
            rate = now
            for group in opt.param_groups:
                group["lr"] = rate
        losses = losses_at(step)
        unchecked.append(losses.detach())
        if len(unchecked) == CHECK_EVERY or step == total - 1:
            check_finite(unchecked, step + 1 - len(unchecked), cfg, who)
            unchecked = []
        opt.zero_grad(set_to_none=True)
        (losses if losses.dim() == 0 else losses.sum()).backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1)


def check_finite(
    losses: list[torch.Tensor], first_step: int, cfg: TrainConfig, who: Callable[[int], str] | None
) -> None:
    """Raise DivergedError at the first non-finite entry of ``losses`` (those of steps ``first_step``, …;
    each a scalar or one per trajectory)."""
    stacked = torch.stack(losses)
    finite = torch.isfinite(stacked)
    if bool(finite.all()):
        return
    at = int((~finite).flatten().nonzero()[0])
    per_step = stacked[0].numel()
    offset, bad = divmod(at, per_step)
    where = "" if who is None else f" in {who(bad)}"
    raise DivergedError(
        f"training loss became {stacked.flatten()[at].item()} at step {first_step + offset} (lr {cfg.lr}){where}",
        None if stacked[0].dim() == 0 else bad,
    )


def train(
    param: Parameterization,
    start: Weights,
    mask: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    *,
    plan: SchedulePlan = SchedulePlan(),
    on_step=None,
    augment: Augment | None = None,
) -> tuple[Weights, int]:
    """Train from ``start`` inside Span(mask) and return (trained weights, steps taken).

    Data order comes from ``generator`` alone (a fresh permutation of indices each epoch), so
    a round is reproducible from its seed; a ``plan`` starting at step k takes the batches of
    steps k… of that order (``batch_indices``), with the schedule's rates there. ``on_step(n,
    weights)`` sees the weights after n steps of the schedule. ``augment``: each batch augmented
    by its step's draws from the same data stream (``glth_core.data.augment``).
    """
    w = start.clone()
    w.coeffs.mul_(mask)
    # the mask multiplies the gradients, not the coefficients (``Parameterization.leaves``)
    leaves, scope = param.leaves(w, dense_or_float(mask, w.coeffs.dtype))
    total = cfg.total_steps(x.shape[0])
    kept = param.kept_columns(mask)
    batches = batch_indices(x.shape[0], cfg.batch_size, generator, x.device, start=plan.start_step)
    memory_format = input_format(cfg, x)
    augmented = batch_stream(augment, generator)

    with (
        matmul_precision(cfg, x),
        param.mode(training=True),
        param.training_forward(w, kept, memory_format, scope) as net,
    ):

        def losses_at(step: int) -> torch.Tensor:
            idx = next(batches)
            xb = augmented(x.index_select(0, idx), step)
            with forward_precision(cfg, x):
                return training_loss(net(xb), y.index_select(0, idx))

        run_steps(
            leaves,
            cfg,
            total,
            losses_at,
            plan=plan,
            on_step=None if on_step is None else (lambda step: on_step(step, w)),
        )
    out = Weights(w.coeffs.detach() * mask, {k: v.detach() for k, v in w.free.items()})
    return out, total - plan.start_step
