"""MLflow logging that can be repeated: one parent run per sweep, one child run per trial.

Every function here is idempotent, because a trial may be retried from a checkpoint and
``glth sync`` replays a whole sweep from its Parquet rows:

- runs are found by tags before any is created (``glth.sweep_id`` + ``glth.role = parent``;
  ``glth.trial_id`` + ``mlflow.parentRunId``), and the identifying tags are set in ``create_run``
  itself, so no crash leaves an untagged run that a later call would duplicate;
- a round is logged only if its step is not in the history of ``PROBE_METRIC``; each round's
  metrics go in the same ``log_batch``, so the probe speaks for the whole round;
- ``finish_child`` does nothing when the run already ended with the same status and artifacts.

A tracking server that is down raises ``MlflowUnavailable`` quickly (no retries, a short timeout)
so the caller can carry on and backfill later with ``sync_sweep``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

# logged at step = round; rank only for grouped dictionaries (None otherwise)
ROUND_METRICS = ("test_accuracy", "test_loss", "val_accuracy", "train_accuracy", "train_loss",
                 "density", "compression", "kept", "rank", "wall_seconds")
#: constructive strong tickets only (absent values are skipped)
CONSTRUCT_METRICS = ("target_accuracy", "max_weight_error", "mean_weight_error", "max_output_error",
                     "kept_per_target", "random_per_target", "construct_seconds")
METRICS = ROUND_METRICS + CONSTRUCT_METRICS
PROBE_METRIC = "density"  # every ok round has it; its history says which rounds are logged
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
# MLflow ≥ 2.x accepts 6000 chars, older servers 500: stay within what every server takes
MAX_PARAM_VALUE = 500
TRUNCATED = "...[truncated]"
MAX_TAG_VALUE = 5000

TAG_SWEEP, TAG_TRIAL, TAG_ROLE = "glth.sweep_id", "glth.trial_id", "glth.role"
TAG_STATUS, TAG_ARTIFACTS, TAG_SPEC = "glth.status", "glth.artifacts", "glth.spec"
TAG_PARENT = "mlflow.parentRunId"

# Fail fast when the server is down. Values the user already exported win.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class MlflowUnavailable(RuntimeError):
    """The tracking store cannot be reached now; the Parquet rows let ``sync_sweep`` catch up."""


class BadFilter(ValueError):
    """A ``glth runs`` query MLflow rejects (bad filter syntax, unknown experiment)."""


# -- failing fast and failing with one exception ----------------------------------------------

_env_lock = threading.Lock()
_env_depth = 0
_env_added: list[str] = []


@contextlib.contextmanager
def _short_http() -> Iterator[None]:
    """Set ``HTTP_ENV`` (where unset) while any guarded call runs; restore it after the last."""
    global _env_depth
    with _env_lock:
        if _env_depth == 0:
            _env_added[:] = [k for k in HTTP_ENV if k not in os.environ]
            for k in _env_added:
                os.environ[k] = HTTP_ENV[k]
        _env_depth += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_depth -= 1
            if _env_depth == 0:
                for k in _env_added:
                    os.environ.pop(k, None)


_UNAVAILABLE_TEXT = ("failed with exception", "failed with timeout exception", "max retries exceeded",
                     "connection refused", "connection aborted", "database is locked")


def _is_unavailable(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
            return True
        if isinstance(e, MlflowException):
            if e.get_http_status_code() in (502, 503, 504) or e.error_code == "TEMPORARILY_UNAVAILABLE":
                return True
        if any(t in str(e).lower() for t in _UNAVAILABLE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    with _short_http():
        try:
            yield
        except MlflowUnavailable:
            raise
        except Exception as e:
            if _is_unavailable(e):
                raise MlflowUnavailable(str(e).splitlines()[0][:300]) from e
            raise


def _guarded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _guard():
            return fn(*args, **kwargs)
    return wrapper


# -- small helpers -----------------------------------------------------------------------------

def _quoted(value: str) -> str:
    value = str(value)
    if "'" in value:
        raise ValueError(f"{value!r}: quotes are not allowed in ids")
    return f"'{value}'"


def _number(v) -> float | None:
    """A metric value, or None for missing (None, NaN, pandas NA)."""
    if v is None or v is pd.NA:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested dicts → ``a.b`` keys; values as strings, lists as JSON, long values truncated."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, key + "."))
            continue
        text = json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple, dict)) else str(v)
        if len(text) > MAX_PARAM_VALUE:
            text = text[:MAX_PARAM_VALUE - len(TRUNCATED)] + TRUNCATED
        out[key] = text
    return out


def _file_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _artifact_root(tracking_uri: str) -> str | None:
    """For a sqlite store: ``<db dir>/mlartifacts`` (MLflow would otherwise use ``./mlruns``)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///"):]).expanduser().resolve()
    return (db.parent / "mlartifacts").as_uri()


