"""``glth run SPEC --dry-run``: what a run would compute, from plain data, without Ray or writes.

``plan(trials, rows)`` lists each trial with the grid axes that vary across the sweep, how many of
its rounds are already stored and how many are left; ``render`` prints it with the totals and, from
the stored rows' ``wall_seconds``, an estimate of the compute left.

A trial is ``done`` when rounds 0 … rows_expected−1 all have status ok, ``partial`` when some do,
``pending`` when none does, and ``failed`` when one of its rows has another status (a diverged
loss): ``glth run`` judges completion by the same rule (orchestrator.sinks.parquet.completed_trials).
"""

from __future__ import annotations

import math

import pandas as pd

from orchestrator.axes import cell, flatten, varying_axes

STATUSES = ("done", "partial", "failed", "pending")
FIXED = ["trial_id", "run_name", "kind"]
COUNTS = ["status", "rows_expected", "rounds_done", "rounds_left"]


def plan(trials: list[dict], rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: trial_id, run_name, kind, the varying axes, status, rows_expected,
    rounds_done, rounds_left. ``rows`` are stored rows (columns trial_id, round, status; others ignored)."""
    axes = varying_axes([t.get("config", {}) for t in trials])
    ok_rounds: dict[str, set] = {}
    bad: set[str] = set()
    if rows is not None and len(rows):
        for tid, rnd, status in zip(rows["trial_id"], rows["round"], rows["status"]):
            if status == "ok":
                ok_rounds.setdefault(tid, set()).add(int(rnd))
            else:
                bad.add(tid)
    out = []
    for t in trials:
        expected = int(t["rows_expected"])
        done = len(ok_rounds.get(t["trial_id"], set()) & set(range(expected)))
        if t["trial_id"] in bad and done < expected:
            status = "failed"
        else:
            status = "done" if done >= expected else "partial" if done else "pending"
        flat = flatten(t.get("config", {}))
        out.append(
            {
                "trial_id": t["trial_id"],
                "run_name": t.get("run_name", ""),
                "kind": t.get("kind", ""),
                **{a: cell(flat.get(a)) for a in axes},
                "status": status,
                "rows_expected": expected,
                "rounds_done": done,
                "rounds_left": expected - done,
            }
        )
    df = pd.DataFrame(out, columns=[*FIXED, *axes, *COUNTS])
    for a in axes:  # as given: an axis set in some trials only stays 0, not 0.0 beside a missing cell
        df[a] = pd.Series([r[a] for r in out], index=df.index, dtype=object)
    return df


def seconds_per_round(rows: pd.DataFrame) -> float | None:
    """Mean ``wall_seconds`` of the stored ok rows, or None when there are none to go by."""
    if rows is None or not len(rows) or "wall_seconds" not in rows:
        return None
    s = rows.loc[rows["status"] == "ok", "wall_seconds"].dropna()
    return float(s.mean()) if len(s) else None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render(plan: pd.DataFrame, seconds_per_round: float | None = None, concurrency: int | None = None) -> str:
    """The plan as a table, then one line per total: trials by status, and what a run would compute."""
    counts = plan["status"].value_counts()
    by_status = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES if counts.get(s, 0) or s != "failed")
    todo = plan[plan["status"] != "done"]
    shown = plan.drop(columns=["kind"] if plan["kind"].nunique() <= 1 else []).astype(object)
    lines = [
        shown.where(shown.notna(), "-").to_string(index=False) if len(plan) else "no trials",
        "",
        f"{len(plan)} trials: {by_status}",
    ]
    left = int(todo["rounds_left"].sum())
    if todo.empty:
        lines.append("would compute: nothing (every trial is complete; --force recomputes)")
        return "\n".join(lines)
    what = f"would compute: {len(todo)} trials, {left} rounds"
    if seconds_per_round is not None and not math.isnan(seconds_per_round):
        total = left * seconds_per_round
        what += f" (≈ {_duration(total)} of trial time at {seconds_per_round:.2g} s a round, from the stored rows"
        if concurrency and concurrency > 1:
            what += (
                f"; ≈ {_duration(total / min(concurrency, len(todo)))} wall with {min(concurrency, len(todo))} at once"
            )
        what += ")"
    else:
        what += " (no stored rounds to estimate the time from)"
    lines.append(what)
    return "\n".join(lines)
