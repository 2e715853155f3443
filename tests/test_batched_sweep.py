"""`batch_seeds: K` trains K seeds in one Tune trial, yet its outputs equal K separate trials'."""

from __future__ import annotations

import json

import pytest
from test_sweep import SPEC, glth, metric_steps, mlflow_children

from orchestrator import spec as specs
from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

pytestmark = pytest.mark.slow


def _run(tmp_path, out: str, extra: str):
    text = SPEC.replace("ROUNDS", "3").replace("EPOCHS", "1") + extra
    (tmp_path / f"{out}.yaml").write_text(text)
    uri = f"sqlite:///{tmp_path / (out + '.db')}"
    proc = glth("run", f"{out}.yaml", "--out", out, "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_id = next((tmp_path / out).iterdir()).name
    return parquet.read_rounds(SweepDir.under(tmp_path / out, sweep_id)), uri


def test_batched_seeds_equal_separate_trials(tmp_path, small_sweep):
    separate = small_sweep["rows"]  # the same spec as K separate trials, run once for test_sweep too
    batched, uri = _run(tmp_path, "batched", "batch_seeds: 2\n")
    assert len(batched) == len(separate) == 12
    assert sorted(batched.trial_id.unique()) == sorted(separate.trial_id.unique())
    a = separate.sort_values(["trial_id", "round"]).reset_index(drop=True)
    b = batched.sort_values(["trial_id", "round"]).reset_index(drop=True)
    assert (a.kept == b.kept).all() and (a["rank"].fillna(-1) == b["rank"].fillna(-1)).all()
    for col in ("test_accuracy", "test_loss", "val_accuracy", "train_accuracy", "train_loss"):
        assert (a[col] - b[col]).abs().max() <= 1e-5, col
    _, children = mlflow_children(uri, "glth-test")
    assert len(children) == 4
    assert all(metric_steps(uri, c.info.run_id) == [0, 1, 2] for c in children)


def test_batching_a_seed_dependent_dictionary_needs_an_explicit_seed():
    text = (
        SPEC.replace("ROUNDS", "2")
        .replace("EPOCHS", "1")
        .replace('{kind: bottleneck, layer: "1", basis: identity}', "{kind: random, method: fast}")
        + "batch_seeds: 2\n"
    )
    with pytest.raises(specs.SpecError, match="batch_seeds"):
        specs.parse(text)
    specs.parse(text.replace("{kind: random, method: fast}", "{kind: random, method: fast, seed: 3}"))


def test_a_diverging_seed_fails_alone_inside_its_batch(tmp_path):
    """lr 1e6 makes every seed of its batch diverge, one after the other: the first seed found
    non-finite fails, the batch goes on without it, then the next one fails in turn. Each trial
    records its own failure (naming its own seed); the healthy batch (lr 0.05) is untouched."""
    text = (
        SPEC.replace("ROUNDS", "2")
        .replace("EPOCHS", "1")
        .replace("lr: 0.05", "lr: [0.05, 1.0e+6]")
        .replace('  - {kind: bottleneck, layer: "1", basis: identity}\n', "")
        + "batch_seeds: 2\n"
    )
    (tmp_path / "diverge.yaml").write_text(text)
    uri = f"sqlite:///{tmp_path / 'diverge.db'}"
    proc = glth("run", "diverge.yaml", "--out", "out", "--tracking-uri", uri, cwd=tmp_path)
    sweep_id = next((tmp_path / "out").iterdir()).name
    rows = parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep_id))
    lr = rows.config.map(lambda c: json.loads(c)["train"]["lr"])
    last = rows.sort_values("round").groupby("trial_id").tail(1).set_index("trial_id")
    wild = sorted(set(rows.trial_id[lr > 1]))
    print(f"found: exit {proc.returncode}; last status per trial {last.status.to_dict()}")
    assert proc.returncode == 1 and all(t in proc.stdout + proc.stderr for t in wild)
    assert len(wild) == 2 and set(rows.trial_id[lr < 1]).isdisjoint(wild)
    for tid in wild:
        seed = int(last.loc[tid, "seed"])
        assert last.loc[tid, "status"].startswith("failed: training loss became")
        assert f"seed {seed}" in last.loc[tid, "status"]  # its own failure, not its batch-mate's
    healthy = rows[lr < 1]
    assert len(healthy) == 2 * 2 and set(healthy.status) == {"ok"}
    _, children = mlflow_children(uri, "glth-test")
    status = {c.data.tags["glth.trial_id"]: c.info.status for c in children}
    assert {status[t] for t in wild} == {"FAILED"} and {status[t] for t in set(healthy.trial_id)} == {"FINISHED"}
