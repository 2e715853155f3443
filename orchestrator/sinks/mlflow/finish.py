"""When a trial's run ends and how: what its rows say (its outcome, its run name, the rounds that
complete it) and ending the run with its status and artifacts.

- a trial is complete when its ok rows cover ``rows_expected`` rounds (its kind says how many);
  its run is named by ``run_name`` (made by the kind), both carried by every row;
- ``finish_child`` does nothing when the run already ended with the same status and artifacts;
  both writers end a run only after its rounds are logged, so such a run has every round.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from glth_core import controls
from orchestrator.sinks.mlflow.client import TAG_ARTIFACTS, TAG_STATUS, _upload
from orchestrator.sinks.mlflow.guard import _guarded
from orchestrator.sinks.mlflow.values import MAX_TAG_VALUE, _number


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
    """An artifact once logged stays: a trial whose ``rounds.parquet`` was compacted away
    (``parquet_compact``) has no file to offer, and its run is left as it ended."""
    present, run_id = _present(artifacts), run.info.run_id
    tag = run.data.tags.get(TAG_ARTIFACTS)
    logged = {n for n in (tag or "").split(",") if n}
    if _ended_with(run, status) and tag is not None and set(present) <= logged:
        return False
    for name, local in present.items():
        _upload(client, run_id, name, local, run.info.artifact_uri)
    names = ",".join(sorted(logged | set(present)))
    if run.data.tags.get(TAG_STATUS) == str(status)[:MAX_TAG_VALUE]:  # the live writer's end: one tag is new
        client.set_tag(run_id, TAG_ARTIFACTS, names, synchronous=True)  # one commit where log_batch makes four
    else:
        client.log_batch(run_id, tags=_end_tags(status, names), synchronous=True)
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
