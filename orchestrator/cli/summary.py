"""What a sweep's rows look like on the terminal after ``glth run`` and in ``glth results``.

Each trial kind says how its rows are read (``glth_core.experiment.Experiment.summary``): as
curves (mean ± std over seeds per dictionary × τ × round, which orchestrator.analysis goes on
to analyse) or with a table of its own (a construction: one line per ε × n × distribution).
Trials that failed are listed with their status, never analysed.
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


def render_failures(failed: list[str], rows: pd.DataFrame) -> str:
    """The failed trials, one line each: the trial and why (its last row's status; a trial whose rows
    are all ok is short of rounds: a worker lost, its retries used up)."""
    has = len(rows) > 0 and "status" in rows
    last = rows.sort_values("round").groupby("trial_id")["status"].last() if has else pd.Series(dtype=object)
    ok = rows[rows["status"] == "ok"].groupby("trial_id")["round"].nunique() if has else pd.Series(dtype=int)

    def why(trial: str) -> str:
        status = last.get(trial)
        return (
            str(status) if status is not None and status != "ok" else f"incomplete: {int(ok.get(trial, 0))} rounds ok"
        )

    table = pd.DataFrame({"trial": failed, "status": [why(t) for t in failed]})
    return f"failed trials ({len(failed)}):\n{table.to_string(index=False)}"
