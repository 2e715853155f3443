"""A trial's rounds into its MLflow run, idempotently: what of a row is a metric, which rounds a
run has, and logging the rest (the driver's live callback and the backfill share it).

- a round is logged only if its step is not in the history of ``PROBE_METRIC``; each round's
  metrics go in the same ``log_batch``, so the probe speaks for the whole round;
- a run's new rounds, a new run's params and an ended run's status tags go in one ``log_batch``
  (one sqlite commit) where MLflow's limits allow;
- a row's metrics are its numbers that are not ``IDENTITY`` columns: the round columns every kind
  writes (``ROUND_METRICS``, from ``glth_core.experiment.ROUND_COLUMNS``) and whatever a kind adds.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from glth_core.experiment import DESCRIBE_COLUMNS, ROUND_COLUMNS
from orchestrator.sinks.mlflow.guard import _guarded
from orchestrator.sinks.mlflow.values import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, _chunks, _now_ms, _number

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
        "seed",
        "node_id",
        "resumed_from",
        *DESCRIBE_COLUMNS,  # the dictionary, its kind and variant, tau, rewind, the control
    }
)
#: the round columns every kind writes, logged at step = round (rank: null for ungrouped dictionaries,
#: then not logged); any other number in a row, a kind's own columns, is logged too
ROUND_METRICS = tuple(k for k in ROUND_COLUMNS if k not in IDENTITY)
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
    now = _now_ms()
    rounds, new = _new_rounds({step: (row, extra, now) for step, row in _rows_by_round(records).items()}, logged)
    return logged, rounds, new


def _new_rounds(
    held: dict[int, tuple[dict, dict | None, int]], logged: set[int]
) -> tuple[list[list[Metric]], set[int]]:
    """The metrics of each round of ``held`` (round → (its ok row, the system metrics reported
    with it, when it was reported in ms)) that is not in ``logged``, oldest round first; and
    those rounds."""
    rounds, new = [], set()
    for step, (row, extra, timestamp) in sorted(held.items()):
        if step in logged:
            continue
        metrics = _round_metrics(row, step, timestamp, extra)
        if metrics:
            rounds.append(metrics)
            new.add(step)
    return rounds, new


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
