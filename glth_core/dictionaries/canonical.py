"""The canonical basis: coefficients are the parameters themselves (the original lottery ticket)."""

from __future__ import annotations

import torch

from glth_core.dictionaries.base import Dictionary
from glth_core.dictionaries.options import SCOPE


class Canonical(Dictionary):
    kind = "canonical"
    TENSOR_ALIGNED = True
    IDENTITY = True
    FIELDS = {"scope": SCOPE}
    LABEL = "canonical"

    @classmethod
    def build(cls, opts: dict, model, train_x=None) -> "Canonical":
        return cls(cls.check(opts, model))

    def analyze(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def synthesize(self, a: torch.Tensor) -> torch.Tensor:
        return a
