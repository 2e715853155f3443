"""Training over Span(D_t): scope parameters live as masked coefficients a, the rest as
ordinary tensors, and the model runs through ``torch.func.functional_call``.

Everything here is functional: a ``Parameterization`` turns (coefficients, mask, free
parameters) into the parameter dict of the model, so a later caller can vmap over stacked
coefficients of several seeds without a rewrite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from glth_core.data.augment import Augment, batch_stream
from glth_core.dictionaries import Dictionary
from glth_core.loss import training_loss
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


@dataclass
class Weights:
    """The state of one network: scope coefficients plus the free parameters and the model's
    buffers (BatchNorm's running statistics, which train without gradients), by name in ``free``."""

    coeffs: torch.Tensor
    free: dict[str, torch.Tensor] = field(default_factory=dict)

    def clone(self) -> "Weights":
        return Weights(self.coeffs.detach().clone(), {k: v.detach().clone() for k, v in self.free.items()})

    def masked(self, mask: torch.Tensor) -> "Weights":
        return Weights(self.coeffs.detach() * mask, {k: v.detach().clone() for k, v in self.free.items()})


class Parameterization:
    """(coefficients, mask, free parameters) → the model's parameter dict.

    Two paths:
    * general: ``w_scope = D.synthesize(a ⊙ mask)``, split back into tensors;
    * input bottleneck: when a bottleneck dictionary sits on the first layer the dataset is
      transformed once (x ↦ x U) and the layer's weight on the transformed input is the
      coefficient matrix C itself; only the kept columns of U are used, so a step gets
      cheaper as pruning proceeds.
    """

    def __init__(self, model: nn.Module, dictionary: Dictionary):
        self.model = model
        self.dictionary = dictionary
        self.scope = set(dictionary.scope_names)
        self.input_bottleneck = bool(dictionary.is_input_layer)
        self.free_names = [n for n, _ in model.named_parameters() if n not in self.scope]
        #: buffers (BatchNorm's running statistics): carried in ``Weights.free``, updated in place
        #: by training-mode forwards, never given gradients
        self.buffer_names = [n for n, _ in model.named_buffers()]

    # -- building the starting point ---------------------------------------------------------
    def weights_of(self, model: nn.Module) -> Weights:
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        coeffs = self.dictionary.analyze(self.dictionary.flatten(params))
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        return Weights(coeffs.detach().clone(), {**{n: params[n] for n in self.free_names}, **buffers})

    def leaves(self, w: Weights) -> list[torch.Tensor]:
        """What training differentiates: the coefficients and the free parameters (not the buffers),
        set to require gradients."""
        return [w.coeffs.requires_grad_(True), *(w.free[n].requires_grad_(True) for n in self.free_names)]

    def mode(self, training: bool):
        """A context in which the model runs in training (batch statistics, running ones updated)
        or evaluation mode (running statistics), restored after."""
        return _mode(self.model, training)

    # -- data: what the network sees ----------------------------------------------------------
    def prepare_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a split once for the input-bottleneck path; identity otherwise."""
        if self.input_bottleneck:
            return self.dictionary.transform_inputs(x)
        return x

    def kept_columns(self, mask: torch.Tensor) -> torch.Tensor | None:
        """For the input bottleneck: indices of columns of U with any kept element (None when
        every column is kept: selecting them all would copy the layer for nothing)."""
        if not self.input_bottleneck:
            return None
        d = self.dictionary
        columns = mask.view(d.d_out, d.d_in).any(dim=0)
        return None if bool(columns.all()) else columns.nonzero().flatten()

    # -- forward ------------------------------------------------------------------------------
    def params(self, weights: Weights, mask: torch.Tensor | None, kept: torch.Tensor | None = None) -> dict:
        """The parameter dict; ``mask`` None means every element is kept."""
        a = weights.coeffs if mask is None else weights.coeffs * mask
        if self.input_bottleneck:
            d = self.dictionary
            C = a.view(d.d_out, d.d_in)
            scope_params = {f"{d.layer}.weight": C if kept is None else C.index_select(1, kept)}
        else:
            scope_params = self.dictionary.unflatten(self.dictionary.synthesize(a))
        return {**weights.free, **scope_params}

    def forward(
        self,
        weights: Weights,
        mask: torch.Tensor,
        x: torch.Tensor,
        kept=None,
        memory_format: torch.memory_format | None = None,
    ) -> torch.Tensor:
        """The model's output on ``x``; ``memory_format`` (channels_last on CUDA) is applied to
        the inputs and every 4-D parameter."""
        return self.apply(self.params(weights, mask, kept), x, kept, memory_format)

    def apply(
        self, params: dict, x: torch.Tensor, kept=None, memory_format: torch.memory_format | None = None
    ) -> torch.Tensor:
        """The model's output on ``x`` under a parameter dict made by ``params`` (built once, used
        for many batches: evaluation synthesizes the scope once per split, not once per batch)."""
        if kept is not None:
            x = x.index_select(1, kept)
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
            params = {k: v.contiguous(memory_format=memory_format) if v.dim() == 4 else v for k, v in params.items()}
        return functional_call(self.model, params, (x,))


@contextmanager
def _mode(model: nn.Module, training: bool):
    before = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(before)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float


def batch_totals(logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """[summed cross-entropy, correct count] of one evaluation batch's logits (vmappable: no ``.item()``)."""
    correct = (logits.argmax(1) == yb).sum().to(logits.dtype)
    return torch.stack([F.cross_entropy(logits, yb, reduction="sum"), correct])


