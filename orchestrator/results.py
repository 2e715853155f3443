"""Per dictionary × τ × round summaries over seeds, and the winning-ticket threshold.

The threshold of a curve is the largest compression whose mean test accuracy stays within
``delta`` (accuracy as a fraction; 0.005 = 0.5 points) of the curve's round-0 mean.
"""

from __future__ import annotations

import json

import pandas as pd

FORMATS = ("table", "csv", "json", "markdown")
CURVE = ["dictionary", "control", "tau", "rewind"]


def summarize(rows: pd.DataFrame, delta: float = 0.005) -> pd.DataFrame:
    """One row per curve × round: mean ± std over seeds, and a ``winning`` flag at the threshold."""
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    if "control" not in ok:
        ok = ok.assign(control="none")
    g = ok.groupby(CURVE + ["round"], sort=True)
    out = g.agg(
        seeds=("seed", "nunique"),
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        val_accuracy_mean=("val_accuracy", "mean"),
        compression_mean=("compression", "mean"),
        compression_std=("compression", "std"),
        density_mean=("density", "mean"),
    ).reset_index()
    out[["test_accuracy_std", "compression_std"]] = out[["test_accuracy_std", "compression_std"]].fillna(0.0)
    out["winning"] = False
    for _, curve in out.groupby(CURVE, sort=False):
        idx = threshold_index(curve, delta)
        if idx is not None:
            out.loc[idx, "winning"] = True
    return out


def threshold_index(curve: pd.DataFrame, delta: float):
    """Row index of the largest compression with mean accuracy ≥ round-0 mean − delta."""
    base = curve.loc[curve["round"] == curve["round"].min(), "test_accuracy_mean"]
    if base.empty:
        return None
    good = curve[curve["test_accuracy_mean"] >= float(base.iloc[0]) - delta - 1e-12]
    return None if good.empty else good["compression_mean"].idxmax()


def thresholds(summary: pd.DataFrame) -> pd.DataFrame:
    """Per curve: the winning-ticket compression and its accuracy, plus the peak accuracy."""
    rows = []
    for key, curve in summary.groupby(CURVE, sort=True):
        win = curve[curve["winning"]]
        peak = curve.loc[curve["test_accuracy_mean"].idxmax()]
        rows.append({
            **dict(zip(CURVE, key)),
            "threshold_compression": float(win["compression_mean"].iloc[0]) if len(win) else float("nan"),
            "threshold_round": int(win["round"].iloc[0]) if len(win) else -1,
            "dense_accuracy": float(curve.loc[curve["round"].idxmin(), "test_accuracy_mean"]),
            "peak_accuracy": float(peak["test_accuracy_mean"]),
            "peak_compression": float(peak["compression_mean"]),
        })
    return pd.DataFrame(rows)


def render(summary: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        return json.dumps(summary.to_dict("records"), indent=1, default=float)
    view = pd.DataFrame({
        "dictionary": summary["dictionary"] + summary["control"].map(lambda c: "" if c == "none" else f" [{c}]"),
        "tau": summary["tau"],
        "rewind": summary["rewind"],
        "round": summary["round"],
        "seeds": summary["seeds"],
        "compression": [f"{m:.4f} ± {s:.4f}" for m, s in zip(summary["compression_mean"], summary["compression_std"])],
        "test_acc": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(summary["test_accuracy_mean"], summary["test_accuracy_std"])],
        "winning": summary["winning"].map(lambda w: "<- threshold" if w else ""),
    })
    if fmt == "markdown":
        header = "| " + " | ".join(view.columns) + " |\n|" + "---|" * len(view.columns) + "\n"
        return header + "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in view.itertuples(index=False))
    return view.to_string(index=False)
