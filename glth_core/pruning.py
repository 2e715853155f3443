"""How a trajectory chooses the mask of its next round: IMP's magnitudes, or a control's rule.

``control`` (one per trajectory; the reinit control's training is in ``glth_core.rewind``):

* ``none`` — IMP: drop the τ fraction of survivors with the smallest trained coefficients.
* ``random_mask`` — the same counts, survivors dropped at random (stream 1 of the round).
* ``reinit`` — IMP's masks; the record trains them from a fresh initialization.
* ``oneshot`` — one-shot pruning beside iterative: every round's mask is cut in one step from the
  *dense* round's trained coefficients to the density IMP reaches at that round, so one
  trajectory gives the one-shot curve at the densities of the iterative one (Frankle & Carbin
  2019, Fig. 4); a single target density is one of its rounds. The ticket trains as configured.
* ``structured`` — a training-free baseline: units kept in an order fixed at initialization
  and never by magnitude, at the same counts as IMP: a bottleneck's ``group_order`` (DCT: lowest
  frequency index u + v first; PCA: largest eigenvalue first); dictionaries without an order
  (identity or random bases, ungrouped kinds) keep a seeded random order (stream 1 of round 0),
  the same in distribution as ``random_mask``.

How IMP cuts: ``prune_rounding`` (``sparsify.ROUNDINGS``); ``pruning: global`` (one ordering
over the whole dictionary, or a composite's per-part τ) or ``layerwise`` (each scope tensor loses
τ of its own survivors); ``layer_tau: {tensor: τ}`` gives named tensors their own rate (Frankle &
Carbin prune the output layer at half the rate), the others pruned as ``pruning`` says. Per-tensor
rates need coefficients that belong to one tensor each (``sparsify.tensor_index``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from glth_core.sparsify import Segment, drop_units, sparsify_segments, tensor_index
from glth_core.streams import RANDOM_MASK_STREAM, STRUCTURED_STREAM, round_generator

if TYPE_CHECKING:
    from glth_core.trajectory import TrajectoryConfig

CONTROLS = ("none", "random_mask", "reinit", "structured", "oneshot")
PRUNINGS = ("global", "layerwise")


def check_pruning(config: "TrajectoryConfig") -> None:
    """The dictionary-independent checks of a trajectory's pruning options (one line each)."""
    if config.pruning not in PRUNINGS:
        raise ValueError(f"pruning: {config.pruning!r} is not one of {', '.join(PRUNINGS)}")
    if config.layer_tau is not None:
        if not isinstance(config.layer_tau, dict) or not config.layer_tau:
            raise ValueError(f"layer_tau: must be a mapping such as {{'5.weight': 0.1}}, got {config.layer_tau!r}")
        for name, tau in config.layer_tau.items():
            if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < tau < 1.0:
                raise ValueError(f"layer_tau.{name}: must be a number in (0, 1), got {tau!r}")
    if config.control == "structured" and (config.pruning != "global" or config.layer_tau):
        raise ValueError("control: structured keeps one fixed order of units; use pruning: global without layer_tau")


def layer_segments(config: "TrajectoryConfig", dictionary) -> tuple | None:
    """The segments ``sparsify_segments`` prunes by: None for one global ordering, a composite's
    ``tau_segments``, or one segment per scope tensor for layerwise pruning / ``layer_tau``."""
    own = getattr(dictionary, "tau_segments", None)
    if config.pruning == "global" and not config.layer_tau:
        return own or None
    if own:
        raise ValueError("layer_tau: this composite dictionary gives its parts their own tau; give per-tensor rates "
                         "there (or leave pruning: global and layer_tau out)")
    field = "layer_tau" if config.pruning == "global" else "pruning"
    tensor_index(dictionary, field)  # refuses coefficients that mix tensors
    rates = dict(config.layer_tau or {})
    names = [e.name for e in dictionary.scope]
    unknown = [n for n in rates if n not in names]
    if unknown:
        raise ValueError(f"layer_tau.{unknown[0]}: not a tensor of the dictionary's scope; scope: {', '.join(names)}")
    default = config.tau if config.pruning == "layerwise" else None
    return tuple(Segment(e.offset, e.offset + e.numel, rates.get(e.name, default)) for e in dictionary.scope)


def unit_order(config: "TrajectoryConfig", dictionary) -> torch.Tensor:
    """The structured control's units (groups, or elements when ungrouped), the first kept longest."""
    order = getattr(dictionary, "group_order", None)
    if order is not None:
        return order.cpu()
    units = dictionary.size if dictionary.groups is None else dictionary.num_groups
    return torch.randperm(units, generator=round_generator(config.seed, 0, STRUCTURED_STREAM))


class MaskRule:
    """The next-mask rule of one trajectory (config and dictionary fixed)."""

    def __init__(self, config: "TrajectoryConfig", dictionary):
        self.config, self.dictionary = config, dictionary
        self.segments = layer_segments(config, dictionary)
        self.rank_scores = None
        if config.control == "structured":
            if self.segments:
                raise ValueError("control: structured keeps one order of units at one rate; this composite gives "
                                 "its parts their own tau")
            order = unit_order(config, dictionary)
            scores = torch.empty(order.numel(), dtype=torch.float64)
            scores[order] = torch.arange(order.numel(), 0, -1, dtype=torch.float64)  # first in order: highest
            self.rank_scores = scores

    def next_mask(self, mask: torch.Tensor, trained: torch.Tensor, dense: torch.Tensor | None, next_round: int) -> torch.Tensor:
        """The mask of round ``next_round`` from this round's ``mask`` and trained coefficients;
        ``dense``: the dense round's trained coefficients (``oneshot``)."""
        cfg, d = self.config, self.dictionary
        if self.rank_scores is not None:
            scores = self.rank_scores.to(mask.device)
            if d.groups is None:
                return mask & ~drop_units(scores, mask, cfg.tau, cfg.prune_rounding)
            groups = d.groups.to(mask.device)
            alive = torch.zeros(scores.numel(), dtype=torch.bool, device=mask.device)
            alive[groups[mask]] = True
            return mask & ~drop_units(scores, alive, cfg.tau, cfg.prune_rounding)[groups]
        scores = dense if cfg.control == "oneshot" else trained
        if cfg.control == "random_mask":
            scores = torch.rand(scores.shape, generator=round_generator(cfg.seed, next_round, stream=RANDOM_MASK_STREAM)).to(scores.device)
        return sparsify_segments(scores, mask, cfg.tau, d.groups, self.segments, cfg.prune_rounding)
