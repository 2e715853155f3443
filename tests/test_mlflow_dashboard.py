"""MLflow as the sweep's dashboard, against a real sqlite store: what a person opening the UI sees.

Runs of every kind end FINISHED with the names their rows give; the experiment opens on its runs
(``mlflow.experimentKind``); runs carry their source and dataset; the parent carries each curve's
mean ± CI over seeds at step = round; the analysis table and an exported model are logged once.
"""

from __future__ import annotations

import json
import math
import statistics
import time

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestrator.plots_style import band
from orchestrator.sinks import mlflow as sink
from orchestrator.sinks.mlflow import curves

SPEC = "name: dash\nexperiment: glth-dash\n"


def acc(dictionary: str, seed: int, rnd: int) -> float:
    """A distinct test accuracy per (dictionary, seed, round), so means are checkable."""
    return round(0.9 - 0.05 * rnd + 0.013 * seed + (0.1 if dictionary == "bottleneck" else 0.0), 6)


def rows_of(
    sweep: str,
    tid: str,
    kind: str,
    dictionary: str,
    seed: int,
    rounds: int,
    upto: int | None = None,
    failed_at: int | None = None,
    tau: float | None = 0.2,
) -> list[dict]:
    """Rows as the refactored trainable reports them: run_name and rows_expected made by the kind,
    the config without ``rounds`` for strong and construct trials."""
    config = {
        "dataset": "digits",
        "seed": seed,
        "dictionary": {"kind": dictionary},
        "trial_id": tid,
        "val_fraction": 0.1,
        "split_seed": 0,
        "data_dir": None,
    }
    if kind == "imp":
        config.update(rounds=rounds, tau=tau)
    elif kind == "strong":
        config.update(densities=[0.5 ** (r + 1) for r in range(rounds)])
    else:
        config.update(n=[4, 8, 16][:rounds], epsilon=0.1)
    name = {
        "imp": f"{dictionary}-tau{tau}-s{seed}",
        "strong": f"edge-popup {dictionary} s{seed}",
        "construct": f"subsetsum uniform s{seed}",
    }[kind]
    out = []
    for r in range(rounds if upto is None else upto):
        density = 0.5**r
        row = {
            "sweep_id": sweep,
            "trial_id": tid,
            "kind": kind,
            "run_name": name,
            "rows_expected": rounds,
            "config": json.dumps(config, sort_keys=True),
            "round": r,
            "status": "ok",
            "dataset": "digits",
            "model": "mlp_300_100",
            "dictionary": dictionary,
            "control": "none",
            "tau": tau if kind == "imp" else math.nan,
            "rewind": "init" if kind == "imp" else "none",
            "seed": seed,
            "test_accuracy": acc(dictionary, seed, r),
            "val_accuracy": acc(dictionary, seed, r) - 0.01,
            "compression": 1 - density,
            "density": density,
            "wall_seconds": 0.25,
        }
        if kind == "construct":
            row.update(max_weight_error=0.01 * (r + 1), kept_per_target=3.0 + r)
        out.append(row)
    if failed_at is not None:
        out.append(
            {
                **out[0],
                "round": failed_at,
                "status": "failed: loss is NaN",
                "test_accuracy": None,
                "density": None,
                "val_accuracy": None,
                "compression": None,
            }
        )
    return out


def children(uri: str, experiment: str, sweep: str) -> tuple:
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    [parent] = c.search_runs([exp.experiment_id], f"tags.`glth.sweep_id` = '{sweep}' and tags.`glth.role` = 'parent'")
    kids = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000)
    return exp, parent, {k.data.tags["glth.trial_id"]: k for k in kids}


def history(uri: str, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, key)}


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-dash') / 'mlflow.db'}"


