"""A curve is every axis the sweep varies except the seed: the key, from the trials' configs
(no Ray), and what results, thresholds and the MLflow curves make of it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from orchestrator import axes, spec
from orchestrator.results import curve_label, summarize, thresholds
from orchestrator.sinks.mlflow.curves import CurveBook
from orchestrator.uncertainty import threshold_uncertainty

BASE = """
name: axes
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.3
seeds: [0, 1, 2]
rounds: 2
train: {epochs: 1, lr: 0.05}
"""


def metas(*overrides: str) -> list[dict]:
    sweep = spec.parse(BASE, overrides=list(overrides))
    return [t.meta(sweep.sweep_id) for t in sweep.trials]


def curves_of(ms: list[dict]) -> dict[str, list[int]]:
    """axes text → the seeds of its trials."""
    out: dict[str, list[int]] = {}
    for tid, text in axes.trial_axes(ms).items():
        out.setdefault(text, []).append(next(m["seed"] for m in ms if m["trial_id"] == tid))
    return {k: sorted(v) for k, v in out.items()}


def test_seeds_alone_make_one_curve():
    assert curves_of(metas()) == {"": [0, 1, 2]}


@pytest.mark.parametrize(
    "override, texts",
    [
        ("train.lr=0.05,0.005", ["lr=0.005", "lr=0.05"]),
        ("rounds=2,3", ["rounds=2", "rounds=3"]),
        ("lmc_points=0,3", ["lmc_points=0", "lmc_points=3"]),
        ("train.batch_size=32,64", ["batch_size=32", "batch_size=64"]),
    ],
)
def test_each_varied_field_is_its_own_curve(override, texts):
    assert curves_of(metas(override)) == {t: [0, 1, 2] for t in texts}


def test_a_dictionary_field_the_label_does_not_name_is_an_axis():
    ms = metas(
        'dictionary=[{kind: bottleneck, layer: "1", basis: identity}, {kind: bottleneck, layer: "3", basis: identity}]'
    )
    assert {m["dictionary"] for m in ms} == {"bottleneck-identity"}  # one label for both layers
    assert curves_of(ms) == {"layer=1": [0, 1, 2], "layer=3": [0, 1, 2]}


def test_what_the_standard_columns_name_is_not_repeated():
    ms = metas(
        "tau=0.2,0.4",
        'dictionary=[{kind: canonical}, {kind: bottleneck, layer: "1", basis: dct}]',
        "prune_rounding=round,ceil",
    )
    assert len({(m["tau"], m["dictionary"]) for m in ms}) == 8  # τ and the label (-ceil too) tell them apart
    assert curves_of(ms) == {"": [0] * 8 + [1] * 8 + [2] * 8}


def test_a_random_dictionary_drawn_from_the_trial_seed_is_one_curve():
    ms = metas("dictionary=[{kind: random}]")
    seeds = [json.loads(m["config"])["dictionary"]["seed"] for m in ms]
    assert seeds == [0, 1, 2]  # the dictionary's seed follows the trial's: a seed, not an axis
    assert curves_of(ms) == {"": [0, 1, 2]}
    both = metas("dictionary=[{kind: random}, {kind: random, seed: 7}]")
    assert curves_of(both) == {"": [0, 1, 2], "seed=7": [0, 1, 2]}  # the fixed seed is an axis


def test_an_explicit_dictionary_seed_that_varies_is_an_axis():
    ms = metas("seeds=[0]", "dictionary=[{kind: random, seed: 3}, {kind: random, seed: 4}]")
    assert curves_of(ms) == {"seed=3": [0], "seed=4": [0]}
    fixed = metas("dictionary=[{kind: random, seed: 1}]")  # one basis for every seed (seed 1's too)
    assert curves_of(fixed) == {"": [0, 1, 2]}


def test_the_dry_run_and_the_curves_share_one_varying_axes():
    from orchestrator import dry_run

    assert dry_run.varying_axes is axes.varying_axes and dry_run.flatten is axes.flatten


# -- what results make of it: hand-made numbers on real trial metas, against a plain groupby ----------
@pytest.fixture(scope="module")
def lr_rows() -> pd.DataFrame:
    ms = metas("train.lr=0.05,0.005")
    rng = np.random.default_rng(0)
    rows = []
    for m in ms:
        lr = json.loads(m["config"])["train"]["lr"]
        for rnd in range(2):
            acc = (0.95 if lr == 0.05 else 0.75) - 0.01 * rnd + rng.normal(0, 0.01)
            rows.append(
                {
                    **m,
                    "round": rnd,
                    "status": "ok",
                    "test_accuracy": acc,
                    "val_accuracy": acc + 0.001,
                    "compression": 0.3 * rnd,
                    "density": 1 - 0.3 * rnd,
                }
            )
    return pd.DataFrame(rows)


def test_summary_and_thresholds_never_pool_two_learning_rates(lr_rows):
    lr = lr_rows["config"].map(lambda c: json.loads(c)["train"]["lr"])
    want = lr_rows.assign(lr=lr).groupby(["lr", "round"]).agg(mean=("test_accuracy", "mean"), seeds=("seed", "nunique"))
    s = summarize(lr_rows)
    assert len(s) == 4 and set(s["axes"]) == {"lr=0.05", "lr=0.005"}
    for r in s.itertuples():
        w = want.loc[(float(r.axes.removeprefix("lr=")), r.round)]
        assert r.test_accuracy_mean == pytest.approx(w["mean"]) and r.seeds == w["seeds"] == 3
    t = thresholds(s)
    assert sorted(t["axes"]) == ["lr=0.005", "lr=0.05"] and (t["seeds"] == 3).all()
    labels = sorted(curve_label(r, ()) for _, r in t.iterrows())
    assert labels == ["canonical · lr=0.005", "canonical · lr=0.05"]
    u = threshold_uncertainty(lr_rows)
    assert sorted(u["axes"]) == ["lr=0.005", "lr=0.05"] and (u["threshold_seeds"] == 3).all()


def test_the_mlflow_curve_book_has_one_curve_per_learning_rate(lr_rows):
    ms = lr_rows.drop_duplicates("trial_id").to_dict("records")
    book = CurveBook(ms)
    assert book.seeds() == {"canonical lr_0.005": 3, "canonical lr_0.05": 3}
    book.add_all(lr_rows.to_dict("records"))
    lr = lr_rows["config"].map(lambda c: json.loads(c)["train"]["lr"])
    for value, label in ((0.05, "canonical lr_0.05"), (0.005, "canonical lr_0.005")):
        want = lr_rows[(lr == value) & (lr_rows["round"] == 0)]["test_accuracy"].mean()
        assert book.stats(label, 0)[f"curve/{label}/test_accuracy_mean"] == pytest.approx(want)


def test_a_sweep_of_failed_trials_only_gives_empty_tables(tmp_path):
    from orchestrator import analysis, analysis_report
    from orchestrator.cli.summary import render_failures, render_results
    from orchestrator.layout import SweepDir

    ms = metas()
    nan = dict.fromkeys(
        ["test_accuracy", "val_accuracy", "compression", "density"], float("nan")
    )  # as Parquet has them
    rows = pd.DataFrame([{**m, **nan, "round": 0, "status": "failed: training loss became nan at step 5"} for m in ms])
    a = analysis.analyze(rows, SweepDir.at(tmp_path))  # a sweep directory without tickets: there are none
    assert a.rounds.empty and a.curves.empty and analysis_report.render_curves(a.curves).startswith("(no rows")
    assert render_results(rows).endswith("(no rows: no trial has a round with status ok)")
    assert analysis.write(a, tmp_path).exists()
    listed = render_failures([m["trial_id"] for m in ms], rows).splitlines()
    assert listed[0] == "failed trials (3):" and all("failed: training loss became nan" in ln for ln in listed[2:])
