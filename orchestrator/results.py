"""Per dictionary × τ × round summaries over seeds, and the winning-ticket threshold.

Selection on validation, report on test: the threshold of a curve is the last round before its
first failure, a failure being a round whose mean *validation* accuracy falls below the round-0
mean − ``delta`` (accuracy as a fraction; 0.005 = 0.5 points); the test accuracy there is what is
reported. The peak is the round of best validation accuracy, reported with its test accuracy.
``select_on="test"`` exists for comparison with papers that chose on test, and is labelled in
every output. The looser rule (largest compression within δ anywhere) is printed beside it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from glth_core import controls
from orchestrator.axes import AXES, with_axes
from orchestrator.kind_results import measures_threshold

FORMATS = ("table", "csv", "json", "markdown")
#: which split chooses thresholds, peaks and rounds: validation by default; test only when asked
#: (and then labelled in every output), since choosing on test and reporting test overfits it
SELECT_ON = ("val", "test")
#: how tables name the rule (``delta`` in points)
THRESHOLD_RULE = (
    "per curve (winning ticket: the last round before the first with mean {split} accuracy < round 0 − "
    "{delta:g} points, chosen on {split}, test accuracy reported; within_delta: the largest compression "
    "within δ anywhere)"
)
#: what makes one curve: rows differing in any of these are never averaged together; ``axes`` is
#: every other field the sweep varies except the seed (``orchestrator.axes``, added in memory)
CURVE = ["dataset", "model", "dictionary", "control", "tau", "rewind", AXES]
_CURVE_DEFAULTS = {"dataset": "?", "model": "?", "control": "none"}
#: what an empty table says
NO_ROWS = "no rows: no trial has a round with status ok"


def summarize(rows: pd.DataFrame, delta: float = 0.005, select_on: str = "val") -> pd.DataFrame:
    """One row per curve × round: mean ± std over seeds, and a ``winning`` flag at the threshold
    (chosen on ``select_on`` accuracy: validation unless asked otherwise; see ``threshold_index``)."""
    check_select(select_on)
    ok = curve_rows(rows)
    extra = {"rank_mean": ("rank", "mean")} if "rank" in ok else {}
    g = ok.groupby(CURVE + ["round"], sort=True, dropna=False)  # τ is NaN for strong/construct trials
    out = g.agg(
        seeds=("seed", "nunique"),
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        val_accuracy_mean=("val_accuracy", "mean"),
        val_accuracy_std=("val_accuracy", "std"),
        compression_mean=("compression", "mean"),
        compression_std=("compression", "std"),
        density_mean=("density", "mean"),
        **extra,
    ).reset_index()
    stds = ["test_accuracy_std", "val_accuracy_std", "compression_std"]
    out[stds] = out[stds].fillna(0.0)
    out["winning"] = False
    out["selected_on"] = select_on
    if not measures_threshold(ok):  # no dense baseline (a strong search): no threshold against it
        return out
    for _, curve in out.groupby(CURVE, sort=False, dropna=False):
        idx = threshold_index(curve, delta, select_on)
        if idx is not None:
            out.loc[idx, "winning"] = True
    return out


def curve_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The ok rows with every ``CURVE`` column (``axes`` computed over all the rows, failed ones too)."""
    rows = with_axes(rows)
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    return ok.assign(**{k: v for k, v in _CURVE_DEFAULTS.items() if k not in ok})


def check_select(select_on: str) -> None:
    if select_on not in SELECT_ON:
        raise ValueError(f"--select-on: {select_on!r} is not one of {', '.join(SELECT_ON)}")


def _selection(curve: pd.DataFrame, select_on: str) -> tuple[pd.DataFrame, pd.Series]:
    curve = curve.sort_values("round")
    return curve, curve[f"{select_on}_accuracy_mean"]


def threshold_index(curve: pd.DataFrame, delta: float, select_on: str = "val"):
    """Row index of the winning-ticket threshold: the last round before the first failure, a
    failure being a round whose mean ``select_on`` accuracy is below round 0's − ``delta``
    (round 0 itself when round 1 already fails)."""
    curve, acc = _selection(curve, select_on)
    if curve.empty:
        return None
    return curve.index[threshold_position(acc.to_numpy(), delta)]


def threshold_position(accuracy, delta: float):
    """The threshold rule on one mean-accuracy sequence over rounds (round 0 first): the position
    of the last round before the first one below ``accuracy[0] − delta``. On an array of such
    sequences (rounds last) the position of each, as an int array."""
    accuracy = np.asarray(accuracy)
    failed = accuracy < accuracy[..., :1] - delta - 1e-12
    at = np.where(failed.any(axis=-1), np.maximum(failed.argmax(axis=-1) - 1, 0), accuracy.shape[-1] - 1)
    return int(at) if at.ndim == 0 else at


def within_delta_index(curve: pd.DataFrame, delta: float, select_on: str = "val"):
    """Row index of the largest compression whose mean accuracy is within ``delta`` of round 0
    anywhere on the curve (even after a failure): the looser rule, printed beside the threshold."""
    curve, acc = _selection(curve, select_on)
    if curve.empty:
        return None
    good = curve[acc >= float(acc.iloc[0]) - delta - 1e-12]
    return None if good.empty else good["compression_mean"].idxmax()


