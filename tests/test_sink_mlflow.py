"""The MLflow sink against real stores: a sqlite database, and a real `mlflow server` that goes down.

Every call must be repeatable (a retried trial, a second `glth sync`) without duplicating runs
or metric steps, and a server that is down must raise MlflowUnavailable quickly.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import mlflow_db
import pytest
from mlflow.tracking import MlflowClient
from procs import MlflowServer

from orchestrator.layout import SweepDir
from orchestrator.sinks import mlflow as sink
from orchestrator.sinks import parquet

SPEC = "name: tiny\nexperiment: glth-test\nrounds: ROUNDS\n"


def trial_rows(
    sweep_id: str,
    trial_id: str,
    rounds: int,
    dictionary: str = "canonical",
    upto: int | None = None,
    failed_at: int | None = None,
) -> list[dict]:
    config = {
        "dataset": "digits",
        "tau": 0.2,
        "rounds": rounds,
        "seed": int(trial_id[-1]),
        "rewind": "init",
        "control": "none",
        "dictionary": {"kind": dictionary},
        "train": {"lr": 0.05, "epochs": 1},
        "trial_id": trial_id,
    }
    rows = []
    for r in range(rounds if upto is None else upto):
        kept = int(100 * 0.8**r)
        rows.append(
            {
                "sweep_id": sweep_id,
                "trial_id": trial_id,
                "seed": config["seed"],
                "dataset": "digits",
                "model": "mlp_300_100",
                "dictionary": dictionary,
                "dictionary_kind": dictionary,
                "basis": "",
                "tau": 0.2,
                "rewind": "init",
                "control": "none",
                "round": r,
                "kept": kept,
                "total": 100,
                "density": kept / 100,
                "compression": 1 - kept / 100,
                "test_accuracy": 0.9 - 0.01 * r,
                "test_loss": 0.3,
                "val_accuracy": 0.9,
                "train_accuracy": 0.95,
                "train_loss": 0.2,
                "epochs": 1.0,
                "wall_seconds": 0.5,
                "eval_seconds": 0.1,
                "rank": 10 - r if dictionary == "bottleneck" else None,
                "status": "ok",
                "config": json.dumps(config, sort_keys=True),
            }
        )
    if failed_at is not None:
        rows.append(
            {**rows[0], "round": failed_at, "status": "failed: loss is NaN", "density": None, "test_accuracy": None}
        )
    return rows


def runs_of(uri: str, experiment: str) -> tuple[list, list]:
    """(parents, children) as MLflow's own search finds them by their tags."""
    c = MlflowClient(uri)
    [exp_id] = [e.experiment_id for e in c.search_experiments(filter_string=f"name = '{experiment}'")]
    found = {
        q: c.search_runs([exp_id], q, max_results=1000)
        for q in ("tags.`glth.role` = 'parent'", "tags.`mlflow.parentRunId` LIKE '%'")
    }
    return tuple(found.values())


