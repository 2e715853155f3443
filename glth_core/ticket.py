"""What one finished round leaves behind: its mask and its trained coefficients (``Ticket``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glth_core.parameterization import Weights


@dataclass
class Ticket:
    """What one finished round leaves: the mask it trained under and the trained weights
    (coefficients stored only where the mask keeps them). Small enough to keep every round."""

    round: int
    mask: torch.Tensor
    kept_coeffs: torch.Tensor
    free: dict[str, torch.Tensor]

    @classmethod
    def of(cls, round_index: int, mask: torch.Tensor, w: Weights) -> "Ticket":
        return cls(
            round_index,
            mask.clone(),
            w.coeffs.detach()[mask].clone(),
            {k: v.detach().clone() for k, v in w.free.items()},
        )

    def weights(self) -> Weights:
        coeffs = torch.zeros(self.mask.shape, dtype=self.kept_coeffs.dtype, device=self.kept_coeffs.device)
        coeffs[self.mask] = self.kept_coeffs
        return Weights(coeffs, dict(self.free))

    def to_dict(self) -> dict:
        return {"round": self.round, "mask": self.mask, "kept_coeffs": self.kept_coeffs, "free": self.free}

    @classmethod
    def from_dict(cls, d: dict) -> "Ticket":
        return cls(d["round"], d["mask"], d["kept_coeffs"], dict(d["free"]))
