"""Choose on validation, report test (#12): thresholds, peaks and their spread over seeds, on rows
whose answers are known by construction."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator import analysis, analysis_report, results
from orchestrator.uncertainty import RESAMPLES, percentile_interval, threshold_uncertainty


def rows_of(curves: dict[int, list[tuple[float, float]]], dictionary="canonical") -> pd.DataFrame:
    """seed → [(val, test) per round]; compression 1 − 0.5^round."""
    out = []
    for seed, points in curves.items():
        for rnd, (val, test) in enumerate(points):
            out.append(
                {
                    "dataset": "digits",
                    "model": "m",
                    "dictionary": dictionary,
                    "control": "none",
                    "tau": 0.5,
                    "rewind": "init",
                    "round": rnd,
                    "seed": seed,
                    "trial_id": f"t{seed}",
                    "status": "ok",
                    "val_accuracy": val,
                    "test_accuracy": test,
                    "compression": 1 - 0.5**rnd,
                    "density": 0.5**rnd,
                    "kind": "imp",
                }
            )
    return pd.DataFrame(out)


# val fails at round 2 and recovers at round 3; test never fails
DIP = {0: [(0.90, 0.80), (0.90, 0.81), (0.85, 0.82), (0.90, 0.83), (0.50, 0.50)]}


def test_the_threshold_is_chosen_on_validation_and_reports_test():
    curves = analysis.analyze(rows_of(DIP), delta=0.01).curves
    (c,) = curves.itertuples()
    assert c.threshold_round == 1 and c.threshold_compression == pytest.approx(0.5)
    assert c.threshold_accuracy == pytest.approx(0.81) and c.threshold_val_accuracy == pytest.approx(0.90)
    assert c.selected_on == "val"


def test_the_threshold_is_the_last_round_before_the_first_failure():
    # the old rule (largest compression within δ anywhere) picks round 3, after a failure
    curves = analysis.analyze(rows_of(DIP), delta=0.01).curves
    assert curves.within_delta_compression.iloc[0] == pytest.approx(0.875)
    assert curves.threshold_compression.iloc[0] == pytest.approx(0.5)


def test_selecting_on_test_is_explicit_and_labelled():
    summary = results.summarize(rows_of(DIP), 0.01, select_on="test")
    assert int(summary[summary.winning]["round"].iloc[0]) == 3  # test never fails before round 4
    assert "chosen on TEST" in results.render(summary)
    assert "chosen on val" in results.render(results.summarize(rows_of(DIP), 0.01))
    with pytest.raises(ValueError, match="--select-on"):
        results.summarize(rows_of(DIP), 0.01, select_on="train")


def test_the_peak_is_the_best_validation_round_with_its_test_accuracy():
    points = {0: [(0.80, 0.70), (0.95, 0.60), (0.85, 0.90)]}
    (c,) = analysis.analyze(rows_of(points), delta=0.01).curves.itertuples()
    assert c.peak_round == 1 and c.peak_accuracy == pytest.approx(0.60) and c.peak_val_accuracy == pytest.approx(0.95)


def test_thresholds_carry_their_spread_over_seeds():
    # seed s keeps its val accuracy until round s + 1, then drops: own thresholds at rounds 1, 2, 3
    seeds = {s: [(0.9, 0.9) if r <= s + 1 else (0.5, 0.5) for r in range(6)] for s in range(3)}
    u = threshold_uncertainty(rows_of(seeds), delta=0.01).iloc[0]
    own = [1 - 0.5 ** (s + 1) for s in range(3)]
    assert u.threshold_seeds == 3
    assert u.threshold_seed_mean == pytest.approx(np.mean(own)) and u.threshold_seed_std == pytest.approx(
        np.std(own, ddof=1)
    )
    # an independent bootstrap of the seed-mean curve's threshold
    acc = np.array([[p[0] for p in seeds[s]] for s in range(3)])
    comp = np.array([1 - 0.5**r for r in range(6)])

    def stat(idx):
        mean = acc[np.asarray(idx, dtype=int)].mean(axis=0)
        bad = np.flatnonzero(mean < mean[0] - 0.01 - 1e-12)
        return comp[max(bad[0] - 1, 0)] if len(bad) else comp[-1]

    ref = stats.bootstrap(
        (np.arange(3),),
        stat,
        vectorized=False,
        n_resamples=999,
        method="percentile",
        random_state=np.random.default_rng(0),
    )
    assert (u.threshold_ci_low, u.threshold_ci_high) == pytest.approx(tuple(ref.confidence_interval))
    assert u.threshold_ci_low <= u.threshold_seed_mean <= u.threshold_ci_high


def one_at_a_time(acc: np.ndarray, comp: np.ndarray, idx, delta: float) -> float:
    """A resample's threshold as it was computed before the batched version: its seeds' mean curve alone."""
    idx = np.asarray(idx, dtype=int)
    mean_acc, mean_comp = acc[idx].mean(axis=0), comp[idx].mean(axis=0)
    return float(mean_comp[results.threshold_position(mean_acc, delta)])


@pytest.mark.parametrize(("n", "rounds"), [(2, 1), (9, 7), (70, 12)])
def test_batched_thresholds_equal_one_resample_at_a_time(n, rounds):
    rng = np.random.default_rng(n)
    seeds = {s: [tuple(v) for v in 0.9 - np.cumsum(rng.random((rounds, 2)) * 0.004, axis=0)] for s in range(n)}
    rows = rows_of(seeds)
    rows["compression"] += rng.random(len(rows)) * 0.01  # seeds prune slightly different fractions
    u = threshold_uncertainty(rows, delta=0.01).iloc[0]
    acc = rows.pivot_table(index="seed", columns="round", values="val_accuracy").to_numpy()
    comp = rows.pivot_table(index="seed", columns="round", values="compression").to_numpy()
    own = [one_at_a_time(acc, comp, [i], 0.01) for i in range(n)]
    ref = stats.bootstrap(
        (np.arange(n),),
        lambda i: one_at_a_time(acc, comp, i, 0.01),
        vectorized=False,
        n_resamples=999,
        method="percentile",
        random_state=np.random.default_rng(0),
    )
    assert u.threshold_seed_mean == float(np.mean(own)) and u.threshold_seed_std == float(np.std(own, ddof=1))
    assert (u.threshold_ci_low, u.threshold_ci_high) == tuple(map(float, ref.confidence_interval))  # exactly
    assert u.threshold_ci_low < u.threshold_ci_high or rounds == 1


@pytest.mark.parametrize("seed", range(6))
def test_the_percentile_interval_is_scipys_bootstrap_number_for_number(seed):
    # without scipy.stats (a second of every glth results): the same draws and the same quantiles,
    # on continuous values and on few distinct ones (ties, as thresholds are)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    values = rng.normal(size=n) if seed % 2 else rng.integers(0, 4, size=n) / 7

    def mean(i, axis=-1):
        return values[i].mean(axis=-1)

    ref = stats.bootstrap(
        (np.arange(n),),
        mean,
        vectorized=True,
        n_resamples=RESAMPLES,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    assert percentile_interval(n, mean, np.random.default_rng(seed)) == tuple(map(float, ref.confidence_interval))


def test_the_analysis_imports_no_scipy_stats():
    # its import parses every docstring of scipy.stats: about a second of each glth results
    code = (
        "import sys; from orchestrator import analysis, uncertainty; from orchestrator.cli import read_cmds; "
        "print(sorted(m for m in sys.modules if m.startswith('scipy.stats')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_seed_has_no_spread():
    u = threshold_uncertainty(rows_of(DIP), delta=0.01).iloc[0]
    assert np.isnan(u.threshold_seed_std) and np.isnan(u.threshold_ci_low) and u.threshold_seeds == 1


def test_kinds_without_a_dense_baseline_get_no_threshold_nor_its_spread():
    strong = rows_of({0: [(0.1, 0.1), (0.8, 0.8)], 1: [(0.1, 0.1), (0.7, 0.7)]}).assign(kind="strong")
    curves = analysis.analyze(strong, delta=0.01).curves
    assert (curves.threshold_round == -1).all() and "threshold_ci_low" not in curves
    assert "±" not in analysis_report.render_curves(curves)
