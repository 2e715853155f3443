"""A sweep across a real 2-node Ray cluster, and a sweep logged to a real MLflow server over HTTP."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from mlflow_db import sqlite_uri
from procs import LocalRayCluster, MlflowServer
from test_sweep import glth, metric_steps, mlflow_children, write_spec

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

# one pytest-xdist group for the modules that start multi-node Ray clusters (tests/conftest.py):
# two clusters at once on 2 cores, on the same loopback addresses, had a live worker node declared dead
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray_clusters")]


def test_sweep_runs_on_both_nodes_of_a_two_node_cluster(tmp_path):
    cluster = LocalRayCluster(workers=1, cpus_per_node=1).start()
    try:
        uri = sqlite_uri(tmp_path / "mlflow.db")
        proc = glth(
            "run",
            str(write_spec(tmp_path, rounds=2, epochs=3)),
            "--out",
            "out",
            "--tracking-uri",
            uri,
            "--address",
            cluster.address,
            cwd=tmp_path,
        )
    finally:
        cluster.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = set(re.findall(r"runs on node (\w+)", proc.stderr))
    print(f"trials ran on nodes: {sorted(nodes)}")
    assert len(nodes) == 2, proc.stderr[-3000:]
    assert "[glth] shared datasets: 2 read(s) on 2 node(s), " in proc.stderr  # once per node, not per trial
    sweep_id = next((tmp_path / "out").iterdir()).name
    rows = parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep_id))
    assert len(rows) == 4 * 2 and not rows.duplicated(["trial_id", "round"]).any()


def test_sweep_logs_to_a_real_mlflow_server_over_http(tmp_path):
    server = MlflowServer(tmp_path).start()
    try:
        proc = glth(
            "run", str(write_spec(tmp_path, rounds=2)), "--out", "out", "--tracking-uri", server.uri, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        parents, children = mlflow_children(server.uri, "glth-test")
        assert len(parents) == 1 and len(children) == 4
        for c in children:
            assert metric_steps(server.uri, c.info.run_id) == [0, 1]
            assert c.data.params["tau"] == "0.3"
        spec_artifacts = [a.path for a in MlflowClient(server.uri).list_artifacts(parents[0].info.run_id)]
        assert "spec.yaml" in spec_artifacts
    finally:
        server.stop()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
