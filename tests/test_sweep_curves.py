"""End to end: a sweep that varies a learning rate, the rounds and a dictionary field (with a
learning rate that diverges) gives one curve per configuration in `glth results`, the analysis,
the figure and the MLflow parent run; its failed trials are listed, never a traceback; a sweep
whose every trial failed exits 3; and `glth results` from another directory finds the MLflow
store the sweep logged to (sweep.json). Numbers are checked against a plain pandas groupby of the
raw Parquet rows and against the raw ticket files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from in_process import glth_here
from mlflow.tracking import MlflowClient

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

pytestmark = pytest.mark.slow

GLTH = str(Path(sys.executable).with_name("glth"))


SPEC = """
name: NAME
experiment: glth-axes-test
dataset: digits
model: mlp_300_100
dictionary: DICTIONARY
tau: 0.5
seeds: [0, 1]
rounds: ROUNDS
train: {epochs: 1, batch_size: 128, lr: LR}
batch_seeds: 2
resources: {cpu: 1}
max_concurrent: 2
"""
LAYERS = '[{kind: bottleneck, layer: "1", basis: identity}, {kind: bottleneck, layer: "3", basis: identity}]'


def run(tmp: Path, name: str, dictionary: str, rounds: str, lr: str) -> dict:
    text = SPEC.replace("NAME", name).replace("DICTIONARY", dictionary).replace("ROUNDS", rounds).replace("LR", lr)
    (tmp / f"{name}.yaml").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    proc = subprocess.run(
        [GLTH, "run", f"{name}.yaml", "--out", "out", "--tracking-uri", uri],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    (sweep_dir,) = [d for d in (tmp / "out").iterdir() if d.name.startswith(name)]
    return {
        "proc": proc,
        "tmp": tmp,
        "uri": uri,
        "env": env,
        "sweep_dir": sweep_dir,
        "rows": parquet.read_rounds(SweepDir.under(tmp / "out", sweep_dir.name)),
    }


@pytest.fixture(scope="module")
def axes_sweep(tmp_path_factory):
    return run(tmp_path_factory.mktemp("axes"), "axes", LAYERS, "[1, 2]", "[0.05, 0.005, 1000]")


def fields(config: str) -> tuple:
    c = json.loads(config)
    return c["train"]["lr"], c["rounds"], c["dictionary"]["layer"]


def text_of(lr, rounds, layer) -> str:
    """The axes text glth should give (fields in the config's order: dictionary, rounds, train)."""
    return f"layer={layer} rounds={rounds} lr={lr:g}"


@pytest.fixture(scope="module")
def want(axes_sweep):
    """The independent answer: ok rows grouped by the three varied fields."""
    rows = axes_sweep["rows"]
    ok = rows[rows["status"] == "ok"]
    keyed = ok.assign(key=[text_of(*fields(c)) for c in ok["config"]])
    return keyed.groupby(["key", "round"]).agg(test=("test_accuracy", "mean"), seeds=("seed", "nunique"))


def test_failed_trials_are_listed_and_the_rest_analysed(axes_sweep):
    proc, rows = axes_sweep["proc"], axes_sweep["rows"]
    bad = sorted(set(rows.trial_id[[fields(c)[0] == 1000 for c in rows["config"]]]))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(bad) == 8
    listed = proc.stdout.split("failed trials (8):")[1]
    for tid in bad:
        line = next(ln for ln in listed.splitlines() if tid in ln)
        assert "failed: training loss became" in line
    assert "<- threshold" in proc.stdout  # the healthy trials were analysed


def test_results_give_one_curve_per_configuration(axes_sweep, want):
    env, sweep_dir = axes_sweep["env"], axes_sweep["sweep_dir"]
    other = axes_sweep["tmp"] / "elsewhere"
    other.mkdir()
    # from another directory, without --tracking-uri: the store is the one sweep.json names
    proc = glth_here(  # results start no Ray: in this process, without MLFLOW_TRACKING_URI as `env`
        "results", str(sweep_dir), "--format", "csv", cwd=other, drop_env=tuple(os.environ.keys() - env.keys())
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no MLflow parent run" not in proc.stderr and not (other / "mlflow.db").exists()
    got = pd.read_csv(io.StringIO(proc.stdout), keep_default_na=False)
    assert len(got) == len(want) == 2 * 2 * (1 + 2)  # lr × layer × (rounds 1: round 0; rounds 2: rounds 0, 1)
    for r in got.itertuples():
        w = want.loc[(r.axes, r.round)]
        assert r.seeds == w["seeds"] == 2 and r.test_accuracy_mean == pytest.approx(w["test"], abs=1e-12)


def test_analysis_thresholds_and_overlap_per_curve(axes_sweep, want):
    table = pd.read_parquet(axes_sweep["sweep_dir"] / "analysis.parquet")
    assert table["axes"].nunique() == 8 and (table.groupby("axes")["threshold_seeds"].first() == 2).all()
    rows = axes_sweep["rows"]
    ok = rows[rows["status"] == "ok"]
    two_rounds = table[(table["round"] == 1)]
    assert len(two_rounds) == 4
    for r in two_rounds.itertuples():  # the Jaccard of the curve's two seeds, from the raw ticket files
        tids = [t for t, c in zip(ok["trial_id"], ok["config"]) if text_of(*fields(c)) == r.axes]
        masks = [
            torch.load(axes_sweep["sweep_dir"] / "tickets" / t / "round-0001.pt", weights_only=True)["mask"].numpy()
            for t in sorted(set(tids))
        ]
        a, b = (set(np.flatnonzero(m)) for m in masks)
        assert r.overlap_seeds == 2 and r.jaccard_mean == pytest.approx(len(a & b) / len(a | b))


def test_the_figure_has_one_line_per_curve_naming_what_varies(axes_sweep, want):
    from orchestrator.plots_curves import accuracy_figure

    fig = accuracy_figure(axes_sweep["rows"])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts() if "lr=" in t.get_text()]
    assert sorted(lab.split(" · ")[1] for lab in labels) == sorted(want.index.get_level_values(0).unique())


def test_the_parent_run_has_each_curve(axes_sweep, want):
    client = MlflowClient(axes_sweep["uri"])
    exp = client.get_experiment_by_name("glth-axes-test")
    (parent,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("glth.role") == "parent"]
    keys = {k for k in parent.data.metrics if k.startswith("curve/") and k.endswith("/test_accuracy_mean")}
    assert len(keys) == 8
    for (text, rnd), w in want[want.index.get_level_values(1) == 0].iterrows():
        key = "curve/bottleneck-identity " + text.replace("=", "_") + "/test_accuracy_mean"
        (m,) = [m for m in client.get_metric_history(parent.info.run_id, key) if m.step == rnd]
        assert m.value == pytest.approx(w["test"])


def test_a_sweep_whose_every_trial_failed_exits_3_with_the_failures(tmp_path):
    s = run(tmp_path, "diverge", "{kind: canonical}", "2", "1000")
    proc = s["proc"]
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "no rows: no trial has a round with status ok" in proc.stdout
    listed = proc.stdout.split("failed trials (2):")[1].splitlines()
    trials = set(s["rows"].trial_id)
    assert len(trials) == 2 and "ok" not in set(s["rows"]["status"])
    for tid in trials:
        assert "failed: training loss became" in next(ln for ln in listed if tid in ln)
    # nothing to draw: glth plot says so in one line and exits 3, no traceback, no figure
    plot = glth_here(
        "plot",
        str(s["sweep_dir"]),
        "--tracking-uri",
        s["uri"],
        cwd=tmp_path,
        drop_env=tuple(os.environ.keys() - s["env"].keys()),
    )
    assert plot.returncode == 3, plot.stderr[-3000:]
    assert "Traceback" not in plot.stderr + plot.stdout
    assert "no completed trial to draw" in plot.stdout
    assert not list(tmp_path.rglob("*.png"))
