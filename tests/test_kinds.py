"""Trial kinds beyond IMP run through `glth run` like every other sweep: strong and construct."""

from __future__ import annotations

import pytest
from test_sweep import glth

from orchestrator import cli
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


def _run(tmp_path, name, text):
    (tmp_path / f"{name}.yaml").write_text(text)
    proc = glth("run", f"{name}.yaml", "--out", "out", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_id = next(d.name for d in (tmp_path / "out").iterdir() if d.name.startswith(name))
    return proc, parquet.read_rounds(tmp_path / "out", sweep_id)


def test_strong_sweep_rows_per_density_level(tmp_path):
    _, rows = _run(tmp_path, "strong", STRONG)
    assert len(rows) == 2 * 2 and (rows.kind == "strong").all()
    assert sorted(rows.density.round(4).unique()) == [0.5, 1.0]
    half = rows[rows.density == 0.5].set_index("dictionary").test_accuracy
    print(f"edge-popup at density 0.5: {half.to_dict()}")
    assert half["canonical"] > 0.5  # chance is 0.1


def test_construct_sweep_over_n_and_distribution(tmp_path):
    proc, rows = _run(tmp_path, "construct", CONSTRUCT)
    assert len(rows) == 4 and (rows.kind == "construct").all()
    assert set(rows.n) == {6, 12} and set(rows.distribution) == {"uniform", "hyperbolic"}  # its own column, not basis (#10)
    assert (rows.kept < rows.total).all() and (rows.kept_per_target > 0).all()
    uniform = rows[rows.distribution == "uniform"].set_index("n")
    assert uniform.loc[12, "mean_weight_error"] < uniform.loc[6, "mean_weight_error"]  # more candidates, closer
    assert "kept/target" in proc.stdout


def test_bad_construct_arguments_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["construct", "--epsilon", "2"]) == 2
    assert "epsilon" in capsys.readouterr().err
