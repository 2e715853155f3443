"""The driver as MLflow's only writer: ``MlflowWriter`` in a real Ray Tune run against a real
``mlflow server``, a server that dies under it, a callback that is pickled mid-sweep, and rows of
an earlier run read back from Parquet."""

from __future__ import annotations

import os
import pickle
import statistics

import pytest
from mlflow.tracking import MlflowClient
from mlflow_db import sqlite_uri
from procs import MlflowServer
from test_mlflow_dashboard import acc, children, expected_curve, history, rows_of

from orchestrator.layout import SweepDir
from orchestrator.sinks import mlflow as sink
from orchestrator.sinks import parquet

SPEC = "name: cb\nexperiment: glth-cb\n"
STATS = ("test_accuracy_mean", "val_accuracy_mean", "compression_mean", "test_accuracy_ci_low", "test_accuracy_ci_high")


def start(uri: str, experiment: str, sweep: str, metas, sweep_dir=None) -> sink.MlflowWriter:
    """What the driver does before ``tuner.fit()``: experiment, parent run, the callback."""
    c = sink.client(uri)
    exp = sink.ensure_experiment(c, experiment)
    parent = sink.get_or_create_parent(c, exp, sweep, SPEC)
    return sink.MlflowWriter(uri, experiment, exp, parent, sweep, metas=metas, sweep_dir=sweep_dir)


def by_round(rows: list[dict]) -> list[list[dict]]:
    """A trial's reports: the rows new at each round (a batched trial: several trial ids each)."""
    rounds = sorted({r["round"] for r in rows})
    return [[r for r in rows if r["round"] == k] for k in rounds]


def trial(sweep: str, d: str, s: int, **kw) -> list[dict]:
    return rows_of(sweep, f"{d}-{s}", "imp", d, s, 3, **kw)


def assert_curves(uri: str, parent_id: str, rounds: dict[str, list[int]], seeds=(0, 1)) -> None:
    for d, want in rounds.items():
        for stat in STATS:
            got = history(uri, parent_id, f"curve/{d}/{stat}")
            assert sorted(got) == want, (d, stat, got)
            for r in want:
                assert got[r] == pytest.approx(expected_curve(d, list(seeds), r)[stat], abs=1e-12), (d, stat, r)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One ``mlflow server`` for the module's tests (each its own sweep); a test may stop and start it."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture
def ray_local(monkeypatch):
    """A local Ray on 127.0.0.1 with token auth (as `glth run` starts it), Tune's loggers off."""
    try:
        from orchestrator.ray_local import ray_session
    except ImportError:  # before the refactor moved it
        from orchestrator.sweep import ray_session
    for k, v in {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}.items():
        monkeypatch.setenv(k, v)
    with ray_session(None, num_cpus=2):
        yield