# -- runs --------------------------------------------------------------------------------------

@_guarded
def client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient for a server or a database store; a ``./mlruns`` file store is refused."""
    if not tracking_uri or _file_store(tracking_uri):
        raise ValueError(f"tracking URI {tracking_uri!r}: use sqlite:///PATH or http(s)://HOST, not a file store")
    return MlflowClient(tracking_uri=tracking_uri)


@_guarded
def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    if artifact_location is None:
        artifact_location = _artifact_root(str(getattr(client._tracking_client, "tracking_uri", "")))
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":  # created by a concurrent caller
            raise
        return client.get_experiment_by_name(name).experiment_id


def _find_or_create_parent(client, experiment_id, sweep_id, spec_text, tags) -> tuple[str, bool]:
    found = _search_all(client, experiment_id,
                        f"tags.`{TAG_SWEEP}` = {_quoted(sweep_id)} and tags.`{TAG_ROLE}` = 'parent'")
    if found:
        run, created = found[0], False
        missing = {k: str(v) for k, v in (tags or {}).items() if k not in run.data.tags}
        if missing:
            client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in missing.items()], synchronous=True)
        have_spec = run.data.tags.get(TAG_SPEC) == "logged"
    else:
        run_tags = {**{k: str(v) for k, v in (tags or {}).items()}, TAG_SWEEP: sweep_id, TAG_ROLE: "parent"}
        run, created = client.create_run(experiment_id, tags=run_tags, run_name=sweep_id), True
        have_spec = False
    if not have_spec:
        client.log_text(run.info.run_id, spec_text, "spec.yaml")
        client.set_tag(run.info.run_id, TAG_SPEC, "logged")
    return run.info.run_id, created


@_guarded
def get_or_create_parent(client: MlflowClient, experiment_id: str, sweep_id: str, spec_text: str,
                         tags: dict | None = None) -> str:
    """The sweep's parent run (tag ``glth.sweep_id``); a new one gets ``tags`` and ``spec.yaml``."""
    return _find_or_create_parent(client, experiment_id, sweep_id, spec_text, tags)[0]


def _children(client, experiment_id, parent_run_id, trial_id: str | None = None) -> dict:
    """trial_id → its oldest child run under the parent."""
    query = f"tags.`{TAG_PARENT}` = {_quoted(parent_run_id)}"
    if trial_id is not None:
        query += f" and tags.`{TAG_TRIAL}` = {_quoted(trial_id)}"
    out = {}
    for run in _search_all(client, experiment_id, query):
        out.setdefault(run.data.tags.get(TAG_TRIAL), run)
    return out


def _log_params(client, run_id: str, params: dict[str, str], existing: dict[str, str]) -> None:
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    for chunk in _chunks(new, MAX_PARAMS_PER_BATCH):  # one call unless the config is huge
        client.log_batch(run_id, params=chunk, synchronous=True)


def _find_or_create_child(client, experiment_id, parent_run_id, trial_id, params, run_name,
                          known: dict | None = None) -> tuple[str, bool]:
    """``known``: the parent's children when the caller already searched them."""
    flat = flatten_params(params or {})
    if known is None:
        known = _children(client, experiment_id, parent_run_id, trial_id)
    existing = known.get(trial_id)
    if existing is not None:
        _log_params(client, existing.info.run_id, flat, existing.data.params)  # a crash after create
        return existing.info.run_id, False
    tags = {TAG_PARENT: parent_run_id, TAG_TRIAL: trial_id, TAG_ROLE: "child"}
    run = client.create_run(experiment_id, tags=tags, run_name=run_name)
    _log_params(client, run.info.run_id, flat, {})
    return run.info.run_id, True


@_guarded
def get_or_create_child(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str,
                        params: dict, run_name: str | None = None) -> str:
    """The trial's child run (tag ``glth.trial_id`` under the parent); params = the flattened config."""
    return _find_or_create_child(client, experiment_id, parent_run_id, trial_id, params, run_name)[0]


# -- rounds ------------------------------------------------------------------------------------

@_guarded
def logged_rounds(client: MlflowClient, run_id: str) -> set[int]:
    return {int(m.step) for m in client.get_metric_history(run_id, PROBE_METRIC)}


