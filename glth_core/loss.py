"""The training loss, written once: every trainer (``train.train``, ``batched_train.train_batched`` and
the strong-ticket score search, ``strong.edge_popup``) minimizes ``training_loss`` of its batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["training_loss"]


def training_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy of one batch, in float32 whatever the forward's precision (a bf16
    forward's logits are cast up first). Vmappable: batched seeds call it per seed."""
    return F.cross_entropy(logits.float(), labels)
