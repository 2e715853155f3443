"""Rounds into runs, idempotently: the same machinery serves the driver's live callback and the
backfill of a whole sweep from its Parquet rows (``sync_sweep``, ``glth sync``).

- a round is logged only if its step is not in the history of ``PROBE_METRIC``; each round's
  metrics go in the same ``log_batch``, so the probe speaks for the whole round;
- a run's new rounds, a new run's params and an ended run's status tags go in one ``log_batch``
  (one sqlite commit) where MLflow's limits allow;
- ``finish_child`` does nothing when the run already ended with the same status and artifacts;
  ``sync_sweep`` reads no history of a run that ended with its status (both writers end a run
  only after its rounds are logged), so the sync at a sweep's end is cheap after live logging;
- a trial is complete when its ok rows cover ``rows_expected`` rounds (its kind says how many);
  its run is named by ``run_name`` (made by the kind), both carried by every row.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from glth_core import controls
from orchestrator.sinks.mlflow import curves
from orchestrator.sinks.mlflow.client import (
    TAG_ARTIFACTS,
    TAG_STATUS,
    _children,
    _find_or_create_child,
    _find_or_create_parent,
    _upload,
    client,
    ensure_experiment,
)
from orchestrator.sinks.mlflow.guard import _guarded
from orchestrator.sinks.mlflow.values import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE,
    _chunks,
    _now_ms,
    _number,
)

# logged at step = round; rank only for grouped dictionaries (None otherwise)
ROUND_METRICS = (
    "test_accuracy",
    "test_loss",
    "val_accuracy",
    "train_accuracy",
    "train_loss",
    "density",
    "compression",
    "kept",
    "rank",
    "wall_seconds",
    "eval_seconds",
)
#: constructive strong tickets only (absent values are skipped)
CONSTRUCT_METRICS = (
    "target_accuracy",
    "max_weight_error",
    "mean_weight_error",
    "max_output_error",
    "kept_per_target",
    "random_per_target",
    "construct_seconds",
)
METRICS = ROUND_METRICS + CONSTRUCT_METRICS  # the usual ones; any other number in a row is logged too
#: columns that say which trial and round a row is, never metrics (even where they are numbers)
IDENTITY = frozenset(
    {
        "sweep_id",
        "trial_id",
        "kind",
        "run_name",
        "rows_expected",
        "config",
        "round",
        "status",
        "dataset",
        "model",
        "dictionary",
        "dictionary_kind",
        "basis",
        "control",
        "tau",
        "rewind",
        "seed",
        "node_id",
        "resumed_from",
    }
)
PROBE_METRIC = "density"  # every ok round has it; its history says which rounds are logged
SYSTEM_PREFIX = "system/"


def metric_values(row: dict) -> dict[str, float]:
    """The row's metrics: every int/float column that is not an identity column (bools, None,
    NaN and text are left out)."""
    out = {}
    for k, v in row.items():
        if k in IDENTITY or isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            continue
        value = _number(v)
        if value is not None:
            out[k] = value
    return out


@_guarded
def logged_rounds(client: MlflowClient, run_id: str) -> set[int]:
    return {int(m.step) for m in client.get_metric_history(run_id, PROBE_METRIC)}


def _rows_by_round(records: Iterable[dict]) -> dict[int, dict]:
    """The ok rows, one per round (last wins)."""
    return {int(r["round"]): r for r in records if r.get("status", "ok") == "ok"}


def _round_metrics(row: dict, step: int, timestamp: int, extra: dict | None = None) -> list[Metric]:
    values = metric_values(row)
    if PROBE_METRIC not in values:
        return []  # without the probe the round could not be recognised as logged: leave it out
    values.update({SYSTEM_PREFIX + k: float(v) for k, v in (extra or {}).items() if _number(v) is not None})
    return [Metric(k, v, timestamp, step) for k, v in values.items()]


def _pending_rounds(
    client, run_id, records, known_logged_rounds, extra: dict | None = None
) -> tuple[set[int], list[list[Metric]], set[int]]:
    """(rounds already logged, the metrics of each round not yet logged, those rounds).
    ``extra``: system metrics (name → value) logged with every new round, under ``system/``."""
    logged = set(known_logged_rounds) if known_logged_rounds is not None else logged_rounds(client, run_id)
    now, rounds, new = _now_ms(), [], set()
    for step, row in sorted(_rows_by_round(records).items()):
        if step in logged:
            continue
        metrics = _round_metrics(row, step, now, extra)
        if metrics:
            rounds.append(metrics)
            new.add(step)
    return logged, rounds, new


def _send(client, run_id: str, rounds: list[list[Metric]], params: list = (), tags: list = ()) -> None:
    """Log ``rounds`` (one metric list per round), ``params`` and ``tags`` in as few ``log_batch``
    calls (sqlite: commits) as MLflow's limits allow — one in the usual case; params and tags ride
    with the first. A round never straddles two calls, so the probe speaks for its round."""
    params, tags = list(params), list(tags)
    if len(params) > MAX_PARAMS_PER_BATCH:  # a huge config: its params on their own, in chunks
        for chunk in _chunks(params, MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=chunk, synchronous=True)
        params = []
    room = MAX_METRICS_PER_BATCH - len(params) - len(tags)  # one call carries 1000 values at most
    batches: list[list[Metric]] = [[]]
    for metrics in rounds:
        if batches[-1] and len(batches[-1]) + len(metrics) > room:
            batches.append([])
        batches[-1].extend(metrics)
    for i, batch in enumerate(batches):
        if batch or (i == 0 and (params or tags)):
            client.log_batch(
                run_id, metrics=batch, params=params if i == 0 else [], tags=tags if i == 0 else [], synchronous=True
            )


def _log_new_rounds(client, run_id, records, known_logged_rounds, extra: dict | None = None) -> tuple[set[int], int]:
    """``extra``: system metrics (name → value) logged with every new round, under ``system/``."""
    logged, rounds, new = _pending_rounds(client, run_id, records, known_logged_rounds, extra)
    _send(client, run_id, rounds)
    return logged | new, len(new)


@_guarded
def log_rounds(
    client: MlflowClient, run_id: str, records: Iterable[dict], known_logged_rounds: set[int] | None = None
) -> set[int]:
    """Log the rounds not yet in the run (step = round); returns every round now logged.

    ``known_logged_rounds`` (what an earlier call returned, in the same process) skips the
    lookup of the run's history; pass None whenever another process may have logged since.
    """
    return _log_new_rounds(client, run_id, records, known_logged_rounds)[0]


def _present(artifacts: dict | None) -> dict[str, Path]:
    return {name: Path(p) for name, p in sorted((artifacts or {}).items()) if Path(p).is_file()}


def _end_tags(status: str, artifact_names: str) -> list[RunTag]:
    return [RunTag(TAG_STATUS, str(status)[:MAX_TAG_VALUE]), RunTag(TAG_ARTIFACTS, artifact_names)]


def _target(status: str) -> str:
    """The run status a trial's status text ends it with."""
    return "FINISHED" if status == "ok" else "FAILED"


