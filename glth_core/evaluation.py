"""Evaluation of a network in coefficient space: accuracy and mean loss of a split, in batches,
and the fixed subset of training images that train accuracy is measured on.

``batch_totals`` and ``evaluation_of`` are vmappable halves of ``evaluate``, so the batched
trainer (``glth_core.batched_train``) evaluates K seeds with one forward per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glth_core.parameterization import Parameterization, Weights


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
    with param.mode(training=False), param.running(params, kept) as net:
        totals = [batch_totals(net(xb), yb) for xb, yb in eval_batches(x, y, batch_size)]
    return evaluation_of(totals, x.shape[0])
