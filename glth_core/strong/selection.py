"""Edge-popup's hard top-k: scores → the mask of a given density in one dictionary, and its
straight-through soft version.

``select`` (how the kept units are counted):

* ``global`` — one top-k over all units of the scope, round(density × units) kept.
* ``per_layer`` — hidden-networks' ``GetSubnet`` (Ramanujan et al. 2020, their default): a top-k
  inside each scope tensor, each keeping n − int((1 − density)·n) of its own n units, so every
  layer has the density by itself (the total may differ from global's by the per-tensor rounding).
* ``per_tensor`` — a top-k inside each scope tensor with the global total round(density × units)
  apportioned over the tensors by largest remainder (exact total; each tensor within one unit of
  its share). Not the anchor's rule; kept for specs that use it.

The per-tensor rules need coefficients that each belong to one tensor: a random rotation of
several tensors is refused (``sparsify.tensor_index``), as is a group spanning two tensors.
"""

from __future__ import annotations

import math

import torch

from glth_core.dictionaries import Dictionary
from glth_core.sparsify import tensor_index

__all__ = ["SELECTS", "MaskSelector", "apportion", "top_k"]

SELECTS = ("global", "per_layer", "per_tensor")


class _StraightThrough(torch.autograd.Function):
    """Forward: the given hard 0/1 mask; backward: the gradient passes to the scores unchanged."""

    @staticmethod
    def forward(ctx, unit_scores: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        return hard.to(unit_scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def apportion(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` over parts proportionally to ``sizes`` (largest remainder, ties to the earlier part),
    so per-part counts are as close to density × size as possible and still sum to ``total``."""
    n = sum(sizes)
    exact = [total * s / n for s in sizes]
    ks = [math.floor(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - ks[i]), i))
    for i in order[: total - sum(ks)]:
        ks[i] += 1
    return ks


def top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest ``values``, ties to the lower index (as a stable sort would give),
    in O(n): a k-th-largest threshold, then the lowest-index ties fill up to k (5–10× a full sort)."""
    n = values.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=values.device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=values.device)
    threshold = torch.kthvalue(values, n - k + 1).values
    keep = values > threshold
    ties = (values == threshold).nonzero().flatten()
    keep[ties[: k - int(keep.sum())]] = True
    return keep


class MaskSelector:
    """Scores → hard mask of a given density in one dictionary, and the straight-through soft version.

    Units are elements, or groups when ``dictionary.groups`` is set (a group's score is Σ|s| over it),
    counted as ``select`` says (module docstring). Ties go to the lower index, as in IMP's ``sparsify``.
    """

    def __init__(self, dictionary: Dictionary, select: str = "global", device: torch.device | str | None = None):
        if select not in SELECTS:
            raise ValueError(f"select: {select!r} is not one of {', '.join(SELECTS)}")
        self.select = select
        groups = dictionary.groups
        device = (
            torch.device(device)
            if device is not None
            else (groups.device if groups is not None else torch.device("cpu"))
        )
        self.groups = None if groups is None else groups.to(device)
        self.num_units = dictionary.size if groups is None else dictionary.num_groups
        if select == "global":
            parts = [torch.arange(self.num_units)]
        else:
            entry = tensor_index(dictionary, "select")  # element → its scope tensor; refuses mixed coefficients
            if groups is not None:  # group → its scope tensor (``tensor_index`` checked it is one)
                entry = torch.full((self.num_units,), -1).scatter_reduce(
                    0, groups.cpu(), entry, reduce="amax", include_self=False
                )
            parts = [(entry == i).nonzero().flatten() for i in range(len(dictionary.scope))]
        self.parts = [p.to(device) for p in parts if p.numel()]
        self.sizes = [int(p.numel()) for p in self.parts]

    def counts(self, density: float) -> list[int]:
        """Units kept per part at ``density``."""
        if self.select == "per_layer":  # GetSubnet: j = int((1 - k) · n) pruned in each layer
            return [n - int((1 - density) * n) for n in self.sizes]
        total = min(self.num_units, max(1, round(density * self.num_units)))
        return apportion(total, self.sizes)

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        if self.groups is None:
            return scores.abs()
        return torch.zeros(self.num_units, dtype=scores.dtype, device=scores.device).index_add(
            0, self.groups, scores.abs()
        )

    def hard_units(self, unit_scores: torch.Tensor, density: float) -> torch.Tensor:
        keep = torch.zeros(self.num_units, dtype=torch.bool, device=unit_scores.device)
        values = unit_scores.detach()
        for part, k in zip(self.parts, self.counts(density)):
            keep[part[top_k(values[part], k)]] = True
        return keep

    def _expand(self, units: torch.Tensor) -> torch.Tensor:
        return units if self.groups is None else units[self.groups]

    def mask(self, scores: torch.Tensor, density: float) -> torch.Tensor:
        """The hard boolean mask over elements."""
        return self._expand(self.hard_units(self.unit_scores(scores), density))

    def soft_mask(self, scores: torch.Tensor, density: float) -> torch.Tensor:
        """The same mask as floats, differentiable in ``scores`` by the straight-through estimate."""
        u = self.unit_scores(scores)
        return self._expand(_StraightThrough.apply(u, self.hard_units(u, density)))
