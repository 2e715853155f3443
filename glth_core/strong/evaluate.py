"""Plain evaluation of any classifier module: accuracy/loss, and how far two networks' logits differ."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def _logits(net: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> tuple[float, float]:
    """(accuracy in [0, 1], mean cross-entropy) of ``net`` on (x, y)."""
    logits = _logits(net, x, batch_size)
    return float((logits.argmax(dim=1) == y).double().mean()), float(F.cross_entropy(logits.double(), y))


def output_error(
    target: nn.Module, pruned: nn.Module, x: torch.Tensor, *, batch_size: int = 1000
) -> tuple[float, float]:
    """(max, mean) |logit difference| between two networks over the inputs ``x``."""
    diff = (_logits(target, x, batch_size).double() - _logits(pruned, x, batch_size).double()).abs()
    return float(diff.max()), float(diff.mean())
