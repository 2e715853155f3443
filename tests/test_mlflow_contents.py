"""A sweep's whole MLflow contents, exactly: runs, names, statuses, params, tags, dataset inputs,
artifacts and every metric history at step = round — the same whichever way the rows got there.

Three ways into three sqlite stores, with the rows of a small sweep (two dictionaries × two seeds:
two complete, one failed at round 2, one with 2 of its 3 rounds): the driver's live writer for the
whole sweep, then the end's ``sync_sweep``; a writer whose driver is killed mid-sweep (what it held
is never written), then the next run's sync; the sync alone. Each store is read back with run ids,
times and the checkout's source tags left out, and must equal the others and ``golden/mlflow_contents.json``
(written from main 11510ac, before the writer's cost was cut). Regenerate that file only for a
change meant to change what MLflow shows: ``GLTH_WRITE_GOLDEN=1 pytest tests/test_mlflow_contents.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlflow.tracking import MlflowClient
from mlflow_db import sqlite_uri
from test_mlflow_callback import SPEC, by_round, start, trial
from test_mlflow_dashboard import children

from orchestrator.layout import SweepDir
from orchestrator.sinks import mlflow as sink
from orchestrator.sinks import parquet

GOLDEN = Path(__file__).with_name("golden") / "mlflow_contents.json"
EXPERIMENT, SWEEP = "glth-contents", "sw-contents"
VOLATILE_TAGS = ("mlflow.source.", "mlflow.user", "mlflow.parentRunId")


def sweep_rows() -> list[list[dict]]:
    return [
        trial(SWEEP, "canonical", 0),
        trial(SWEEP, "canonical", 1),
        trial(SWEEP, "bottleneck", 0, upto=2, failed_at=2),
        trial(SWEEP, "bottleneck", 1, upto=2),
    ]


def reports(trials: list[list[dict]]) -> list[list[dict]]:
    """The trials' reports as Tune delivers them: two trials at a time, their rounds interleaved."""
    out = []
    for i in range(0, len(trials), 2):
        pair = [by_round(t) for t in trials[i : i + 2]]
        for k in range(max(len(p) for p in pair)):
            out += [p[k] for p in pair if k < len(p)]
    return out


def end_sync(uri: str, tmp: Path, trials: list[list[dict]]) -> dict:
    """What ``finish_run`` does at a run's end: every trial's Parquet file, then ``sync_sweep``."""
    sweep_dir = SweepDir.under(tmp, SWEEP)
    for rows in trials:
        parquet.write_trial(sweep_dir, rows[0]["trial_id"], rows[0]["dictionary"], rows)
    files = parquet.trial_files(sweep_dir)
    artifacts = {tid: {"rounds.parquet": str(p)} for tid, p in files.items()}
    metas = [t[0] for t in trials]
    return sink.sync_sweep(uri, EXPERIMENT, SWEEP, SPEC, parquet.read_rounds(sweep_dir), artifacts, metas=metas)


def artifacts(c: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in c.list_artifacts(run_id, path):
        out += artifacts(c, run_id, a.path) if a.is_dir else [a.path]
    return out


def contents(uri: str) -> dict:
    """The sweep's runs as MLflow shows them, keyed by run name (the parent: ``parent``)."""
    c = MlflowClient(uri)
    exp, parent, kids = children(uri, EXPERIMENT, SWEEP)
    out = {"experiment_tags": {k: v for k, v in exp.tags.items()}}
    for key, run in [("parent", parent), *sorted(kids.items())]:
        run = c.get_run(run.info.run_id)
        tags = {k: v for k, v in run.data.tags.items() if not k.startswith(VOLATILE_TAGS)}
        tags["mlflow.parentRunId?"] = str("mlflow.parentRunId" in run.data.tags)
        histories = {
            k: [[m.step, m.value] for m in sorted(c.get_metric_history(run.info.run_id, k), key=lambda m: m.step)]
            for k in sorted(run.data.metrics)
        }
        inputs = [
            [d.dataset.name, d.dataset.digest, d.dataset.source_type, sorted((t.key, t.value) for t in d.tags)]
            for d in run.inputs.dataset_inputs
        ]
        out[key] = {
            "name": run.info.run_name,
            "status": run.info.status,
            "ended": run.info.end_time is not None,
            "tags": dict(sorted(tags.items())),
            "params": dict(sorted(run.data.params.items())),
            "metrics": histories,
            "inputs": inputs,
            "artifacts": sorted(artifacts(c, run.info.run_id)),
        }
    return json.loads(json.dumps(out))  # tuples as lists, as the golden file reads back


def test_live_writer_killed_writer_and_sync_alone_leave_the_same_contents_as_before(tmp_path):
    trials = sweep_rows()
    got, counts = {}, {}
    for way in ("live", "killed", "sync"):
        uri = sqlite_uri(tmp_path / way / "mlflow.db")
        if way != "sync":
            writer = start(uri, EXPERIMENT, SWEEP, [t[0] for t in trials])
            todo = reports(trials)
            if way == "killed":  # SIGKILL after 5 reports: held rows never written, no experiment end
                todo = todo[:5]
            for k, rows in enumerate(todo):
                writer.on_trial_result(iteration=k, trials=[], trial=None, result={"new_rows": rows})
                writer.on_step_end(iteration=k, trials=[])
            if way == "live":
                writer.on_experiment_end(trials=[])
        counts[way] = end_sync(uri, tmp_path / way, trials)
        again = end_sync(uri, tmp_path / way, trials)
        print(f"\n{way}: end sync {counts[way]}, a second sync {again}")
        assert again == {"parents_created": 0, "children_created": 0, "steps_logged": 0, "children_finished": 0}
        got[way] = contents(uri)
    assert counts["live"] == {"parents_created": 0, "children_created": 0, "steps_logged": 0, "children_finished": 3}
    assert counts["killed"]["steps_logged"] + 3 == counts["sync"]["steps_logged"] == 10  # 3 rounds were written live
    if os.environ.get("GLTH_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got["live"], indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert golden["canonical-0"]["metrics"]["density"] == [[0, 1.0], [1, 0.5], [2, 0.25]]
    assert {k: v["status"] for k, v in golden.items() if k != "experiment_tags"} == {
        "parent": "RUNNING",  # bottleneck-1 has not ended
        "canonical-0": "FINISHED",
        "canonical-1": "FINISHED",
        "bottleneck-0": "FAILED",
        "bottleneck-1": "RUNNING",
    }
    for way in got:
        assert got[way] == golden, way
