"""Trial kinds beyond IMP run through `glth run` like every other sweep: strong and construct."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from procs import MlflowServer
from test_sweep import glth

from orchestrator import cli
from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

pytestmark = pytest.mark.slow

STRONG = """
name: strong
experiment: glth-test
kind: strong
dataset: digits
model: mlp_300_100
dictionary: [{kind: canonical}, {kind: bottleneck, layer: "3", basis: random, seed: 0}]
densities: [1.0, 0.5]
seeds: [0]
train: {epochs: 4, optimizer: adam, lr: 0.01, schedule: cosine}
"""

CONSTRUCT = """
name: construct
experiment: glth-test
kind: construct
dataset: digits
epsilon: 0.01
n: [6, 12]
distribution: [uniform, hyperbolic]
seeds: [0]
train: {epochs: 3, optimizer: adam, lr: 0.001, batch_size: 128}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server: strong and construct sweeps must end FINISHED there (#10)."""
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield srv
    srv.stop()


def _runs(uri: str, sweep_id: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("glth-test")
    (parent,) = client.search_runs(
        [exp.experiment_id], f"tags.`glth.sweep_id` = '{sweep_id}' and tags.`glth.role` = 'parent'"
    )
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, children


def _run(tmp_path, name, text, server=None):
    (tmp_path / f"{name}.yaml").write_text(text)
    uri = server.uri if server is not None else f"sqlite:///{tmp_path / 'm.db'}"
    proc = glth("run", f"{name}.yaml", "--out", "out", "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_id = next(d.name for d in (tmp_path / "out").iterdir() if d.name.startswith(name))
    rows = parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep_id))
    if server is not None:  # every child FINISHED under a FINISHED parent, named by what it ran
        parent, children = _runs(server.uri, sweep_id)
        assert parent.info.status == "FINISHED" and len(children) == rows.trial_id.nunique()
        assert {c.info.status for c in children} == {"FINISHED"}
        names = {c.data.tags["glth.trial_id"]: c.info.run_name for c in children}
        assert names == dict(zip(rows.trial_id, rows.run_name))
        print(f"MLflow children: {sorted(names.values())}")
    return proc, rows


def test_strong_sweep_rows_per_density_level(tmp_path, server):
    _, rows = _run(tmp_path, "strong", STRONG, server)
    assert set(rows.run_name) == {"canonical-edgepopup-global-s0", "bottleneck-random-edgepopup-global-s0"}
    assert len(rows) == 2 * 2 and (rows.kind == "strong").all()
    assert sorted(rows.density.round(4).unique()) == [0.5, 1.0]
    half = rows[rows.density == 0.5].set_index("dictionary").test_accuracy
    print(f"edge-popup at density 0.5: {half.to_dict()}")
    assert half["canonical"] > 0.5  # chance is 0.1


def test_construct_sweep_over_n_and_distribution(tmp_path, server):
    proc, rows = _run(tmp_path, "construct", CONSTRUCT, server)
    assert set(rows.run_name) == {
        f"subsetsum-{d}-iid-eps0.01-n{n}-c3-s0" for d in ("uniform", "hyperbolic") for n in (6, 12)
    }
    assert len(rows) == 4 and (rows.kind == "construct").all()
    assert set(rows.n) == {6, 12} and set(rows.distribution) == {
        "uniform",
        "hyperbolic",
    }  # its own column, not basis (#10)
    assert (rows.kept < rows.total).all() and (rows.kept_per_target > 0).all()
    uniform = rows[rows.distribution == "uniform"].set_index("n")
    assert uniform.loc[12, "mean_weight_error"] < uniform.loc[6, "mean_weight_error"]  # more candidates, closer
    assert "kept/target" in proc.stdout


def test_bad_construct_arguments_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["construct", "--epsilon", "2"]) == 2
    assert "epsilon" in capsys.readouterr().err
