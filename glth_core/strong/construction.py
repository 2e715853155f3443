"""What a SubsetSum construction is (``construct.construct`` builds one): the random network, its
masks and the pruned network, with what each target layer cost (``LayerReport``), and the
weights the pruned network applies, read back from its kept weights (``effective_weights``).

An expand layer's only usable weights are its block-diagonal u's (``expansion_diagonal``): input j
feeds its own neurons j·m … j·m + m − 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerReport:
    """What the construction did for one target Linear."""

    target_index: int  # the Linear's index in the target Sequential
    expand_name: str  # parameter names in the random net
    combine_name: str
    d_in: int
    d_out: int
    width: int  # expansion neurons per input
    negative_half: bool  # False when the input is known non-negative and the negative neurons are all pruned
    kept_u: int
    kept_v: int
    max_weight_error: float
    mean_weight_error: float
    over_epsilon: int  # target weights whose error exceeds epsilon


@dataclass(frozen=True)
class EffectiveWeight:
    """The weights the pruned pair applies: ``positive`` to inputs x ≥ 0, ``negative`` to inputs x ≤ 0.

    A target weight w is reproduced when both equal w; where ``negative_used`` is False the layer's input
    is never negative and only ``positive`` matters.
    """

    positive: torch.Tensor  # float64 [d_out, d_in]
    negative: torch.Tensor
    negative_used: bool

    def error(self, target: torch.Tensor) -> torch.Tensor:
        """|effective - target| per weight, the worse of the halves in use."""
        target = target.detach().cpu().double()
        err = (self.positive - target).abs()
        if self.negative_used:
            err = torch.maximum(err, (self.negative - target).abs())
        return err


@dataclass(eq=False)
class Construction:
    """The random network, its masks, the pruned network (random weights × mask) and what it cost."""

    random_net: nn.Sequential
    masks: dict[str, torch.Tensor]
    pruned_net: nn.Sequential
    layers: list[LayerReport]
    epsilon: float
    n: int
    distribution: str
    signs: str
    objective: str
    seed: int
    max_weight_error: float
    mean_weight_error: float
    over_epsilon: int  # target weights whose error exceeds epsilon
    kept_weights: int  # kept u's + kept v's
    target_weights: int
    random_weights: int  # every weight of random_net (its expansion layers are dense)
    candidate_weights: int  # only the block-diagonal u's + all v's: the connections the construction can use
    wall_seconds: float
    solve_seconds: float

    @property
    def kept_per_target(self) -> float:
        return self.kept_weights / self.target_weights

    @property
    def random_per_target(self) -> float:
        return self.random_weights / self.target_weights

    @property
    def candidate_per_target(self) -> float:
        return self.candidate_weights / self.target_weights

    def summary(self) -> dict:
        """A JSON-friendly record of the stats."""
        keys = (
            "epsilon",
            "n",
            "distribution",
            "signs",
            "objective",
            "seed",
            "max_weight_error",
            "mean_weight_error",
            "over_epsilon",
            "kept_weights",
            "target_weights",
            "random_weights",
            "candidate_weights",
            "wall_seconds",
            "solve_seconds",
        )
        out = {k: getattr(self, k) for k in keys}
        out.update(
            kept_per_target=self.kept_per_target,
            random_per_target=self.random_per_target,
            candidate_per_target=self.candidate_per_target,
        )
        return out


def expansion_diagonal(expand_weight: torch.Tensor) -> torch.Tensor:
    """The block-diagonal entries u[j, k] = expand_weight[j·width + k, j], as a [width, d_in] view."""
    d_in = expand_weight.shape[1]
    return expand_weight.view(d_in, -1, d_in).diagonal(dim1=0, dim2=2)


def apply_masks(net: nn.Sequential, masks: dict[str, torch.Tensor]) -> nn.Sequential:
    """A copy of ``net`` whose masked parameters are multiplied by their 0/1 masks."""
    pruned = copy.deepcopy(net)
    params = dict(pruned.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))
    return pruned


def effective_pair(u: torch.Tensor, combine_weight: torch.Tensor, negative_used: bool) -> EffectiveWeight:
    """The target-layer weights a pruned pair applies, from its u's [d_in, width] (pruned ones 0) and v's."""
    u = u.detach().cpu().double()
    combine = combine_weight.detach().cpu().double()
    products = combine.view(combine.shape[0], *u.shape) * u[None]
    return EffectiveWeight(
        positive=(products * (u > 0)).sum(-1), negative=(products * (u < 0)).sum(-1), negative_used=negative_used
    )


def effective_weights(construction: Construction) -> list[EffectiveWeight]:
    """Each target layer's weights as the pruned network applies them, read back from its kept weights.

    Computed from ``pruned_net`` alone (not from the solver's bookkeeping), so it checks the whole chain.
    """
    params = dict(construction.pruned_net.named_parameters())
    return [
        effective_pair(expansion_diagonal(params[r.expand_name]).T, params[r.combine_name], r.negative_half)
        for r in construction.layers
    ]