def _rows_by_round(records: Iterable[dict]) -> dict[int, dict]:
    """The ok rows, one per round (last wins)."""
    return {int(r["round"]): r for r in records if r.get("status", "ok") == "ok"}


def _round_metrics(row: dict, step: int, timestamp: int) -> list[Metric]:
    values = {k: _number(row.get(k)) for k in METRICS}
    if values[PROBE_METRIC] is None:
        return []  # without the probe the round could not be recognised as logged: leave it out
    return [Metric(k, v, timestamp, step) for k, v in values.items() if v is not None]


def _log_new_rounds(client, run_id, records, known_logged_rounds) -> tuple[set[int], int]:
    logged = set(known_logged_rounds) if known_logged_rounds is not None else logged_rounds(client, run_id)
    now, batches, new = _now_ms(), [[]], set()
    for step, row in sorted(_rows_by_round(records).items()):
        if step in logged:
            continue
        metrics = _round_metrics(row, step, now)
        if not metrics:
            continue
        if len(batches[-1]) + len(metrics) > MAX_METRICS_PER_BATCH:
            batches.append([])  # a round never straddles two batches
        batches[-1].extend(metrics)
        new.add(step)
    for batch in batches:
        if batch:
            client.log_batch(run_id, metrics=batch, synchronous=True)
    return logged | new, len(new)


@_guarded
def log_rounds(client: MlflowClient, run_id: str, records: Iterable[dict],
               known_logged_rounds: set[int] | None = None) -> set[int]:
    """Log the rounds not yet in the run (step = round); returns every round now logged.

    ``known_logged_rounds`` (what an earlier call returned, in the same process) skips the
    lookup of the run's history; pass None whenever another process may have logged since.
    """
    return _log_new_rounds(client, run_id, records, known_logged_rounds)[0]


def _upload(client, run_id: str, name: str, local: Path) -> None:
    """Log ``local`` as artifact ``name`` (which may contain a folder: ``masks/final.pt``)."""
    folder, base = os.path.split(name)
    if local.name == base:
        client.log_artifact(run_id, str(local), folder or None)
        return
    with tempfile.TemporaryDirectory() as d:
        staged = Path(d) / base
        shutil.copyfile(local, staged)
        client.log_artifact(run_id, str(staged), folder or None)


def _finish(client, run, status: str, artifacts: dict | None) -> bool:
    target = "FINISHED" if status == "ok" else "FAILED"
    present = {name: Path(p) for name, p in sorted((artifacts or {}).items()) if Path(p).is_file()}
    names, status_tag = ",".join(present), str(status)[:MAX_TAG_VALUE]
    tags = run.data.tags
    if run.info.status == target and tags.get(TAG_STATUS) == status_tag and tags.get(TAG_ARTIFACTS) == names:
        return False
    run_id = run.info.run_id
    for name, local in present.items():
        _upload(client, run_id, name, local)
    client.log_batch(run_id, tags=[RunTag(TAG_STATUS, status_tag), RunTag(TAG_ARTIFACTS, names)], synchronous=True)
    if run.info.status != target:
        client.set_terminated(run_id, target)
    return True


@_guarded
def finish_child(client: MlflowClient, run_id: str, status: str, artifacts: dict | None = None) -> bool:
    """End the run FINISHED (status "ok") or FAILED, tag ``glth.status``, log the artifacts
    (name → local file; missing files are skipped and retried next time). True if anything changed."""
    return _finish(client, client.get_run(run_id), status, artifacts)


# -- backfill ----------------------------------------------------------------------------------

def _records(rows) -> list[dict]:
    if isinstance(rows, pd.DataFrame):
        return rows.to_dict("records")
    return list(rows)


def _run_name(row: dict, config: dict) -> str:
    rewind = config.get("rewind", row.get("rewind"))
    rewind = f"step{rewind['step']}" if isinstance(rewind, dict) else rewind
    control = config.get("control", "none")
    ctl = "" if control in (None, "none") else f"-{control}"
    return f"{row.get('dictionary')}{ctl}-tau{float(row.get('tau')):g}-{rewind}-s{row.get('seed')}"


def _trial_outcome(rows: list[dict], config: dict) -> str | None:
    """The status text of an ended trial, or None while it still runs."""
    last = max(rows, key=lambda r: int(r["round"]))
    if last.get("status", "ok") != "ok":
        return str(last["status"])
    wanted = config.get("rounds")
    ok = {int(r["round"]) for r in rows if r.get("status", "ok") == "ok"}
    return "ok" if wanted is not None and set(range(int(wanted))) <= ok else None