def evaluation_of(totals: list[torch.Tensor], n: int) -> Evaluation:
    """The Evaluation of a split from its batches' ``batch_totals`` (summed in float64, in order)."""
    loss_sum = correct = 0.0
    for t in totals:
        loss, right = t.tolist()
        loss_sum += loss
        correct += right
    n = max(1, n)
    return Evaluation(accuracy=correct / n, loss=loss_sum / n)


def eval_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    for start in range(0, x.shape[0], batch_size):
        yield x[start : start + batch_size], y[start : start + batch_size]


def train_eval_split(x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images that train accuracy and loss are measured on: all of them (``size`` 0 or
    at least the split), else a fixed subset of ``size``: the first ``size`` of a permutation seeded
    0, in index order, so the same images every round, seed and dictionary of a dataset."""
    n = x.shape[0]
    if size <= 0 or size >= n:
        return x, y
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size].sort().values.to(x.device)
    return x.index_select(0, idx), y.index_select(0, idx)


@torch.no_grad()
def evaluate(param: Parameterization, weights: Weights, mask, x, y, batch_size: int = 2048) -> Evaluation:
    kept = param.kept_columns(mask)
    params = param.params(weights, mask, kept)
    with param.mode(training=False):
        totals = [batch_totals(param.apply(params, xb, kept), yb) for xb, yb in eval_batches(x, y, batch_size)]
    return evaluation_of(totals, x.shape[0])


# -- the training loop, shared by ``train`` and the batched trainer (``glth_core.batched``) ----
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
    ``who(i)`` names trajectory i in a DivergedError."""
    opt = make_optimizer(leaves, cfg)
    for step in range(plan.start_step, total):
        if step == plan.restart_at and step > plan.start_step:
            opt = make_optimizer(leaves, cfg)  # weights carry on; momentum and moments start again
        rate = plan.lr if plan.lr is not None else cfg.lr_at(step, total)
        for group in opt.param_groups:
            group["lr"] = rate
        losses = losses_at(step)
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = int((~finite).flatten().nonzero()[0])
            where = "" if who is None else f" in {who(bad)}"
            raise DivergedError(
                f"training loss became {losses.flatten()[bad].item()} at step {step} (lr {cfg.lr}){where}",
                None if losses.dim() == 0 else bad,
            )
        opt.zero_grad(set_to_none=True)
        (losses if losses.dim() == 0 else losses.sum()).backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1)


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
    leaves = param.leaves(w)
    total = cfg.total_steps(x.shape[0])
    kept = param.kept_columns(mask)
    batches = batch_indices(x.shape[0], cfg.batch_size, generator, x.device, start=plan.start_step)
    memory_format = input_format(cfg, x)
    factor = dense_or_float(mask, w.coeffs.dtype)
    augmented = batch_stream(augment, generator)

    def losses_at(step: int) -> torch.Tensor:
        idx = next(batches)
        xb = augmented(x.index_select(0, idx), step)
        with forward_precision(cfg, x):
            logits = param.forward(w, factor, xb, kept, memory_format=memory_format)
            return training_loss(logits, y.index_select(0, idx))

    with matmul_precision(cfg, x), param.mode(training=True):
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
