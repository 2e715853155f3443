"""What a sweep's rows look like on the terminal after ``glth run`` and in ``glth results``.

The one place in the CLI that tells trial kinds apart: rows of a kind with its own summary (today
``construct``: one line per construction) are rendered by it; rows of every other kind are curves
(mean ± std over seeds per dictionary × τ × round), which orchestrator.analysis goes on to analyse.
(To be replaced by each trial kind's ``summary`` hook.)
"""

from __future__ import annotations

import pandas as pd


def has_own_summary(rows: pd.DataFrame) -> bool:
    """Rows whose trial kind renders itself instead of as accuracy-vs-compression curves."""
    return "kind" in rows and len(rows) > 0 and bool((rows["kind"] == "construct").all())


def render_results(rows: pd.DataFrame, fmt: str = "table", delta: float = 0.005) -> str:
    """The kind's own summary, or the curves' rounds (``delta``: winning-ticket tolerance as a fraction)."""
    from orchestrator import results

    if has_own_summary(rows):
        return results.render_construct(results.construct_summary(rows), fmt)
    return results.render(results.summarize(rows, delta), fmt)