@_guarded
def sync_sweep(tracking_uri: str, experiment: str, sweep_id: str, spec_text: str, records,
               artifacts_by_trial: dict | None = None, parent_tags: dict | None = None) -> dict:
    """Create or complete every run of a sweep from its Parquet rows; a second call adds nothing.

    A trial's run ends FINISHED once its rows hold all ``config["rounds"]`` rounds, FAILED when its
    last row is an error; the parent ends once every trial has (FAILED if any trial failed).
    """
    c = client(tracking_uri)
    exp_id = ensure_experiment(c, experiment)
    parent_id, parent_created = _find_or_create_parent(c, exp_id, sweep_id, spec_text, parent_tags)
    counts = {"parents_created": int(parent_created), "children_created": 0, "steps_logged": 0, "children_finished": 0}
    by_trial: dict[str, list[dict]] = {}
    for r in _records(records):
        by_trial.setdefault(str(r["trial_id"]), []).append(r)
    existing = _children(c, exp_id, parent_id)  # one search for all the children
    outcomes = []
    for tid, rows in sorted(by_trial.items()):
        config = json.loads(rows[-1]["config"]) if isinstance(rows[-1].get("config"), str) else {}
        run_id, created = _find_or_create_child(c, exp_id, parent_id, tid, config, _run_name(rows[-1], config),
                                                known=existing)
        _, n_new = _log_new_rounds(c, run_id, rows, set() if created else None)
        counts["children_created"] += int(created)
        counts["steps_logged"] += n_new
        outcome = _trial_outcome(rows, config)
        outcomes.append(outcome)
        if outcome is not None:
            run = c.get_run(run_id) if created else existing[tid]
            counts["children_finished"] += int(_finish(c, run, outcome, (artifacts_by_trial or {}).get(tid)))
    if outcomes and None not in outcomes:
        target = "FINISHED" if all(o == "ok" for o in outcomes) else "FAILED"
        if c.get_run(parent_id).info.status != target:
            c.set_terminated(parent_id, target)
    return counts


# -- queries -----------------------------------------------------------------------------------

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
    rows = [{
        "run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
        "trial_id": r.data.tags.get(TAG_TRIAL),
        **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
        **{f"params.{k}": v for k, v in r.data.params.items()},
    } for r in runs]
    df = pd.DataFrame(rows)
    if df.empty or full:
        return df
    named = [f"params.{m}" for m in re.findall(r"params\.`?([\w.\-/ ]+?)`?\s*(?:=|!=|<|>|LIKE|ILIKE|IN)", filter_string, re.I)]
    keep = ["run_name", "status", "metrics.test_accuracy", "metrics.compression", *named, "run_id"]
    return df[[k for k in dict.fromkeys(keep) if k in df.columns]]


# -- later additions to finished runs (analysis, figures, exports) ------------------------------

def _store_exists(tracking_uri: str) -> bool:
    """False for a sqlite store whose file is missing: looking runs up must not create one."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):]).expanduser().is_file()
    return not _file_store(tracking_uri)


@_guarded
def find_runs(tracking_uri: str, experiment: str, sweep_id: str, trial_id: str | None = None) -> tuple[str | None, str | None]:
    """(the sweep's parent run id, ``trial_id``'s child run id under it), each None when absent.
    Creates nothing (not even the store)."""
    if not _store_exists(tracking_uri):
        return None, None
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None, None
    parents = _search_all(c, exp.experiment_id,
                          f"tags.`{TAG_SWEEP}` = {_quoted(sweep_id)} and tags.`{TAG_ROLE}` = 'parent'")
    if not parents:
        return None, None
    parent_id = parents[0].info.run_id
    if trial_id is None:
        return parent_id, None
    child = _children(c, exp.experiment_id, parent_id, trial_id).get(trial_id)
    return parent_id, None if child is None else child.info.run_id


@_guarded
def log_extra(tracking_uri: str, run_id: str, metrics: Iterable[tuple[str, float, int]] = (),
              tags: dict | None = None, artifacts: dict | None = None, once_tag: tuple[str, str] | None = None) -> bool:
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


def log_to_parent(tracking_uri: str, experiment: str, sweep_id: str, metrics=(), artifacts: dict | None = None,
                  tags: dict | None = None, once_tag: tuple[str, str] | None = None) -> str | None:
    """``log_extra`` on the sweep's parent run; None (nothing logged) when the sweep has none there."""
    parent_id, _ = find_runs(tracking_uri, experiment, sweep_id)
    if parent_id is not None:
        log_extra(tracking_uri, parent_id, metrics, tags, artifacts, once_tag)
    return parent_id