def steps(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory) -> str:
    """One database for the module: creating MLflow's tables takes seconds on a busy machine."""
    return mlflow_db.sqlite_uri(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


def test_live_logging_twice_gives_one_parent_two_children_and_three_steps(sqlite_uri):
    c = sink.client(sqlite_uri)
    exp = sink.ensure_experiment(c, "live")
    assert sink.ensure_experiment(c, "live") == exp
    assert "mlartifacts" in c.get_experiment(exp).artifact_location  # beside the db, never ./mlruns

    parent = sink.get_or_create_parent(c, exp, "sw1", SPEC, tags={"glth.git_commit": "abc123"})
    rows = {tid: trial_rows("sw1", tid, 3, dictionary=d) for tid, d in (("t0", "canonical"), ("t1", "bottleneck"))}
    for _ in range(2):  # the second pass is a retried trial: finds everything, adds nothing
        assert sink.get_or_create_parent(c, exp, "sw1", SPEC, tags={"glth.git_commit": "abc123"}) == parent
        for tid, r in rows.items():
            config = json.loads(r[0]["config"])
            run_id = sink.get_or_create_child(c, exp, parent, tid, params=config, run_name=f"run-{tid}")
            logged = set()
            for k in range(1, 4):  # as a trial does: the history so far after each round
                logged = sink.log_rounds(c, run_id, r[:k], known_logged_rounds=logged or None)
            assert logged == {0, 1, 2}

    parents, children = runs_of(sqlite_uri, "live")
    assert len(parents) == 1 and len(children) == 2
    assert {ch.data.tags["mlflow.parentRunId"] for ch in children} == {parent}
    assert parents[0].data.tags["glth.git_commit"] == "abc123" and parents[0].data.tags["glth.sweep_id"] == "sw1"
    assert [a.path for a in c.list_artifacts(parent)] == ["spec.yaml"]
    for ch in children:
        for key in sink.ROUND_METRICS:
            if key == "rank" and ch.data.tags["glth.trial_id"] == "t0":
                assert steps(sqlite_uri, ch.info.run_id, key) == []  # no rank for an ungrouped dictionary
            else:
                assert steps(sqlite_uri, ch.info.run_id, key) == [0, 1, 2], key
        assert ch.data.params["train.lr"] == "0.05" and ch.data.params["dictionary.kind"] in {"canonical", "bottleneck"}
        assert ch.data.params["tau"] == "0.2"

    # finishing is idempotent too
    child = children[0].info.run_id
    art = Path(sqlite_uri[len("sqlite:///") :]).parent / "t.parquet"
    art.write_bytes(b"rows")
    assert sink.finish_child(c, child, "ok", {"rounds.parquet": str(art)}) is True
    assert sink.finish_child(c, child, "ok", {"rounds.parquet": str(art)}) is False
    run = c.get_run(child)
    assert run.info.status == "FINISHED" and run.data.tags["glth.status"] == "ok"
    assert [a.path for a in c.list_artifacts(child)] == ["rounds.parquet"]
    art.unlink()  # its file compacted away (sinks.parquet_compact): the run keeps what it logged
    assert sink.finish_child(c, child, "ok", {"rounds.parquet": str(art)}) is False
    assert sink.finish_child(c, child, "ok", {}) is False
    assert c.get_run(child).data.tags["glth.artifacts"] == "rounds.parquet"


def test_params_are_flattened_and_long_values_truncated():
    flat = sink.flatten_params({"a": {"b": {"c": 1}}, "l": [1, 2], "n": None, "s": "x" * 900, "e": {}})
    assert flat["a.b.c"] == "1" and flat["l"] == "[1, 2]" and flat["n"] == "None" and flat["e"] == "{}"
    assert len(flat["s"]) == sink.MAX_PARAM_VALUE and flat["s"].endswith(sink.TRUNCATED)


def test_more_than_a_batch_of_metrics_is_chunked_by_whole_rounds(sqlite_uri):
    c = sink.client(sqlite_uri)
    exp = sink.ensure_experiment(c, "chunks")
    parent = sink.get_or_create_parent(c, exp, "swc", SPEC)
    run_id = sink.get_or_create_child(c, exp, parent, "t0", params={"rounds": 150}, run_name="long")
    rows = trial_rows("swc", "t0", 150, dictionary="bottleneck")  # 150 rounds × 10 metrics > 1000
    assert sink.log_rounds(c, run_id, rows) == set(range(150))
    assert sink.log_rounds(c, run_id, rows) == set(range(150))
    assert steps(sqlite_uri, run_id, "rank") == list(range(150))


def test_sync_sweep_backfills_from_parquet_exactly_once(sqlite_uri, tmp_path):
    sweep = "sw-sync"
    for tid, rows in (
        ("t0", trial_rows(sweep, "t0", 3)),
        ("t1", trial_rows(sweep, "t1", 3, "bottleneck")),
        ("t2", trial_rows(sweep, "t2", 3, upto=2, failed_at=2)),
        ("t3", trial_rows(sweep, "t3", 3, upto=2)),
    ):
        parquet.write_trial(SweepDir.under(tmp_path, sweep), tid, rows[0]["dictionary"], rows)
    df = parquet.read_rounds(SweepDir.under(tmp_path, sweep))
    artifacts = {
        tid: {"rounds.parquet": str(p)} for tid, p in parquet.trial_files(SweepDir.under(tmp_path, sweep)).items()
    }

    first = sink.sync_sweep(sqlite_uri, "synced", sweep, SPEC, df, artifacts)
    assert first == {"parents_created": 1, "children_created": 4, "steps_logged": 3 + 3 + 2 + 2, "children_finished": 3}
    again = sink.sync_sweep(sqlite_uri, "synced", sweep, SPEC, df.to_dict("records"), artifacts)
    assert again == {"parents_created": 0, "children_created": 0, "steps_logged": 0, "children_finished": 0}

    parents, children = runs_of(sqlite_uri, "synced")
    assert len(parents) == 1 and len(children) == 4
    by_trial = {ch.data.tags["glth.trial_id"]: ch for ch in children}
    assert {t: r.info.status for t, r in by_trial.items()} == {
        "t0": "FINISHED",
        "t1": "FINISHED",
        "t2": "FAILED",
        "t3": "RUNNING",
    }
    assert by_trial["t2"].data.tags["glth.status"] == "failed: loss is NaN"
    assert by_trial["t0"].info.run_name == "canonical-tau0.2-init-s0"
    assert by_trial["t0"].data.params["rounds"] == "3"
    for tid, run in by_trial.items():
        assert steps(sqlite_uri, run.info.run_id, "test_accuracy") == ([0, 1, 2] if tid in {"t0", "t1"} else [0, 1])
    assert [a.path for a in MlflowClient(sqlite_uri).list_artifacts(by_trial["t0"].info.run_id)] == ["rounds.parquet"]
    assert parents[0].info.status == "RUNNING"  # t3 is not done yet

    # t3 completes: one more sync logs only its last round and ends it and the sweep
    parquet.write_trial(SweepDir.under(tmp_path, sweep), "t3", "canonical", trial_rows(sweep, "t3", 3))
    third = sink.sync_sweep(
        sqlite_uri, "synced", sweep, SPEC, parquet.read_rounds(SweepDir.under(tmp_path, sweep)), artifacts
    )
    assert third == {"parents_created": 0, "children_created": 0, "steps_logged": 1, "children_finished": 1}
    parents, _ = runs_of(sqlite_uri, "synced")
    assert parents[0].info.status == "FAILED"  # ended, with a failed trial in it


def test_search_children_and_bad_filters(sqlite_uri, tmp_path):
    rows = trial_rows("sw-q", "t0", 2)
    sink.sync_sweep(sqlite_uri, "query", "sw-q", SPEC, rows)
    df = sink.search_children(sqlite_uri, "query", "params.tau = '0.2'")
    assert list(df.columns) == [
        "run_name",
        "status",
        "metrics.test_accuracy",
        "metrics.compression",
        "params.tau",
        "run_id",
    ]
    assert len(df) == 1 and df["metrics.test_accuracy"].item() == pytest.approx(0.89)
    assert sink.search_children(sqlite_uri, "query", "params.tau = '0.5'").empty
    with pytest.raises(sink.BadFilter):
        sink.search_children(sqlite_uri, "query", "params.tau == ")
    with pytest.raises(sink.BadFilter):
        sink.search_children(sqlite_uri, "no-such-experiment", "")


def test_a_file_store_is_refused(tmp_path):
    for uri in ("", str(tmp_path / "mlruns"), f"file://{tmp_path}/mlruns", "./mlruns"):
        with pytest.raises(ValueError):
            sink.client(uri)


# -- a real tracking server that goes down and comes back -------------------------------------------


@pytest.mark.slow
def test_real_server_outage_is_fast_and_sync_completes_without_duplicates(tmp_path):
    server = MlflowServer(tmp_path)
    sweep = "sw-http"
    rows = {"t0": trial_rows(sweep, "t0", 4), "t1": trial_rows(sweep, "t1", 4, "bottleneck")}
    for tid, r in rows.items():
        parquet.write_trial(SweepDir.under(tmp_path / "out", sweep), tid, r[0]["dictionary"], r)
    try:
        server.start()
        c = sink.client(server.uri)
        exp = sink.ensure_experiment(c, "glth-http")
        parent = sink.get_or_create_parent(c, exp, sweep, SPEC, tags={"glth.git_commit": "abc123"})
        run_ids = {}
        for tid, r in rows.items():  # live logging gets through rounds 0 and 1, then the server dies
            run_ids[tid] = sink.get_or_create_child(c, exp, parent, tid, json.loads(r[0]["config"]), f"run-{tid}")
            assert sink.log_rounds(c, run_ids[tid], r[:2]) == {0, 1}
        parents, children = runs_of(server.uri, "glth-http")
        assert len(parents) == 1 and len(children) == 2
        assert [a.path for a in c.list_artifacts(parent)] == ["spec.yaml"]
        assert all(steps(server.uri, rid, "test_accuracy") == [0, 1] for rid in run_ids.values())

        server.stop()
        t0 = time.monotonic()
        with pytest.raises(sink.MlflowUnavailable):
            sink.log_rounds(c, run_ids["t0"], rows["t0"][:3])
        with pytest.raises(sink.MlflowUnavailable):
            sink.log_rounds(c, run_ids["t0"], rows["t0"][:3], known_logged_rounds={0, 1})
        with pytest.raises(sink.MlflowUnavailable):
            sink.get_or_create_child(c, exp, parent, "t0", {}, "run-t0")
        with pytest.raises(sink.MlflowUnavailable):
            sink.sync_sweep(
                server.uri, "glth-http", sweep, SPEC, parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep))
            )
        elapsed = time.monotonic() - t0
        print(f"4 calls against a dead server raised MlflowUnavailable in {elapsed:.2f}s")
        assert elapsed < 30
        assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the short-timeout settings are scoped

        server.start()  # same database, same port
        df = parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep))
        artifacts = {
            tid: {"rounds.parquet": str(p)}
            for tid, p in parquet.trial_files(SweepDir.under(tmp_path / "out", sweep)).items()
        }
        counts = sink.sync_sweep(server.uri, "glth-http", sweep, SPEC, df, artifacts)
        assert counts == {"parents_created": 0, "children_created": 0, "steps_logged": 4, "children_finished": 2}
        assert sink.sync_sweep(server.uri, "glth-http", sweep, SPEC, df, artifacts) == {
            "parents_created": 0,
            "children_created": 0,
            "steps_logged": 0,
            "children_finished": 0,
        }

        parents, children = runs_of(server.uri, "glth-http")
        assert len(parents) == 1 and len(children) == 2 and parents[0].info.status == "FINISHED"
        client = MlflowClient(server.uri)
        for ch in children:
            assert ch.info.status == "FINISHED"
            for key in ("test_accuracy", "density", "compression", "kept"):
                assert steps(server.uri, ch.info.run_id, key) == [0, 1, 2, 3], key
            assert [a.path for a in client.list_artifacts(ch.info.run_id)] == ["rounds.parquet"]
    finally:
        server.stop()
