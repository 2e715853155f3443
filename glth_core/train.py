"""Training over Span(D_t): scope parameters live as masked coefficients a, the rest as
ordinary tensors, and the model runs through ``torch.func.functional_call``.

Everything here is functional: a ``Parameterization`` turns (coefficients, mask, free
parameters) into the parameter dict of the model, so a later caller can vmap over stacked
coefficients of several seeds without a rewrite.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from glth_core.dictionaries import Dictionary

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """How one round trains. ``steps`` (when set) overrides ``epochs``."""

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    #: for ``schedule: step``: fractions of the round's steps where lr is multiplied by gamma
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    eval_batch_size: int = 2048

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule: {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size: must be ≥ 1, got {self.batch_size}")
        if self.steps is None and self.epochs < 1:
            raise ValueError(f"train.epochs: must be ≥ 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"train.steps: must be ≥ 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"train.lr: must be > 0, got {self.lr}")
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return self.steps
        return self.epochs * math.ceil(n_train / self.batch_size)

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate at ``step`` of a schedule that spans ``total`` steps."""
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        if self.schedule == "step":
            passed = sum(step >= m * total for m in self.milestones)
            return self.lr * self.gamma**passed
        return self.lr


@dataclass
class Weights:
    """The trainable state of one network: scope coefficients plus the free parameters."""

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
        self.input_bottleneck = bool(getattr(dictionary, "is_input_layer", False))
        self.free_names = [n for n, _ in model.named_parameters() if n not in self.scope]

    # -- building the starting point ---------------------------------------------------------
    def weights_of(self, model: nn.Module) -> Weights:
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        coeffs = self.dictionary.analyze(self.dictionary.flatten(params))
        return Weights(coeffs.detach().clone(), {n: params[n] for n in self.free_names})

    # -- data: what the network sees ----------------------------------------------------------
    def prepare_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a split once for the input-bottleneck path; identity otherwise."""
        if self.input_bottleneck:
            return self.dictionary.transform_inputs(x)
        return x

    def kept_columns(self, mask: torch.Tensor) -> torch.Tensor | None:
        """For the input bottleneck: indices of columns of U with any kept element."""
        if not self.input_bottleneck:
            return None
        d = self.dictionary
        return mask.view(d.d_out, d.d_in).any(dim=0).nonzero().flatten()

    # -- forward ------------------------------------------------------------------------------
    def params(self, weights: Weights, mask: torch.Tensor, kept: torch.Tensor | None = None) -> dict:
        a = weights.coeffs * mask
        if self.input_bottleneck:
            d = self.dictionary
            C = a.view(d.d_out, d.d_in)
            scope_params = {f"{d.layer}.weight": C if kept is None else C.index_select(1, kept)}
        else:
            scope_params = self.dictionary.unflatten(self.dictionary.synthesize(a))
        return {**weights.free, **scope_params}

    def forward(self, weights: Weights, mask: torch.Tensor, x: torch.Tensor, kept=None) -> torch.Tensor:
        if kept is not None:
            x = x.index_select(1, kept)
        return functional_call(self.model, self.params(weights, mask, kept), (x,))


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float


@torch.no_grad()
def evaluate(param: Parameterization, weights: Weights, mask, x, y, batch_size: int = 2048) -> Evaluation:
    kept = param.kept_columns(mask)
    correct, loss_sum = 0, 0.0
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = param.forward(weights, mask, xb, kept)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    n = max(1, x.shape[0])
    return Evaluation(accuracy=correct / n, loss=loss_sum / n)


def train(
    param: Parameterization,
    start: Weights,
    mask: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    *,
    lr_offset: int | None = None,
    on_step=None,
) -> tuple[Weights, int]:
    """Train from ``start`` inside Span(mask) and return (trained weights, steps taken).

    Data order comes from ``generator`` alone (a fresh permutation of indices each epoch), so
    a round is reproducible from its seed. ``lr_offset`` pins the schedule position (used for
    fine-tuning at the schedule's final rate); ``on_step(step, weights)`` sees each step.
    """
    w = start.clone()
    w.coeffs.mul_(mask)
    leaves = [w.coeffs.requires_grad_(True), *(t.requires_grad_(True) for t in w.free.values())]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(leaves, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(leaves, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    n = x.shape[0]
    total = cfg.total_steps(n)
    kept = param.kept_columns(mask)
    step = 0
    while step < total:
        order = torch.randperm(n, generator=generator).to(x.device)
        for begin in range(0, n, cfg.batch_size):
            if step >= total:
                break
            idx = order[begin : begin + cfg.batch_size]
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(step if lr_offset is None else lr_offset, total)
            loss = F.cross_entropy(param.forward(w, mask, x.index_select(0, idx), kept), y.index_select(0, idx))
            if not torch.isfinite(loss):
                raise DivergedError(f"training loss became {loss.item()} at step {step} (lr {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if on_step is not None:
                on_step(step, w)
    out = Weights(w.coeffs.detach() * mask, {k: v.detach() for k, v in w.free.items()})
    return out, total