def _ended_with(run, status: str) -> bool:
    """Whether ``run`` ended with ``status`` (its run status and ``glth.status`` tag). Both writers
    end a run only after logging its rounds, so such a run has every round."""
    return run.info.status == _target(status) and run.data.tags.get(TAG_STATUS) == str(status)[:MAX_TAG_VALUE]


def _finish(client, run, status: str, artifacts: dict | None) -> bool:
    present, run_id = _present(artifacts), run.info.run_id
    if _ended_with(run, status) and run.data.tags.get(TAG_ARTIFACTS) == ",".join(present):
        return False
    for name, local in present.items():
        _upload(client, run_id, name, local)
    client.log_batch(run_id, tags=_end_tags(status, ",".join(present)), synchronous=True)
    if run.info.status != _target(status):
        client.set_terminated(run_id, _target(status))
    return True


@_guarded
def finish_child(client: MlflowClient, run_id: str, status: str, artifacts: dict | None = None) -> bool:
    """End the run FINISHED (status "ok") or FAILED, tag ``glth.status``, log the artifacts
    (name → local file; missing files are skipped and retried next time). True if anything changed."""
    return _finish(client, client.get_run(run_id), status, artifacts)


# -- what a trial's rows say about its run ---------------------------------------------------------


def _records(rows) -> list[dict]:
    if isinstance(rows, pd.DataFrame):
        return rows.to_dict("records")
    return list(rows)


def row_config(row: dict) -> dict:
    return json.loads(row["config"]) if isinstance(row.get("config"), str) else {}


def _run_name(row: dict, config: dict) -> str:
    """``run_name`` as the trial's kind made it; rows written before it existed get the old rule."""
    name = row.get("run_name")
    if isinstance(name, str) and name:
        return name
    rewind = config.get("rewind", row.get("rewind"))
    rewind = f"step{rewind['step']}" if isinstance(rewind, dict) else rewind
    ctl = controls.suffix(config.get("control"))
    return f"{row.get('dictionary')}{ctl}-tau{float(row.get('tau')):g}-{rewind}-s{row.get('seed')}"


def rows_expected(row: dict, config: dict) -> int | None:
    """How many ok rounds complete the trial: the row's ``rows_expected``, else ``config["rounds"]``."""
    for v in (row.get("rows_expected"), config.get("rounds")):
        if _number(v) is not None:
            return int(v)
    return None


def outcome_of(last_row: dict, ok_rounds: set[int], wanted: int | None) -> str | None:
    """The status text of an ended trial, or None while it still runs."""
    if last_row.get("status", "ok") != "ok":
        return str(last_row["status"])
    return "ok" if wanted is not None and set(range(int(wanted))) <= ok_rounds else None


def _trial_outcome(rows: list[dict], config: dict) -> str | None:
    last = max(rows, key=lambda r: int(r["round"]))
    ok = {int(r["round"]) for r in rows if r.get("status", "ok") == "ok"}
    return outcome_of(last, ok, rows_expected(last, config))


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
