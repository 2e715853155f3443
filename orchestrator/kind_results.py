"""What the trial kinds of a sweep's rows declare about reading them (``Experiment.results``, a form
of ``glth_core.results_view``), looked up through the kind registry (``glth_core.kinds``): the
orchestrator asks these questions here and never compares a kind's name."""

from __future__ import annotations

import pandas as pd

from glth_core import kinds
from glth_core.experiment import Experiment
from glth_core.results_view import Curves, Results


def experiments(rows: pd.DataFrame) -> list[Experiment]:
    """The kinds the rows come from, in registry order (rows without a ``kind`` column: the default kind)."""
    names = set(rows["kind"].dropna()) if "kind" in rows and len(rows) else {kinds.DEFAULT}
    return [kinds.get(k) for k in sorted(names, key=list(kinds.KINDS).index)]


def results_of(rows: pd.DataFrame) -> Results:
    """How the rows are read: their kinds' declaration when they agree, else accuracy-against-
    compression curves (every kind's rows have the round columns those need)."""
    found = []
    for e in experiments(rows):
        if e.results not in found:
            found.append(e.results)
    return found[0] if len(found) == 1 else Curves()


def measures_threshold(rows: pd.DataFrame) -> bool:
    """Whether some of the rows' kinds have a dense baseline at round 0 that a winning-ticket
    threshold is measured against (a strong-ticket search's first level is an untrained network)."""
    return any(e.results.threshold for e in experiments(rows))


def declaring(rows: pd.DataFrame, results: Results) -> pd.DataFrame:
    """The rows whose kind declares ``results``."""
    if "kind" not in rows:
        return rows.iloc[:0]
    return rows[rows["kind"].map(lambda k: kinds.get(k).results == results)]


def progress_fields(kind: str) -> tuple[tuple[str, str], ...]:
    """What the live progress display shows of a round of ``kind``: (row column, label)."""
    return kinds.get(kind).results.progress
