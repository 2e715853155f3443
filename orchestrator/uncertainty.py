"""How sure a winning-ticket threshold is, over seeds.

Per curve: each seed's own threshold (the same rule as ``results.threshold_index`` on that seed's
rows alone), their mean and standard deviation, and a 95% bootstrap interval of the threshold of
the seed-mean curve (the seeds resampled with replacement; the percentile method, since the
statistic is discrete; seeded, so reruns agree), computed as ``scipy.stats.bootstrap`` computes it,
number for number, without importing ``scipy.stats`` (about a second of every ``glth results``).
With one seed the spread and the interval are NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from orchestrator.results import CURVE, check_select, curve_rows, threshold_position

RESAMPLES = 999
#: the interval's confidence level
LEVEL = 0.95
COLUMNS = ["threshold_seed_mean", "threshold_seed_std", "threshold_ci_low", "threshold_ci_high"]


def _matrices(curve: pd.DataFrame, select_on: str) -> tuple[np.ndarray, np.ndarray]:
    """(selection accuracy, compression) as seeds × rounds, rounds present for every seed."""
    acc = curve.pivot_table(index="seed", columns="round", values=f"{select_on}_accuracy").dropna(axis=1)
    comp = curve.pivot_table(index="seed", columns="round", values="compression")[acc.columns]
    return acc.to_numpy(), comp.to_numpy()


#: resamples whose seeds × rounds accuracies are gathered at once (bounds the memory at any size)
_CHUNK = 64


def _thresholds(acc: np.ndarray, comp: np.ndarray, idx, delta: float) -> np.ndarray:
    """The threshold compression of the seed-mean curve of each row of ``idx`` (resamples × seeds,
    indices of ``acc``'s rows) by the rule of ``threshold_position``; each row's means are taken as
    for that row alone (over its seeds, in order), ``_CHUNK`` rows at a time."""
    idx = np.asarray(idx, dtype=int)
    out = np.empty(idx.shape[:-1])
    for start in range(0, len(idx), _CHUNK):
        part = idx[start : start + _CHUNK]
        mean_acc, mean_comp = acc[part].mean(axis=-2), comp[part].mean(axis=-2)
        at = threshold_position(mean_acc, delta)
        out[start : start + _CHUNK] = np.take_along_axis(mean_comp, at[..., None], axis=-1)[..., 0]
    return out


def percentile_interval(n: int, statistic, rng: np.random.Generator) -> tuple[float, float]:
    """The ``LEVEL`` percentile-bootstrap interval of ``statistic`` (resamples × ``n`` indices →
    one value each) over ``RESAMPLES`` resamples of ``n`` indices: what
    ``scipy.stats.bootstrap((np.arange(n),), statistic, vectorized=True, n_resamples=RESAMPLES,
    method="percentile", rng=rng)`` gives, drawn and interpolated the same way (one
    ``rng.integers`` draw of every resample; the linear quantile, Hyndman & Fan's type 7, at
    α and 1 − α); NaN when a resample's statistic is."""
    theta = np.sort(statistic(rng.integers(0, n, (RESAMPLES, n))))
    if np.isnan(theta).any():
        return math.nan, math.nan
    alpha = (1 - LEVEL) / 2
    p = np.array([alpha, 1 - alpha])
    at = p * float(RESAMPLES) + (1 - p)  # 1-based positions in the sorted values
    g = np.where(at // 1 - 1 < 0, 0.0, at % 1)
    below = np.clip(at // 1 - 1, 0, RESAMPLES - 1).astype(np.int64)
    above = np.clip(at // 1, 0, RESAMPLES - 1).astype(np.int64)
    low, high = (1 - g) * theta[below] + g * theta[above]
    return float(low), float(high)


def threshold_uncertainty(
    rows: pd.DataFrame, delta: float = 0.005, select_on: str = "val", seed: int = 0
) -> pd.DataFrame:
    """One row per curve: ``COLUMNS`` (compression fractions) and the seeds used."""
    check_select(select_on)
    ok = curve_rows(rows)
    out = []
    for key, curve in ok.groupby(CURVE, sort=True, dropna=False):
        acc, comp = _matrices(curve, select_on)
        n = acc.shape[0]
        row = {**dict(zip(CURVE, key)), "threshold_seeds": n, **dict.fromkeys(COLUMNS, math.nan)}
        if n and acc.shape[1]:
            own = _thresholds(acc, comp, np.arange(n)[:, None], delta).tolist()
            row["threshold_seed_mean"] = float(np.mean(own))
            if n > 1:
                row["threshold_seed_std"] = float(np.std(own, ddof=1))
                row["threshold_ci_low"], row["threshold_ci_high"] = percentile_interval(
                    n,
                    lambda i: _thresholds(acc, comp, i, delta),  # noqa: B023  (called at once, inside the loop)
                    np.random.default_rng(seed),
                )
        out.append(row)
    return pd.DataFrame(out, columns=[*CURVE, "threshold_seeds", *COLUMNS])
