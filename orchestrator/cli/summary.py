"""What a sweep's rows look like on the terminal after ``glth run`` and in ``glth results``.

Each trial kind declares how its rows are read (``Experiment.results``, a form of
``glth_core.results_view``), and ``RENDERERS`` prints each form: curves (mean ± std over seeds per
dictionary × τ × round, which orchestrator.analysis goes on to analyse) or a table of the kind's
own (construct: one line per ε × n × distribution). Trials that failed are listed with their
status, never analysed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pandas as pd

from glth_core.results_view import Curves, Results, Table
from orchestrator.kind_results import results_of
from orchestrator.results import NO_ROWS, render, summarize
from orchestrator.table_summary import render_table, summarize_table


class Renderer(NamedTuple):
    #: (results, rows, fmt, delta, select_on) → the printed summary
    render: Callable[[Results, pd.DataFrame, str, float, str], str]
    #: whether the rows go on to orchestrator.analysis (thresholds, peaks, overlap) after it
    analysed: bool


def _curves(_: Curves, rows: pd.DataFrame, fmt: str, delta: float, select_on: str) -> str:
    return render(summarize(rows, delta, select_on), fmt)


def _table(table: Table, rows: pd.DataFrame, fmt: str, delta: float, select_on: str) -> str:
    return render_table(summarize_table(rows, table), table, fmt, empty=f"({NO_ROWS})")


#: how each form of results is printed, by its class (a subclass finds its base's entry)
RENDERERS: dict[type, Renderer] = {Curves: Renderer(_curves, analysed=True), Table: Renderer(_table, analysed=False)}


def renderer_of(results: Results) -> Renderer:
    return next(RENDERERS[c] for c in type(results).__mro__ if c in RENDERERS)


def has_own_summary(rows: pd.DataFrame) -> bool:
    """Rows whose trial kind prints a summary of its own, not curves that the analysis goes on with."""
    return len(rows) > 0 and not renderer_of(results_of(rows)).analysed


def render_results(rows: pd.DataFrame, fmt: str = "table", delta: float = 0.005, select_on: str = "val") -> str:
    """The summary the rows' kind declares (``delta``: winning-ticket tolerance as a fraction)."""
    if rows.empty:
        return f"({NO_ROWS})"
    results = results_of(rows)
    return renderer_of(results).render(results, rows, fmt, delta, select_on)


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
