"""``structured``: a training-free baseline. Units are kept in an order fixed at initialization and
never by magnitude, at IMP's counts: the dictionary's ``group_order`` (a bottleneck's DCT: lowest
frequency index u + v first; PCA: largest eigenvalue first); a dictionary without an order
(identity or random bases, ungrouped kinds) keeps a seeded random order (``STRUCTURED_STREAM`` of
round 0), the same in distribution as ``random_mask``."""

from __future__ import annotations

import torch

from glth_core.controls.base import Control
from glth_core.sparsify import drop_units
from glth_core.streams import STRUCTURED_STREAM, round_generator


def unit_order(config, dictionary) -> torch.Tensor:
    """The units (groups, or elements when ungrouped), the first kept longest."""
    order = dictionary.group_order
    if order is not None:
        return order.cpu()
    units = dictionary.size if dictionary.groups is None else dictionary.num_groups
    return torch.randperm(units, generator=round_generator(config.seed, 0, STRUCTURED_STREAM))


class Structured(Control):
    name = "structured"

    @classmethod
    def check(cls, config) -> None:
        if config.pruning != "global" or config.layer_tau:
            raise ValueError(
                "control: structured keeps one fixed order of units; use pruning: global without layer_tau"
            )

    @classmethod
    def extra_seeds(cls, config) -> dict:
        return {"random_mask": config.seed}  # the random order where the dictionary has none

    def __init__(self, config, dictionary, segments):
        super().__init__(config, dictionary, segments)
        if segments:
            raise ValueError(
                "control: structured keeps one order of units at one rate; this composite gives its parts their own tau"
            )
        order = unit_order(config, dictionary)
        scores = torch.empty(order.numel(), dtype=torch.float64)
        scores[order] = torch.arange(order.numel(), 0, -1, dtype=torch.float64)  # first in order: highest
        self.rank_scores = scores

    def next_mask(self, mask, trained, dense, next_round):
        cfg, d = self.config, self.dictionary
        scores = self.rank_scores.to(mask.device)
        if d.groups is None:
            return mask & ~drop_units(scores, mask, cfg.tau, cfg.prune_rounding)
        groups = d.groups.to(mask.device)
        alive = torch.zeros(scores.numel(), dtype=torch.bool, device=mask.device)
        alive[groups[mask]] = True
        return mask & ~drop_units(scores, alive, cfg.tau, cfg.prune_rounding)[groups]
