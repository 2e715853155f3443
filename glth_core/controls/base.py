"""What a control is: the rule a trajectory's next mask follows (and any training it adds), the
thing IMP's curve is compared against. One subclass of ``Control`` per module of this package,
one line in ``CONTROLS`` (``glth_core/controls/__init__.py``); nothing elsewhere names a control.

A control declares, with the defaults of IMP itself (``none``):

* ``scores`` — whose scores cut the next mask: ``"trained"`` (this round's trained coefficients),
  ``"dense"`` (the dense round's, kept in ``TrajectoryState.dense_scores``) or ``"random"``
  (uniform draws from the round's ``RANDOM_MASK_STREAM``); a control with a rule of its own
  overrides ``next_mask``;
* ``extra_seeds(config)`` — the seeds it draws with, recorded with the results;
* ``fresh_init_seed(config)`` / ``extra_starts(state)`` — a fresh initialization built at round 0
  and the extra trainings of each round (the ticket's mask trained from those starts, the way the
  ticket trains; the record is of the last);
* ``check(config)`` — options it cannot combine with (one line naming the field);
* ``marker``, ``line`` — its style in Fig. 2; ``suffix`` / ``label`` — its run-name and legend tags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from glth_core.sparsify import sparsify_segments
from glth_core.streams import RANDOM_MASK_STREAM, round_generator

if TYPE_CHECKING:
    from glth_core.trajectory import TrajectoryConfig, TrajectoryState

SCORES = ("trained", "dense", "random")


class Control:
    """One trajectory's next-mask rule (built per trajectory with its config, dictionary and the
    segments ``glth_core.pruning.layer_segments`` prunes by). Subclasses set ``name``."""

    name: ClassVar[str] = "none"
    #: whose scores cut the next mask (``SCORES``)
    scores: ClassVar[str] = "trained"
    #: Fig. 2's marker and line style (``orchestrator.plots``)
    marker: ClassVar[str] = "v"
    line: ClassVar[str] = "-."

    def __init__(self, config: TrajectoryConfig, dictionary, segments: tuple | None):
        self.config, self.dictionary, self.segments = config, dictionary, segments

    # -- what the control declares (class-level: no trajectory needed) ----------------------------
    @classmethod
    def is_imp(cls) -> bool:
        """True for IMP itself (``none``): the ticket's own curve, not a control of it."""
        return cls.name == Control.name

    @classmethod
    def suffix(cls) -> str:
        """The run name's tag: ``-name``, empty for IMP."""
        return "" if cls.is_imp() else f"-{cls.name}"

    @classmethod
    def label(cls) -> str:
        """The curve label's tag in tables and legends: `` [name]``, empty for IMP."""
        return "" if cls.is_imp() else f" [{cls.name}]"

    @classmethod
    def check(cls, config: TrajectoryConfig) -> None:
        """Options this control cannot combine with: a one-line ``ValueError`` naming the field."""

    @classmethod
    def extra_seeds(cls, config: TrajectoryConfig) -> dict:
        """The seeds this control draws with, by name (recorded with the results)."""
        return {}

    @classmethod
    def keeps_dense_scores(cls) -> bool:
        """Whether the trajectory keeps the dense round's trained coefficients."""
        return cls.scores == "dense"

    @classmethod
    def fresh_init_seed(cls, config: TrajectoryConfig) -> int | None:
        """The seed of a fresh initialization built at round 0 (``TrajectoryState.reinit``), if any."""
        return None

    @classmethod
    def extra_starts(cls, state: TrajectoryState) -> list:
        """The starts (``Weights``) of the trainings this control adds to every round."""
        return []

    # -- the rule -----------------------------------------------------------------------------------
    def next_mask(
        self, mask: torch.Tensor, trained: torch.Tensor, dense: torch.Tensor | None, next_round: int
    ) -> torch.Tensor:
        """The mask of round ``next_round`` from this round's ``mask`` and trained coefficients;
        ``dense``: the dense round's trained coefficients."""
        cfg = self.config
        scores = dense if self.scores == "dense" else trained
        if self.scores == "random":
            gen = round_generator(cfg.seed, next_round, stream=RANDOM_MASK_STREAM)
            scores = torch.rand(scores.shape, generator=gen).to(scores.device)
        return sparsify_segments(scores, mask, cfg.tau, self.dictionary.groups, self.segments, cfg.prune_rounding)