def thresholds(summary: pd.DataFrame, delta: float = 0.005) -> pd.DataFrame:
    """Per curve: the winning-ticket compression and the test accuracy there, the looser
    within-δ compression, and the peak (the round with the best selection accuracy) with its
    test accuracy; ``threshold_rank`` = mean kept groups at the threshold."""
    rows = []
    nan = float("nan")
    select_on = str(summary["selected_on"].iloc[0]) if "selected_on" in summary and len(summary) else "val"
    summary = with_axes(summary)
    for key, curve in summary.groupby(CURVE, sort=True, dropna=False):
        win = curve[curve["winning"]]
        curve_sorted, acc = _selection(curve, select_on)
        peak = curve_sorted.loc[acc.idxmax()]
        loose = within_delta_index(curve, delta, select_on) if len(win) else None
        has_rank = "rank_mean" in curve and len(win) and pd.notna(win["rank_mean"].iloc[0])
        rows.append(
            {
                **dict(zip(CURVE, key)),
                "seeds": int(curve["seeds"].max()),
                "rounds": int(curve["round"].nunique()),
                "selected_on": select_on,
                "threshold_compression": float(win["compression_mean"].iloc[0]) if len(win) else nan,
                "threshold_round": int(win["round"].iloc[0]) if len(win) else -1,
                "threshold_accuracy": float(win["test_accuracy_mean"].iloc[0]) if len(win) else nan,
                "threshold_val_accuracy": float(win["val_accuracy_mean"].iloc[0]) if len(win) else nan,
                "threshold_rank": float(win["rank_mean"].iloc[0]) if has_rank else nan,
                "within_delta_compression": float(curve.loc[loose, "compression_mean"]) if loose is not None else nan,
                "dense_accuracy": float(curve_sorted["test_accuracy_mean"].iloc[0]),
                "peak_accuracy": float(peak["test_accuracy_mean"]),
                "peak_val_accuracy": float(peak["val_accuracy_mean"]),
                "peak_compression": float(peak["compression_mean"]),
                "peak_round": int(peak["round"]),
            }
        )
    return pd.DataFrame(rows)


def curve_label(row, varying: tuple[str, ...] = ("tau",)) -> str:
    """A curve's name in tables and legends: the dictionary, its control, whichever of dataset /
    model / τ / rewind appear in ``varying`` (those that differ within the sweep), and the other
    fields the sweep varies (``axes``: ``canonical · lr=0.05``)."""
    label = str(row["dictionary"])
    label += controls.label(row.get("control"))
    if "tau" in varying:
        label += f" τ={float(row['tau']):g}"
    if "rewind" in varying:
        label += f" rewind={row['rewind']}"
    if row.get(AXES):
        label += f" · {row[AXES]}"
    for k in ("model", "dataset"):
        if k in varying:
            label = f"{row[k]}: {label}"
    return label


def varying(frame: pd.DataFrame) -> tuple[str, ...]:
    """The curve keys besides dictionary and control that take more than one value in ``frame``."""
    return tuple(k for k in ("dataset", "model", "tau", "rewind") if k in frame and frame[k].nunique() > 1)


def render(summary: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return summary.to_csv(index=False)
    if fmt == "json":
        clean = summary.astype(object).where(summary.notna(), None)  # NaN is not JSON: null
        return json.dumps(clean.to_dict("records"), indent=1, default=float)
    view = pd.DataFrame(
        {
            **{k: summary[k] for k in ("dataset", "model") if k in varying(summary)},
            "dictionary": summary["dictionary"]
            + summary["control"].map(controls.label)
            + (summary[AXES].map(lambda a: f" · {a}" if a else "") if AXES in summary else ""),
            "tau": summary["tau"],
            "rewind": summary["rewind"],
            "round": summary["round"],
            "seeds": summary["seeds"],
            "compression": [
                f"{m:.4f} ± {s:.4f}" for m, s in zip(summary["compression_mean"], summary["compression_std"])
            ],
            "test_acc": [
                f"{100 * m:.2f} ± {100 * s:.2f}"
                for m, s in zip(summary["test_accuracy_mean"], summary["test_accuracy_std"])
            ],
            "val_acc": [f"{100 * m:.2f}" for m in summary["val_accuracy_mean"]],
        }
    )
    if "rank_mean" in summary and summary["rank_mean"].notna().any():
        view["rank"] = summary["rank_mean"].map(lambda r: "" if pd.isna(r) else f"{r:.0f}")
    for col, name in (("jaccard_mean", "jaccard"), ("group_jaccard_mean", "jaccard_groups")):
        if col in summary and summary[col].notna().any():  # mask overlap across seeds (orchestrator.analysis)
            view[name] = summary[col].map(lambda j: "" if pd.isna(j) else f"{j:.3f}")
    chosen = str(summary["selected_on"].iloc[0]) if "selected_on" in summary and len(summary) else "val"
    mark = "<- threshold (chosen on val)" if chosen == "val" else "<- threshold (chosen on TEST)"
    view["winning"] = summary["winning"].map(lambda w: mark if w else "")
    if view.empty and fmt == "table":  # every trial failed: the header, and why it has no rows
        return "  ".join(view.columns) + f"\n({NO_ROWS})"
    if fmt == "markdown":
        header = "| " + " | ".join(view.columns) + " |\n|" + "---|" * len(view.columns) + "\n"
        return header + "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in view.itertuples(index=False))
    return view.to_string(index=False)
