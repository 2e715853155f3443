"""The backfill of a whole sweep from its Parquet rows (``sync_sweep``, ``glth sync``): the same
machinery as the driver's live callback (``rounds``, ``finish``), so a second call adds nothing;
it reads no history of a run that ended with its status, so the sync at a sweep's end is cheap
after live logging.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.sinks.mlflow import curves
from orchestrator.sinks.mlflow.client import (
    _children,
    _find_or_create_child,
    _find_or_create_parent,
    client,
    ensure_experiment,
)
from orchestrator.sinks.mlflow.finish import _ended_with, _finish, _records, _run_name, _trial_outcome, row_config
from orchestrator.sinks.mlflow.guard import _guarded
from orchestrator.sinks.mlflow.rounds import _log_new_rounds


@_guarded
def sync_sweep(
    tracking_uri: str,
    experiment: str,
    sweep_id: str,
    spec_text: str,
    records,
    artifacts_by_trial: dict | None = None,
    parent_tags: dict | None = None,
    metas: Iterable[dict] | None = None,
) -> dict:
    """Create or complete every run of a sweep from its Parquet rows; a second call adds nothing.

    A trial's run ends FINISHED once its ok rows cover ``rows_expected`` rounds, FAILED when its
    last row is an error; the parent ends once every trial has (FAILED if any trial failed).
    The parent also gets the sweep's curves (``curves.py``) for every round all their seeds
    have; ``metas`` (one row-meta per trial of the sweep, see ``curves.CurveBook``) says which
    trials each curve has; without it, the trials that have rows. Counts: runs and trial steps
    (the parent's curve steps are not counted).
    """
    c = client(tracking_uri)
    exp_id = ensure_experiment(c, experiment)
    parent_id, parent_created = _find_or_create_parent(c, exp_id, sweep_id, spec_text, parent_tags)
    counts = {"parents_created": int(parent_created), "children_created": 0, "steps_logged": 0, "children_finished": 0}
    rows_all = _records(records)
    by_trial: dict[str, list[dict]] = {}
    for r in rows_all:
        by_trial.setdefault(str(r["trial_id"]), []).append(r)
    existing = _children(c, exp_id, parent_id)  # one search for all the children
    outcomes = []
    for tid, rows in sorted(by_trial.items()):
        last = rows[-1]
        config = row_config(last)
        outcome = _trial_outcome(rows, config)
        outcomes.append(outcome)
        done = existing.get(tid)
        if outcome is not None and done is not None and _ended_with(done, outcome):
            # ended (by the live writer) after its rounds were logged: no history to read, at most artifacts
            counts["children_finished"] += int(_finish(c, done, outcome, (artifacts_by_trial or {}).get(tid)))
            continue
        run_id, created = _find_or_create_child(
            c, exp_id, parent_id, tid, config, _run_name(last, config), known=existing, dataset=last.get("dataset")
        )
        _, n_new = _log_new_rounds(c, run_id, rows, set() if created else None)
        counts["children_created"] += int(created)
        counts["steps_logged"] += n_new
        if outcome is not None:
            run = c.get_run(run_id) if created else existing[tid]
            counts["children_finished"] += int(_finish(c, run, outcome, (artifacts_by_trial or {}).get(tid)))
    book = curves.CurveBook(list(metas) if metas is not None else curves.metas_from_rows(rows_all))
    book.add_all(rows_all)
    curves.log_ready(c, parent_id, book, {})
    if outcomes and None not in outcomes and set(book.trial_curve) <= set(by_trial):  # no trial without rows
        target = "FINISHED" if all(o == "ok" for o in outcomes) else "FAILED"
        if c.get_run(parent_id).info.status != target:
            c.set_terminated(parent_id, target)
    return counts