def test_strong_and_construct_runs_end_finished_with_their_names(uri):
    sweep = "sw-kinds"
    rows = (
        rows_of(sweep, "s0", "strong", "canonical", 0, 3)
        + rows_of(sweep, "s1", "strong", "dct", 1, 3)
        + rows_of(sweep, "c0", "construct", "canonical", 0, 2)
    )
    assert all("rounds" not in json.loads(r["config"]) for r in rows)
    counts = sink.sync_sweep(uri, "glth-kinds", sweep, SPEC, rows)
    assert counts == {"parents_created": 1, "children_created": 3, "steps_logged": 8, "children_finished": 3}
    _, parent, kids = children(uri, "glth-kinds", sweep)
    assert {t: (k.info.run_name, k.info.status) for t, k in kids.items()} == {
        "s0": ("edge-popup canonical s0", "FINISHED"),
        "s1": ("edge-popup dct s1", "FINISHED"),
        "c0": ("subsetsum uniform s0", "FINISHED"),
    }
    assert parent.info.status == "FINISHED"
    # construct metrics are logged like any other number in a row
    assert history(uri, kids["c0"].info.run_id, "max_weight_error") == {0: 0.01, 1: 0.02}
    assert history(uri, kids["c0"].info.run_id, "kept_per_target") == {0: 3.0, 1: 4.0}
    assert "rows_expected" not in kids["c0"].data.metrics and "seed" not in kids["c0"].data.metrics


def test_a_strong_trial_short_of_its_rows_expected_stays_running(uri):
    sweep = "sw-partial"
    rows = rows_of(sweep, "s0", "strong", "canonical", 0, 3, upto=2) + rows_of(sweep, "s1", "strong", "canonical", 1, 3)
    sink.sync_sweep(uri, "glth-kinds", sweep, SPEC, rows)
    _, parent, kids = children(uri, "glth-kinds", sweep)
    assert (kids["s0"].info.status, kids["s1"].info.status, parent.info.status) == ("RUNNING", "FINISHED", "RUNNING")


def test_rows_without_run_name_keep_the_old_name_and_rounds_rule(uri):
    rows = [
        {k: v for k, v in r.items() if k not in ("run_name", "rows_expected")}
        for r in rows_of("sw-old", "t0", "imp", "canonical", 0, 2)
    ]
    sink.sync_sweep(uri, "glth-kinds", "sw-old", SPEC, rows)
    _, parent, kids = children(uri, "glth-kinds", "sw-old")
    assert (kids["t0"].info.run_name, kids["t0"].info.status) == ("canonical-tau0.2-init-s0", "FINISHED")


def test_experiments_open_on_their_runs(uri):
    c = sink.client(uri)
    exp = sink.ensure_experiment(c, "glth-kind-new")
    assert c.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    old = c.create_experiment("glth-kind-old")  # as glth made them before: no kind
    assert "mlflow.experimentKind" not in c.get_experiment(old).tags
    assert sink.ensure_experiment(c, "glth-kind-old") == old
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    chosen = c.create_experiment("glth-kind-chosen", tags={"mlflow.experimentKind": "genai_development"})
    sink.ensure_experiment(c, "glth-kind-chosen")  # a kind someone chose is theirs
    assert c.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_runs_carry_source_tags_and_the_dataset_input_once(uri):
    sweep = "sw-src"
    rows = rows_of(sweep, "t0", "imp", "canonical", 0, 2) + rows_of(sweep, "t1", "imp", "canonical", 1, 2)
    for _ in range(2):
        sink.sync_sweep(uri, "glth-src", sweep, SPEC, rows)
    _, parent, kids = children(uri, "glth-src", sweep)
    commit = sink.source_tags().get("mlflow.source.git.commit")
    assert commit is not None and len(commit) == 40  # tests run from a git checkout
    for run in (parent, *kids.values()):
        tags = run.data.tags
        assert (tags["mlflow.source.name"], tags["mlflow.source.type"], tags["mlflow.source.git.commit"]) == (
            "glth",
            "LOCAL",
            commit,
        )
    c = MlflowClient(uri)
    digests = set()
    for run in kids.values():
        inputs = c.get_run(run.info.run_id).inputs.dataset_inputs
        assert len(inputs) == 1  # a second sync added none
        ds = inputs[0].dataset
        assert (ds.name, ds.source_type) == ("digits", "code")
        assert json.loads(ds.source)["tags"]["glth.dataset"] == "digits"
        assert [(t.key, t.value) for t in inputs[0].tags] == [("mlflow.data.context", "training")]
        digests.add(ds.digest)
    assert len(digests) == 1 and len(digests.pop()) == 16  # same data for both seeds
    assert c.get_run(parent.info.run_id).inputs.dataset_inputs == []
    other = sink.meta.dataset_entity("mnist", {"data_dir": "/data/mnist", "val_fraction": 0.1, "split_seed": 1})
    assert other.source_type == "local" and json.loads(other.source) == {"uri": "/data/mnist"}
    assert (
        other.digest
        != sink.meta.dataset_entity("mnist", {"data_dir": "/data/mnist", "val_fraction": 0.1, "split_seed": 0}).digest
    )


