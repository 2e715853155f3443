"""Reading a sweep's runs back (``glth runs``, finding a trial's run), and adding to runs that
exist already: analysis metrics, figures, export benchmarks."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from orchestrator import defaults
from orchestrator.sinks.mlflow.client import (
    TAG_ROLE,
    TAG_SWEEP,
    TAG_TRIAL,
    _children,
    _file_store,
    _quoted,
    _search_all,
    _upload,
    client,
)
from orchestrator.sinks.mlflow.guard import _guarded, _is_unavailable
from orchestrator.sinks.mlflow.values import MAX_METRICS_PER_BATCH, MAX_TAG_VALUE, _chunks, _now_ms


class BadFilter(ValueError):
    """A ``glth runs`` query MLflow rejects (bad filter syntax, unknown experiment)."""


@_guarded
def search_children(tracking_uri: str, experiment: str, filter_string: str = "", full: bool = False) -> pd.DataFrame:
    """Child runs of ``experiment`` matching an MLflow filter, latest metrics as columns.

    The compact view keeps the run, its status, the final accuracy and compression and every
    ``params.X`` the filter names; ``full`` gives all params and metrics.
    """
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise BadFilter(f"--experiment: no MLflow experiment named {experiment!r} at {tracking_uri}")
    query = f"tags.`{TAG_ROLE}` = 'child'" + (f" and {filter_string}" if filter_string.strip() else "")
    try:
        runs = _search_all(c, exp.experiment_id, query)
    except MlflowException as e:
        if _is_unavailable(e):
            raise
        raise BadFilter(str(e).splitlines()[0]) from None
    rows = [
        {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "status": r.info.status,
            "trial_id": r.data.tags.get(TAG_TRIAL),
            **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
            **{f"params.{k}": v for k, v in r.data.params.items()},
        }
        for r in runs
    ]
    df = pd.DataFrame(rows)
    if df.empty or full:
        return df
    named = [
        f"params.{m}"
        for m in re.findall(r"params\.`?([\w.\-/ ]+?)`?\s*(?:=|!=|<|>|LIKE|ILIKE|IN)", filter_string, re.I)
    ]
    keep = ["run_name", "status", "metrics.test_accuracy", "metrics.compression", *named, "run_id"]
    return df[[k for k in dict.fromkeys(keep) if k in df.columns]]


def _store_exists(tracking_uri: str) -> bool:
    """False for a sqlite store whose file is missing: looking runs up must not create one."""
    return not defaults.store_missing(tracking_uri) and not _file_store(tracking_uri)


@_guarded
def find_runs(
    tracking_uri: str, experiment: str, sweep_id: str, trial_id: str | None = None
) -> tuple[str | None, str | None]:
    """(the sweep's parent run id, ``trial_id``'s child run id under it), each None when absent.
    Creates nothing (not even the store)."""
    if not _store_exists(tracking_uri):
        return None, None
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None, None
    parents = _search_all(
        c, exp.experiment_id, f"tags.`{TAG_SWEEP}` = {_quoted(sweep_id)} and tags.`{TAG_ROLE}` = 'parent'"
    )
    if not parents:
        return None, None
    parent_id = parents[0].info.run_id
    if trial_id is None:
        return parent_id, None
    child = _children(c, exp.experiment_id, parent_id, trial_id).get(trial_id)
    return parent_id, None if child is None else child.info.run_id


@_guarded
def log_extra(
    tracking_uri: str,
    run_id: str,
    metrics: Iterable[tuple[str, float, int]] = (),
    tags: dict | None = None,
    artifacts: dict | None = None,
    once_tag: tuple[str, str] | None = None,
) -> bool:
    """Add metrics (key, value, step), tags and artifacts (name → local file) to an existing run,
    finished or not. With ``once_tag = (key, value)`` nothing is logged when the run already has
    that tag value (the caller's digest of what it logs), and the tag is set last. True if logged."""
    c = client(tracking_uri)
    if once_tag is not None and c.get_run(run_id).data.tags.get(once_tag[0]) == once_tag[1]:
        return False
    now = _now_ms()
    batch = [Metric(k, float(v), now, int(s)) for k, v, s in metrics]
    for chunk in _chunks(batch, MAX_METRICS_PER_BATCH):
        c.log_batch(run_id, metrics=chunk, synchronous=True)
    for name, local in sorted((artifacts or {}).items()):
        if Path(local).is_file():
            _upload(c, run_id, name, Path(local))
    all_tags = {**{k: str(v)[:MAX_TAG_VALUE] for k, v in (tags or {}).items()}}
    if once_tag is not None:
        all_tags[once_tag[0]] = once_tag[1]
    if all_tags:
        c.log_batch(run_id, tags=[RunTag(k, v) for k, v in all_tags.items()], synchronous=True)
    return True


def log_to_parent(
    tracking_uri: str,
    experiment: str,
    sweep_id: str,
    metrics=(),
    artifacts: dict | None = None,
    tags: dict | None = None,
    once_tag: tuple[str, str] | None = None,
) -> str | None:
    """``log_extra`` on the sweep's parent run; None (nothing logged) when the sweep has none there."""
    parent_id, _ = find_runs(tracking_uri, experiment, sweep_id)
    if parent_id is not None:
        log_extra(tracking_uri, parent_id, metrics, tags, artifacts, once_tag)
    return parent_id
