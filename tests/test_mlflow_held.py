"""The driver's MLflow writer holds a trial's rounds and writes them together: a tiny trial's run
in a few commits of a real sqlite store, the same histories as writing every report at once, and
a long trial's round in MLflow within the flush interval while the trial still runs (Tune's
hooks called as its loop calls them)."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient
from mlflow_db import sqlite_uri
from sqlalchemy import event
from test_mlflow_callback import start, trial
from test_mlflow_dashboard import children, history

from orchestrator.sinks.mlflow.rounds import PROBE_METRIC


class Commits:
    """Commits of the tracking store's database (its SQLAlchemy engine) while counting."""

    def __init__(self, writer):
        self.engine = writer._c()._tracking_client.store.engine
        self.n = 0

    def _count(self, conn):
        self.n += 1

    def __enter__(self):
        self.n = 0
        event.listen(self.engine, "commit", self._count)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "commit", self._count)


def report(writer, rows, k: int) -> None:
    writer.on_trial_result(iteration=k, trials=[], trial=None, result={"new_rows": rows[k : k + 1]})


def test_a_tiny_trials_rounds_go_in_one_batch_with_the_same_histories_and_fewer_commits(tmp_path):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    runs, commits = {}, {}
    for mode in ("each", "held"):  # each: every report written at once, as before holding
        sweep = f"sw-{mode}"
        rows = trial(sweep, "canonical", 0)
        writer = start(uri, "glth-held", sweep, rows[:1])
        writer._children_found(writer._c())  # the one search for an earlier driver's runs: not counted
        with Commits(writer) as c:
            for k in range(3):
                report(writer, rows, k)
                if mode == "each":
                    writer.flush()
        commits[mode] = c.n
        _, parent, kids = children(uri, "glth-held", sweep)
        runs[mode] = (parent, kids["canonical-0"])
    client = MlflowClient(uri)
    got = {}
    for mode, (parent, run) in runs.items():
        full = client.get_run(run.info.run_id)
        metrics = {k: history(uri, run.info.run_id, k) for k in full.data.metrics}
        curve = history(uri, parent.info.run_id, "curve/canonical/test_accuracy_mean")
        got[mode] = (full.info.status, full.data.params, len(full.inputs.dataset_inputs), metrics, curve)
    print(f"\ncommits of a 3-round trial: {commits['each']} writing each report, {commits['held']} held")
    assert got["held"][3][PROBE_METRIC] == {0: 1.0, 1: 0.5, 2: 0.25}
    assert got["held"][:3] == ("FINISHED", got["each"][1], 1) and sorted(got["held"][4]) == [0, 1, 2]
    assert got["held"] == got["each"]
    assert commits["held"] <= commits["each"] - 8, commits  # two batches of four commits each fewer


def test_a_long_trials_round_is_in_mlflow_within_the_flush_interval_while_it_runs(tmp_path):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    sweep = "sw-long"
    rows = trial(sweep, "canonical", 0)
    writer = start(uri, "glth-held", sweep, rows[:1])
    writer.flush_s = 0.5

    def logged() -> dict:
        kids = children(uri, "glth-held", sweep)[2]
        run = kids.get("canonical-0")
        return {} if run is None else {run.info.status: sorted(history(uri, run.info.run_id, PROBE_METRIC))}

    t0 = time.monotonic()
    report(writer, rows, 0)
    writer.on_step_end(iteration=1, trials=[])
    early = logged() if time.monotonic() - t0 < writer.flush_s else None  # not due yet: held
    time.sleep(writer.flush_s)
    writer.on_step_end(iteration=2, trials=[])
    due = logged()
    report(writer, rows, 1)
    writer.on_experiment_end(trials=[])  # Tune's loop ends (done, or an error in it): all held goes
    ended = logged()
    assert early in ({}, None) and due == {"RUNNING": [0]} and ended == {"RUNNING": [0, 1]}, (early, due, ended)
