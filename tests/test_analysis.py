"""Per-sweep analysis: thresholds, peaks and mask overlap across seeds, checked against
independent computations from the raw Parquet rows and the raw checkpoint files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from in_process import glth_here
from mlflow.tracking import MlflowClient

from orchestrator import seed_overlap


# -- pieces ------------------------------------------------------------------------------------------
def test_jaccard_of_three_masks_against_sets():
    rng = np.random.default_rng(0)
    masks = [torch.from_numpy(rng.random(500) < p) for p in (0.3, 0.5, 0.7)]
    sets = [set(np.flatnonzero(m.numpy())) for m in masks]
    want = [len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2)]
    mean, lo, hi = seed_overlap.pairwise(masks)
    assert mean == pytest.approx(sum(want) / 3) and lo == pytest.approx(min(want)) and hi == pytest.approx(max(want))
    assert seed_overlap.jaccard(torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)) == 1.0
    assert all(math.isnan(v) for v in seed_overlap.pairwise(masks[:1]))


def pairwise_pair_by_pair(masks):
    """The overlap as it was computed before the one-product version: every pair on its own."""
    values = [seed_overlap.jaccard(a, b) for a, b in itertools.combinations(masks, 2)]
    return sum(values) / len(values), min(values), max(values)


@pytest.mark.parametrize("seeds", [2, 3, 17, 60])
def test_pairwise_from_one_product_equals_pair_by_pair(seeds, monkeypatch):
    monkeypatch.setattr(seed_overlap, "_BLOCK", 7 * seeds)  # several blocks of elements, a ragged last one
    g = torch.Generator().manual_seed(seeds)
    shape = (13, 11)
    masks = [torch.rand(shape, generator=g) < p for p in torch.rand(seeds, generator=g).tolist()]
    masks[0] = torch.zeros(shape, dtype=torch.bool)  # empty masks: the pair of two empties counts 1.0
    masks[-1] = torch.zeros(shape, dtype=torch.bool)
    masks[1] = masks[-2].clone()  # an identical pair
    got, want = seed_overlap.pairwise(masks), pairwise_pair_by_pair(masks)
    assert got == pytest.approx(want, abs=1e-12, rel=0)
    assert got == want  # the same divisions, summed in the same order
    inter = seed_overlap.intersections(masks)
    i, j = seeds // 2, seeds - 1
    assert inter[i, j] == int((masks[i] & masks[j]).sum()) and inter[i, i] == int(masks[i].sum())


def test_chance_level_matches_random_masks():
    g = torch.Generator().manual_seed(0)
    for p in (0.05, 0.3):
        n, k = 200_000, int(0.3 * 200_000) if p == 0.3 else 10_000
        a, b = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
        a[torch.randperm(n, generator=g)[:k]] = True
        b[torch.randperm(n, generator=g)[:k]] = True
        assert seed_overlap.jaccard(a, b) == pytest.approx(seed_overlap.chance(k / n), abs=0.005)


def test_overlap_needs_one_dictionary_for_all_seeds():
    def cfg(seed, **dic):
        return {"dataset": "digits", "model": "mlp_300_100", "dictionary": {**dic, "seed": seed}}

    same = [seed_overlap.basis_key(cfg(s, kind="bottleneck", layer="1", basis="dct")) for s in (0, 1)]
    assert same[0] == same[1]  # the seed a dct bottleneck carries is unused
    drawn = [seed_overlap.basis_key(cfg(s, kind="random", method="fast")) for s in (0, 1)]
    assert drawn[0] != drawn[1]  # a rotation drawn from each trial's seed: masks are not comparable
    fixed = [seed_overlap.basis_key({**cfg(0, kind="random", method="fast"), "seed": s}) for s in (0, 1)]
    assert fixed[0] == fixed[1]


# -- on a real sweep ---------------------------------------------------------------------------------
def raw_masks(sweep_dir: Path, trial_id: str) -> dict[int, np.ndarray]:
    """The tickets' masks straight from the sweep directory's ticket files (no glth helpers)."""
    saved = [torch.load(f, weights_only=True) for f in sorted((sweep_dir / "tickets" / trial_id).glob("round-*.pt"))]
    return {int(t["round"]): t["mask"].numpy() for t in saved}


def set_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(np.flatnonzero(a)), set(np.flatnonzero(b))
    return len(sa & sb) / len(sa | sb)


def results_delta_1(paper_sweep):
    """``glth results --delta 1.0`` of the paper sweep, in this process (it starts no Ray)."""
    args = ["results", paper_sweep["sweep_id"], "--out", "out", "--tracking-uri", paper_sweep["uri"], "--delta", "1.0"]
    return glth_here(*args, cwd=paper_sweep["cwd"])


@pytest.fixture(scope="module")
def results(paper_sweep):
    proc = results_delta_1(paper_sweep)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_parquet(paper_sweep["sweep_dir"] / "analysis.parquet")
    return proc.stdout, table


@pytest.mark.slow
def test_results_shows_the_analysis_table(results):
    stdout, _ = results
    assert "per curve" in stdout and "threshold_compr" in stdout and "peak_acc" in stdout and "jaccard" in stdout
    assert "bottleneck-identity [random_mask]" in stdout


@pytest.mark.slow
def test_jaccard_matches_an_independent_computation(paper_sweep, results):
    _, table = results
    rows = paper_sweep["rows"]
    checked = 0
    for (dictionary, control), trials in rows.groupby(["dictionary", "control"]):
        ids = sorted(trials.trial_id.unique())
        assert len(ids) == 2
        masks = [raw_masks(paper_sweep["sweep_dir"], t) for t in ids]
        for rnd in range(5):
            got = table[(table.dictionary == dictionary) & (table.control == control) & (table["round"] == rnd)].iloc[0]
            want = set_jaccard(masks[0][rnd], masks[1][rnd])
            assert got.jaccard_mean == pytest.approx(want, abs=1e-12)
            assert got.jaccard_min == got.jaccard_max == pytest.approx(want, abs=1e-12)  # one pair
            density = masks[0][rnd].mean()
            assert got.jaccard_chance == pytest.approx(density / (2 - density))
            if dictionary.startswith("bottleneck"):
                cols = [m[rnd].reshape(300, 64).any(0) for m in masks]  # kept columns of U
                assert got.group_jaccard_mean == pytest.approx(set_jaccard(*cols), abs=1e-12)
                assert got.group_density == pytest.approx(cols[0].mean())
            else:
                assert math.isnan(got.group_jaccard_mean)
            checked += 1
    assert checked == 9 * 5
    assert (table[table["round"] == 0].jaccard_mean == 1.0).all()


@pytest.mark.slow
def test_threshold_and_peak_match_the_rows(paper_sweep, results):
    _, table = results
    rows = paper_sweep["rows"]
    for (dictionary, control), trials in rows.groupby(["dictionary", "control"]):
        # chosen on validation (#12): the last round before the first whose mean val accuracy
        # drops below round 0 − δ; test accuracy is what is reported there
        val = trials.groupby("round").val_accuracy.mean()
        acc = trials.groupby("round").test_accuracy.mean()
        comp = trials.groupby("round").compression.mean()
        failing = [r for r in sorted(val.index) if val.loc[r] < val.loc[0] - 0.01 - 1e-12]
        want_round = max(failing[0] - 1, 0) if failing else int(max(val.index))
        got = table[(table.dictionary == dictionary) & (table.control == control)]
        assert (got.threshold_round == want_round).all() and (got.delta == 0.01).all()
        assert got.threshold_compression.iloc[0] == pytest.approx(comp.loc[want_round])
        assert got.threshold_accuracy.iloc[0] == pytest.approx(acc.loc[want_round])
        assert got.peak_accuracy.iloc[0] == pytest.approx(acc.loc[val.idxmax()])
        assert got.peak_round.iloc[0] == int(val.idxmax())
        assert got.dense_accuracy.iloc[0] == pytest.approx(acc.loc[0])
        assert got.winning.sum() == 1 and int(got[got.winning]["round"].iloc[0]) == want_round


@pytest.mark.slow
def test_analysis_is_logged_to_the_parent_run_once(paper_sweep, results):
    client = MlflowClient(paper_sweep["uri"])
    exp = client.get_experiment_by_name("glth-paper-test")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`glth.role` = 'parent'")
    pid = parent.info.run_id
    assert [a.path for a in client.list_artifacts(pid, "analysis")] == ["analysis/analysis.parquet"]
    _, table = results
    dct = table[(table.dictionary == "bottleneck-dct") & (table.control == "none")]
    key = "analysis/bottleneck-dct/threshold_compression"
    assert parent.data.metrics[key] == pytest.approx(dct.threshold_compression.iloc[0])
    assert parent.data.metrics["analysis/delta"] == 0.01  # the latest analysis: `glth results --delta 1.0`
    hist = client.get_metric_history(pid, "analysis/bottleneck-dct/jaccard_mean")
    assert {m.step for m in hist} == {0, 1, 2, 3, 4}  # `glth run` logged it (δ 0.5) and `glth results` (δ 1.0)
    # the same analysis again adds nothing
    again = results_delta_1(paper_sweep)
    assert again.returncode == 0
    assert len(client.get_metric_history(pid, "analysis/bottleneck-dct/jaccard_mean")) == len(hist)


@pytest.mark.slow
def test_results_json_analysis(paper_sweep, results):
    proc = glth_here(
        "results",
        paper_sweep["sweep_id"],
        "--out",
        "out",
        "--format",
        "json",
        "--analysis",
        "--delta",
        "1.0",
        cwd=paper_sweep["cwd"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    curves = json.loads(proc.stdout)
    assert len(curves) == 9 and {c["control"] for c in curves} == {"none", "random_mask", "reinit"}
    assert all(0 <= c["threshold_compression"] <= 1 for c in curves)
