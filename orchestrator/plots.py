"""The paper's figures as PNGs, drawn from a sweep's Parquet rows."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from orchestrator.results import CURVE, summarize, threshold_index  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _band(mean: np.ndarray, std: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Half-width of a 95% confidence interval of the mean over n seeds (Student t)."""
    n = np.maximum(n, 1)
    t = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), 0.0)
    return t * std / np.sqrt(n)


def accuracy_vs_compression(rows: pd.DataFrame, path, delta: float = 0.005, log_remaining: bool = False,
                            title: str | None = None) -> Path:
    """Fig. 2: test accuracy against compression, one curve per dictionary (and control)."""
    summary = summarize(rows, delta)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dense = summary[summary["round"] == 0]["test_accuracy_mean"]
    for key, curve in summary.groupby(CURVE, sort=True):
        curve = curve.sort_values("round")
        label = curve["dictionary"].iloc[0]
        if curve["control"].iloc[0] != "none":
            label += f" [{curve['control'].iloc[0]}]"
        if summary["tau"].nunique() > 1:
            label += f" τ={curve['tau'].iloc[0]:g}"
        x = 1.0 - curve["compression_mean"].to_numpy() if log_remaining else curve["compression_mean"].to_numpy()
        m = 100 * curve["test_accuracy_mean"].to_numpy()
        h = 100 * _band(curve["test_accuracy_mean"].to_numpy(), curve["test_accuracy_std"].to_numpy(), curve["seeds"].to_numpy())
        (line,) = ax.plot(x, m, marker="o", ms=3, label=label)
        ax.fill_between(x, np.clip(m - h, 0, 100), np.clip(m + h, 0, 100), color=line.get_color(), alpha=0.2)
        idx = threshold_index(curve, delta)
        if idx is not None:
            xt = curve.loc[idx, "compression_mean"]
            ax.plot(1 - xt if log_remaining else xt, 100 * curve.loc[idx, "test_accuracy_mean"], marker="*", ms=14,
                    color=line.get_color(), markeredgecolor="black")
    lowest = 100 * summary["test_accuracy_mean"].min()
    ax.set_ylim(max(0.0, lowest - 5), min(100.0, 100 * summary["test_accuracy_mean"].max() + 3))
    if len(dense):
        ax.axhline(100 * dense.mean(), color="grey", ls="--", lw=1, label="dense (round 0)")
    if log_remaining:
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("remaining fraction of the dictionary (log scale)")
    else:
        ax.set_xlabel("compression (removed fraction of the dictionary)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "IMP in several dictionaries: mean and 95% CI over seeds; ★ winning-ticket threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