@pytest.mark.slow
def test_a_tune_run_logs_every_round_from_the_driver_only(tmp_path, server, ray_local):
    from ray import tune

    sweep = "sw-tune"
    # canonical: two single trials; bottleneck: one batched trial reporting both seeds each round
    reports = [
        by_round(trial(sweep, "canonical", 0)),
        by_round(trial(sweep, "canonical", 1)),
        by_round(trial(sweep, "bottleneck", 0) + trial(sweep, "bottleneck", 1)),
    ]
    metas = [rs[0][i] for rs in reports for i in range(len(rs[0]))]
    writer = start(server.uri, "glth-cb", sweep, metas)

    def trainable(config):  # reports what a trial computed; never touches MLflow
        import time

        from ray import tune as t

        from orchestrator.sinks.mlflow.system import SystemSampler

        sampler = SystemSampler(interval_s=0.05).start()
        for rows in config["reports"]:
            time.sleep(0.2)
            t.report({"new_rows": rows, "system_metrics": sampler.take()})
        sampler.stop()

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"reports": tune.grid_search(reports)},
        run_config=tune.RunConfig(name="cb", storage_path=str(tmp_path / "tune"), verbose=0, callbacks=[writer]),
    )
    assert not any(r.error for r in tuner.fit())

    _, parent, kids = children(server.uri, "glth-cb", sweep)
    assert {t: (k.info.run_name, k.info.status) for t, k in kids.items()} == {
        f"{d}-{s}": (f"{d}-tau0.2-s{s}", "FINISHED") for d in ("canonical", "bottleneck") for s in (0, 1)
    }
    client = MlflowClient(server.uri)
    for tid, k in kids.items():
        d, s = tid.rsplit("-", 1)
        assert history(server.uri, k.info.run_id, "test_accuracy") == {r: acc(d, int(s), r) for r in range(3)}
        assert sorted(history(server.uri, k.info.run_id, "system/cpu_utilization_percentage")) == [0, 1, 2]
        assert k.data.params["dictionary.kind"] == d and k.data.params["trial_id"] == tid
        assert len(client.get_run(k.info.run_id).inputs.dataset_inputs) == 1
    assert_curves(server.uri, parent.info.run_id, {"canonical": [0, 1, 2], "bottleneck": [0, 1, 2]})

    # the backfill at the sweep's end finds nothing left to do
    rows = [r for rs in reports for rnd in rs for r in rnd]
    counts = sink.sync_sweep(server.uri, "glth-cb", sweep, SPEC, rows, metas=metas)
    assert counts == {"parents_created": 0, "children_created": 0, "steps_logged": 0, "children_finished": 0}
    for k in kids.values():
        assert len(client.get_metric_history(k.info.run_id, "density")) == 3
    assert len(client.get_metric_history(parent.info.run_id, "curve/canonical/test_accuracy_mean")) == 3
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_server_that_dies_switches_the_callback_off_and_sync_backfills(server, capsys):
    try:
        sweep = "sw-dies"
        trials = {f"{d}-{s}": trial(sweep, d, s) for d in ("canonical", "bottleneck") for s in (0, 1)}
        metas = [rows[0] for rows in trials.values()]
        writer = start(server.uri, "glth-cb", sweep, metas)
        for rows in trials.values():  # round 0 of every trial reaches MLflow
            writer.on_trial_result(iteration=1, trials=[], trial=None, result={"new_rows": rows[:1]})
        writer.flush()  # held rounds go out at once (as a step of Tune's loop does after flush_s)
        server.stop()
        for k in (1, 2):
            for rows in trials.values():
                writer.on_trial_result(iteration=k, trials=[], trial=None, result={"new_rows": rows[k : k + 1]})
        err = capsys.readouterr().err
        assert writer.off and err.count("[glth] MLflow at") == 1 and "unavailable" in err, err

        server.start()
        rows = [r for t in trials.values() for r in t]
        counts = sink.sync_sweep(server.uri, "glth-cb", sweep, SPEC, rows, metas=metas)
        assert counts == {"parents_created": 0, "children_created": 0, "steps_logged": 8, "children_finished": 4}
        _, parent, kids = children(server.uri, "glth-cb", sweep)
        client = MlflowClient(server.uri)
        for k in kids.values():
            assert sorted(m.step for m in client.get_metric_history(k.info.run_id, "density")) == [0, 1, 2]
            assert k.info.status == "FINISHED"
        assert_curves(server.uri, parent.info.run_id, {"canonical": [0, 1, 2], "bottleneck": [0, 1, 2]})
        assert parent.info.status == "FINISHED"
    finally:
        if server.proc is None:
            server.start()  # as the module found it


def test_the_callback_pickles_mid_sweep_and_reads_earlier_rows_from_parquet(tmp_path):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    sweep = "sw-pickle"
    trials = {f"canonical-{s}": trial(sweep, "canonical", s) for s in (0, 1)}
    metas = [rows[0] for rows in trials.values()]
    # seed 0 ran in an earlier `glth run` (or was reused): its rows are in Parquet, never reported now
    parquet.write_trial(SweepDir.under(tmp_path / "out", sweep), "canonical-0", "canonical", trials["canonical-0"])
    writer = start(uri, "glth-cb", sweep, metas, sweep_dir=SweepDir.under(tmp_path / "out", sweep))
    writer.setup()
    assert writer.book.seeds() == {"canonical": 2}
    writer.on_trial_result(iteration=1, trials=[], trial=None, result={"new_rows": trials["canonical-1"][:2]})
    writer = pickle.loads(pickle.dumps(writer))  # as Tune saves and restores it
    assert writer._client is None
    writer.on_trial_result(iteration=2, trials=[], trial=None, result={"new_rows": trials["canonical-1"][1:]})
    assert not writer.off

    _, parent, kids = children(uri, "glth-cb", sweep)
    assert list(kids) == ["canonical-1"]  # the earlier trial's child is the backfill's job
    run = kids["canonical-1"]
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "density")) == [0, 1, 2]
    got = history(uri, parent.info.run_id, "curve/canonical/test_accuracy_mean")
    assert got == pytest.approx(
        {r: statistics.fmean(acc("canonical", s, r) for s in (0, 1)) for r in range(3)}, abs=1e-12
    )


def test_a_callback_without_a_parent_run_writes_nothing(tmp_path):
    writer = sink.MlflowWriter(
        f"sqlite:///{tmp_path / 'never.db'}",
        "glth-cb",
        None,
        None,
        "sw-none",
        metas=[{"trial_id": "t0", "dictionary": "canonical"}],
    )
    writer.on_trial_result(
        iteration=1, trials=[], trial=None, result={"new_rows": rows_of("sw-none", "t0", "imp", "canonical", 0, 1)}
    )
    assert writer.off and not os.path.exists(tmp_path / "never.db")
