"""A trial kind's table of its own (``glth_core.results_view.Table``, as construct declares): one
line per value of its keys, mean and std over seeds of its metrics, its derived columns; printed
as its ``shown`` columns, or every column in CSV and JSON."""

from __future__ import annotations

import json

import pandas as pd

from glth_core.results_view import Shown, Table
from orchestrator.kind_results import declaring


def summarize_table(rows: pd.DataFrame, table: Table) -> pd.DataFrame:
    """Per value of ``table.keys``: ``seeds``, ``<metric>_mean`` and ``<metric>_std`` over the ok rows
    of the kinds declaring ``table``, then its derived columns (empty: no such row)."""
    rows = declaring(rows[rows["status"] == "ok"], table)
    if rows.empty:
        return pd.DataFrame()
    metrics = list(table.metrics)
    g = rows.groupby(list(table.keys), sort=True)
    out = g[metrics].mean().add_suffix("_mean").join(g[metrics].std().fillna(0.0).add_suffix("_std"))
    out.insert(0, "seeds", g["seed"].nunique())
    out = out.reset_index()
    for name, derive in table.derived.items():
        out[name] = derive(out)
    return out


def _shown(summary: pd.DataFrame, s: Shown) -> list[str]:
    values = [s.format.format(s.scale * v) for v in summary[s.column]]
    if s.spread is None:
        return values
    return [f"{v} ± {s.format.format(s.scale * d)}" for v, d in zip(values, summary[s.spread])]


def render_table(summary: pd.DataFrame, table: Table, fmt: str = "table", empty: str = "(no rows)") -> str:
    """``summary`` (``summarize_table``) as CSV, JSON, or a text table of the keys, ``seeds`` and the
    ``shown`` columns (``empty`` when it has no line)."""
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        return json.dumps(summary.to_dict("records"), indent=1, default=float)
    if summary.empty:
        return empty
    view = pd.DataFrame(
        {
            **{k: summary[k] for k in table.keys},
            "seeds": summary["seeds"],
            **{s.header: _shown(summary, s) for s in table.shown},
        }
    )
    return view.to_string(index=False)
