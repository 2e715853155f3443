"""How a trial kind's results are read, declared on its ``Experiment`` (``results=``) as data:
the summary ``glth results`` and ``glth run`` print, the figures ``glth plot`` draws, and what the
live progress display shows of each round.

Two forms exist, each with defaults: ``Curves`` (accuracy against compression, one curve per
dictionary × control × τ × rewind, mean ± std over seeds per round; kinds imp and strong) and
``Table`` (a table of the kind's own: one line per value of some row columns, mean and std over
seeds of others; kind construct). The orchestrator renders each form (``orchestrator.cli.summary:
RENDERERS``, one entry a form) and draws each figure by the name a kind lists
(``orchestrator.plots: FIGURES``), so a kind that declares a form and figures that exist needs no
orchestrator code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: what the live display shows of a round by default: (row column, label), each as ``{:.4f}``
PROGRESS: tuple[tuple[str, str], ...] = (("test_accuracy", "test acc"), ("density", "density"))
#: the figures of accuracy-against-compression curves (names in ``orchestrator.plots.FIGURES``)
CURVE_FIGURES = ("accuracy_vs_compression", "rank_vs_round", "layer_views", "kept_coordinates")


@dataclass(frozen=True, kw_only=True)
class Results:
    """What every form declares."""

    #: the figures ``glth plot`` draws, by name (``orchestrator.plots.FIGURES``), in this order
    figures: tuple[str, ...] = ()
    #: the row columns the live progress display shows of each round: (column, label)
    progress: tuple[tuple[str, str], ...] = PROGRESS
    #: whether round 0 is a dense baseline that a winning-ticket threshold is measured against
    threshold: bool = False
    #: what figure titles call these results
    title: str = ""


@dataclass(frozen=True, kw_only=True)
class Curves(Results):
    """Accuracy against compression per curve × round, mean ± std over seeds; a winning-ticket
    threshold per curve when round 0 is a dense baseline (``threshold``); the rows then go on to
    the analysis (thresholds, peaks, overlap across seeds)."""

    figures: tuple[str, ...] = CURVE_FIGURES
    threshold: bool = True
    title: str = "IMP"


@dataclass(frozen=True)
class Shown:
    """One column of a ``Table`` as printed: ``format`` of ``scale`` × a summary column, and
    `` ± `` the same of ``spread`` when given (a ``_std`` column, say)."""

    header: str
    column: str
    format: str = "{:.4f}"
    scale: float = 1.0
    spread: str | None = None


@dataclass(frozen=True, kw_only=True)
class Table(Results):
    """A table of the kind's own: one line per value of ``keys`` (row columns), ``seeds`` and, for
    each of ``metrics`` (row columns), ``<metric>_mean`` and ``<metric>_std`` over seeds; then the
    ``derived`` columns ((summary frame) → a column). CSV and JSON give every column; the table
    shows the keys, ``seeds`` and ``shown``."""

    keys: tuple[str, ...]
    metrics: tuple[str, ...]
    derived: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    shown: tuple[Shown, ...] = ()