def expected_curve(dictionary: str, seeds: list[int], rnd: int) -> dict[str, float]:
    test = [acc(dictionary, s, rnd) for s in seeds]
    mean = statistics.fmean(test)
    half = float(band(np.array([mean]), np.array([statistics.stdev(test)]), np.array([len(test)]))[0])
    return {
        "test_accuracy_mean": mean,
        "val_accuracy_mean": statistics.fmean(t - 0.01 for t in test),
        "compression_mean": 1 - 0.5**rnd,
        "test_accuracy_ci_low": mean - half,
        "test_accuracy_ci_high": mean + half,
    }


def test_the_parent_carries_each_curve_mean_and_ci_over_seeds(uri):
    sweep = "sw-curves"
    seeds = [0, 1, 2]
    rows = []
    for d in ("canonical", "bottleneck"):
        for s in seeds:
            # bottleneck seed 2 has only rounds 0-1 yet: that curve's round 2 waits for it
            rows += rows_of(sweep, f"{d}-{s}", "imp", d, s, 3, upto=2 if (d, s) == ("bottleneck", 2) else None)
    metas = curves.metas_from_rows(rows)
    assert sink.CurveBook(metas).seeds() == {"canonical": 3, "bottleneck": 3}
    sink.sync_sweep(uri, "glth-curves", sweep, SPEC, rows, metas=metas)
    _, parent, _ = children(uri, "glth-curves", sweep)
    pid = parent.info.run_id
    for d, rounds in (("canonical", [0, 1, 2]), ("bottleneck", [0, 1])):
        for stat in (
            "test_accuracy_mean",
            "val_accuracy_mean",
            "compression_mean",
            "test_accuracy_ci_low",
            "test_accuracy_ci_high",
        ):
            got = history(uri, pid, f"curve/{d}/{stat}")
            assert sorted(got) == rounds, (d, stat)
            for r in rounds:
                assert got[r] == pytest.approx(expected_curve(d, seeds, r)[stat], abs=1e-12), (d, stat, r)
    # the t interval at n = 3: mean ± 4.3027 · sd / √3
    test = [acc("canonical", s, 1) for s in seeds]
    assert history(uri, pid, "curve/canonical/test_accuracy_ci_high")[1] == pytest.approx(
        statistics.fmean(test) + 4.302652729911275 * statistics.stdev(test) / math.sqrt(3), abs=1e-9
    )

    # the last seed's round 2 arrives: one more step on that curve, nothing logged twice
    rows += rows_of(sweep, "bottleneck-2", "imp", "bottleneck", 2, 3)[2:]
    sink.sync_sweep(uri, "glth-curves", sweep, SPEC, rows, metas=metas)
    got = history(uri, pid, "curve/bottleneck/test_accuracy_mean")
    assert got[2] == pytest.approx(expected_curve("bottleneck", seeds, 2)["test_accuracy_mean"], abs=1e-12)
    assert len(MlflowClient(uri).get_metric_history(pid, "curve/canonical/test_accuracy_mean")) == 3


def test_a_failed_seed_is_not_waited_for_after_it_failed(uri):
    sweep = "sw-fail"
    rows = (
        rows_of(sweep, "a0", "imp", "canonical", 0, 3)
        + rows_of(sweep, "a1", "imp", "canonical", 1, 3)
        + rows_of(sweep, "a2", "imp", "canonical", 2, 3, upto=1, failed_at=1)
    )
    sink.sync_sweep(uri, "glth-curves", sweep, SPEC, rows)
    _, parent, kids = children(uri, "glth-curves", sweep)
    got = history(uri, parent.info.run_id, "curve/canonical/test_accuracy_mean")
    assert got[0] == pytest.approx(statistics.fmean(acc("canonical", s, 0) for s in (0, 1, 2)), abs=1e-12)
    for r in (1, 2):  # over the two seeds that have the round
        assert got[r] == pytest.approx(statistics.fmean(acc("canonical", s, r) for s in (0, 1)), abs=1e-12)
    assert kids["a2"].info.status == "FAILED" and parent.info.status == "FAILED"


