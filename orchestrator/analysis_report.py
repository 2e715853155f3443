"""How a sweep's analysis is shown: the per-curve table ``glth results`` prints
(``render_curves``) and the metrics logged to the sweep's MLflow parent run (``mlflow_metrics``,
``log_to_mlflow``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from orchestrator.results import NO_ROWS, curve_label, varying

if TYPE_CHECKING:
    from orchestrator.analysis import Analysis


def render_curves(curves: pd.DataFrame, fmt: str = "table") -> str:
    """The per-curve table: dense accuracy, winning-ticket threshold, peak, overlap at the threshold."""
    if curves.empty:
        return f"({NO_ROWS})"
    vary = varying(curves)

    def pct(v, digits=2):
        return "" if pd.isna(v) else f"{100 * v:.{digits}f}"

    def spread(r):
        if pd.isna(r.get("threshold_ci_low")):
            return ""
        return f"±{100 * r['threshold_seed_std']:.1f} [{100 * r['threshold_ci_low']:.1f}, {100 * r['threshold_ci_high']:.1f}]"

    view = pd.DataFrame(
        {
            "curve": [curve_label(r, vary) for _, r in curves.iterrows()],
            "seeds": curves["seeds"],
            "chosen_on": curves.get("selected_on", "val"),
            "dense_acc": curves["dense_accuracy"].map(pct),
            "threshold_compr": curves["threshold_compression"].map(lambda v: pct(v, 1)),
            "seeds_sd_ci95": [spread(r) for _, r in curves.iterrows()] if "threshold_ci_low" in curves else "",
            "within_delta_compr": curves["within_delta_compression"].map(lambda v: pct(v, 1)),
            "round": curves["threshold_round"].map(lambda r: "" if r < 0 else r),
            "acc_there": curves["threshold_accuracy"].map(pct),
            "peak_acc": curves["peak_accuracy"].map(pct),
            "peak_round": curves["peak_round"],
            "peak_compr": curves["peak_compression"].map(lambda v: pct(v, 1)),
        }
    )
    if curves["threshold_rank"].notna().any():
        view.insert(5, "rank_there", curves["threshold_rank"].map(lambda r: "" if pd.isna(r) else f"{r:.0f}"))
    if "threshold_jaccard_mean" in curves and curves["threshold_jaccard_mean"].notna().any():
        view["jaccard_there"] = [
            "" if pd.isna(j) else f"{j:.3f} (chance {c:.3f})"
            for j, c in zip(curves["threshold_jaccard_mean"], curves["threshold_jaccard_chance"])
        ]
    for col, name in (
        ("threshold_jaccard_vs_structured", "vs_structured_there"),
        ("threshold_group_jaccard_vs_structured", "groups_vs_structured_there"),
    ):
        if col in curves and curves[col].notna().any():  # the training-free baseline's share of the ticket
            view[name] = curves[col].map(lambda j: "" if pd.isna(j) else f"{j:.3f}")
    if "threshold_group_jaccard_mean" in curves and curves["threshold_group_jaccard_mean"].notna().any():
        view["groups_jaccard_there"] = curves["threshold_group_jaccard_mean"].map(
            lambda j: "" if pd.isna(j) else f"{j:.3f}"
        )
    if fmt == "markdown":
        header = "| " + " | ".join(view.columns) + " |\n|" + "---|" * len(view.columns) + "\n"
        return header + "\n".join("| " + " | ".join(str(v) for v in r) + " |" for r in view.itertuples(index=False))
    return view.to_string(index=False)


def _metric_key(*parts) -> str:
    """MLflow keys take letters, digits, ``_ - . / `` and spaces."""
    return "/".join("".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in str(p)) for p in parts)


def mlflow_metrics(analysis: Analysis) -> list[tuple[str, float, int]]:
    """(key, value, step) per curve: its threshold, peak and per-round overlap (step = round)."""
    vary = varying(analysis.curves)
    out = [("analysis/delta", analysis.delta, 0)]
    for _, c in analysis.curves.iterrows():
        name = curve_label(c, vary)
        for k in (
            "dense_accuracy",
            "threshold_compression",
            "threshold_round",
            "threshold_accuracy",
            "threshold_rank",
            "threshold_val_accuracy",
            "within_delta_compression",
            "threshold_seed_mean",
            "threshold_seed_std",
            "threshold_ci_low",
            "threshold_ci_high",
            "peak_accuracy",
            "peak_val_accuracy",
            "peak_compression",
            "peak_round",
        ):
            if k in c:
                out.append((_metric_key("analysis", name, k), c[k], 0))
    for _, r in analysis.rounds.iterrows():
        name = curve_label(r, vary)
        for k in (
            "jaccard_mean",
            "group_jaccard_mean",
            "jaccard_chance",
            "jaccard_vs_structured",
            "group_jaccard_vs_structured",
        ):
            if k in r:
                out.append((_metric_key("analysis", name, k), r[k], int(r["round"])))
    return [(k, float(v), s) for k, v, s in out if v is not None and not pd.isna(v)]


def log_to_mlflow(
    analysis: Analysis, sweep_id: str, experiment: str, tracking_uri: str, artifacts: list[Path] = ()
) -> str | None:
    """Log the analysis to the sweep's parent run (metrics + artifacts), once per distinct content.
    Returns the parent run id, or None when the sweep has no parent run in that store."""
    from orchestrator.sinks import mlflow as mlflow_sink

    metrics = mlflow_metrics(analysis)
    digest = hashlib.sha256(json.dumps([metrics, [Path(a).name for a in artifacts]]).encode()).hexdigest()[:16]
    return mlflow_sink.log_to_parent(
        tracking_uri,
        experiment,
        sweep_id,
        metrics=metrics,
        artifacts={f"analysis/{Path(a).name}": Path(a) for a in artifacts},
        once_tag=("glth.analysis", digest),
    )
