"""What a sweep's rows look like on the terminal after ``glth run`` and in ``glth results``.

Each trial kind says how its rows are read (``glth_core.experiment.Experiment.summary``): as
curves (mean ± std over seeds per dictionary × τ × round, which orchestrator.analysis goes on
to analyse) or with a table of its own (a construction: one line per ε × n × distribution).
"""

from __future__ import annotations

import pandas as pd

from orchestrator.results import render_rows, summary_of


def has_own_summary(rows: pd.DataFrame) -> bool:
    """Rows whose trial kind renders itself instead of as accuracy-vs-compression curves."""
    return len(rows) > 0 and summary_of(rows) != "curves"


def render_results(rows: pd.DataFrame, fmt: str = "table", delta: float = 0.005, select_on: str = "val") -> str:
    """The kind's own summary, or the curves' rounds (``delta``: winning-ticket tolerance as a fraction)."""
    return render_rows(rows, fmt, delta, select_on)