def test_curve_labels_name_what_varies_and_are_valid_mlflow_keys():
    metas = [
        {
            "trial_id": f"t{i}",
            "dataset": "digits",
            "model": "mlp",
            "dictionary": d,
            "control": c,
            "tau": tau,
            "rewind": rw,
            "seed": 0,
        }
        for i, (d, c, tau, rw) in enumerate(
            [("bottleneck:1/dct", "none", 0.2, "init"), ("canonical", "random_mask", 0.5, '{"step": 100}')]
        )
    ]
    book = sink.CurveBook(metas)
    assert book.trial_curve == {
        "t0": "bottleneck_1_dct tau0.2 rewind-init",
        "t1": "canonical random_mask tau0.5 rewind-step100",
    }
    assert sink.CurveBook(metas[:1]).trial_curve == {"t0": "bottleneck_1_dct"}  # nothing varies


def test_the_analysis_table_is_logged_once_per_content(uri, tmp_path):
    sink.sync_sweep(uri, "glth-table", "sw-table", SPEC, rows_of("sw-table", "t0", "imp", "canonical", 0, 2))
    frame = pd.DataFrame(
        {"dictionary": ["canonical", "bottleneck"], "threshold_compression": [0.75, math.nan], "seeds": [3, 3]}
    )
    name = sink.log_analysis_table(uri, "glth-table", "sw-table", frame)
    assert name.startswith("tables/analysis-") and name.endswith(".json")
    assert sink.log_analysis_table(uri, "glth-table", "sw-table", frame) == name
    parent, _ = sink.find_runs(uri, "glth-table", "sw-table")
    c = MlflowClient(uri)
    local = c.download_artifacts(parent, name, str(tmp_path))
    with open(local) as f:
        logged = json.load(f)
    assert logged["columns"] == ["dictionary", "threshold_compression", "seeds"]
    assert logged["data"] == [["canonical", 0.75, 3], ["bottleneck", None, 3]]  # not appended twice
    assert sink.log_analysis_table(uri, "glth-table", "no-such-sweep", frame) is None


def test_an_exported_model_is_logged_with_signature_and_example(uri):
    import mlflow.pytorch

    sink.sync_sweep(uri, "glth-export", "sw-exp", SPEC, rows_of("sw-exp", "t0", "imp", "canonical", 0, 1))
    _, child = sink.find_runs(uri, "glth-export", "sw-exp", "t0")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    x = torch.randn(5, 8)
    model_uri = sink.log_exported_model(uri, child, module, x)
    assert sink.log_exported_model(uri, child, module, x) == model_uri  # same weights: nothing new
    c = MlflowClient(uri)
    run = c.get_run(child)
    assert run.info.status == "FINISHED"  # logging a model does not reopen the run
    models = c.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert len(models) == 1 and models[0].source_run_id == child
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(model_uri)
    assert [s["tensor-spec"] for s in info.signature.inputs.to_dict()] == [{"dtype": "float32", "shape": (-1, 8)}]
    assert [s["tensor-spec"] for s in info.signature.outputs.to_dict()] == [{"dtype": "float32", "shape": (-1, 3)}]
    assert info.saved_input_example_info is not None
    loaded = mlflow.pytorch.load_model(model_uri)
    with torch.no_grad():
        assert torch.allclose(loaded(x), module(x), atol=1e-6)


def test_system_sampler_reports_mlflow_system_metrics():
    sampler = sink.SystemSampler(interval_s=0.2).start()
    try:
        time.sleep(0.7)
        got = sampler.take()
        assert 0.0 <= got["cpu_utilization_percentage"] <= 100.0
        assert 0.0 < got["system_memory_usage_percentage"] <= 100.0
        assert got["system_memory_usage_megabytes"] > 0 and "disk_usage_percentage" in got
        assert "network_receive_megabytes" in got
    finally:
        sampler.stop()
    assert sampler.take() == {}  # nothing sampled since the last take
