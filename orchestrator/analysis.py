"""Per-sweep analysis: winning-ticket thresholds, peaks, and how much the tickets of different
seeds agree (mask overlap), written to ``DIR/<sweep_id>/analysis.parquet`` and the sweep's
MLflow parent run.

* threshold and peak per curve come from ``results.summarize`` / ``results.thresholds``;
* **mask overlap**: at each round, the Jaccard index |A ∩ B| / |A ∪ B| of the kept elements of
  every pair of seeds (mean, min, max over pairs), from the trials' tickets in the sweep directory,
  next to the chance level of two independent random masks of the same density p,
  E[J] ≈ p / (2 − p). For grouped dictionaries (bottlenecks) the same on the kept groups
  (columns of U: input coordinates for identity, DCT frequencies for dct). Overlap is only
  defined when every seed pruned the *same* dictionary: a dictionary drawn from the trial's seed
  (random rotations, random bottlenecks) gives NaN.

``analysis.parquet`` holds one row per curve × round: the per-round summary, the overlap columns,
and the curve's threshold / peak columns repeated on each of its rows.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from glth_core import dictionaries
from glth_core.dictionaries import varies_with_seed
from orchestrator import atomic
from orchestrator.axes import with_axes
from orchestrator.layout import SweepDir
from orchestrator.results import CURVE, curve_rows, is_strong_search, summarize, thresholds

ANALYSIS_FILE = "analysis.parquet"
OVERLAP = [
    "jaccard_mean",
    "jaccard_min",
    "jaccard_max",
    "jaccard_chance",
    "group_jaccard_mean",
    "group_jaccard_min",
    "group_jaccard_max",
    "group_jaccard_chance",
    "group_density",
]


@dataclass
class Analysis:
    rounds: pd.DataFrame  # curve × round: summary + overlap
    curves: pd.DataFrame  # curve: threshold, peak, overlap at the threshold
    delta: float

    def table(self) -> pd.DataFrame:
        """What ``analysis.parquet`` holds: the rounds with their curve's columns joined on."""
        curve_cols = [c for c in self.curves.columns if c not in self.rounds.columns or c in CURVE]
        return self.rounds.merge(self.curves[curve_cols], on=CURVE, how="left").assign(delta=self.delta)


# -- mask overlap ----------------------------------------------------------------------------------
def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks (1.0 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def pairwise(masks: list[torch.Tensor]) -> tuple[float, float, float]:
    """(mean, min, max) Jaccard over all pairs; NaNs with fewer than two masks."""
    values = [jaccard(a, b) for a, b in itertools.combinations(masks, 2)]
    if not values:
        return (math.nan,) * 3
    return sum(values) / len(values), min(values), max(values)


def chance(density: float) -> float:
    """Expected Jaccard of two independent uniformly random masks of density p: p / (2 − p)."""
    return density / (2.0 - density) if density > 0 else math.nan


def basis_key(config: dict) -> str:
    """Equal across trials exactly when they prune the same dictionary of the same model."""
    spec = dict(config.get("dictionary") or {})
    if not varies_with_seed(spec):
        spec.pop("seed", None)
    return json.dumps([config.get("dataset"), config.get("model"), spec], sort_keys=True, default=str)


@functools.lru_cache(maxsize=32)
def _layer_shape(model: str, dataset: str, layer: str) -> tuple[int, int]:
    from glth_core import data, models

    source = data.DATASETS[dataset]
    net = models.build(model, source.input_shape, source.num_classes)
    d_out, d_in = net.get_submodule(layer).weight.shape
    return int(d_out), int(d_in)


def group_mask(config: dict, mask: torch.Tensor) -> torch.Tensor | None:
    """Kept groups of a bottleneck ticket (columns of U), or None for ungrouped dictionaries."""
    spec = config.get("dictionary") or {}
    layer = dictionaries.kind_of(spec).input_columns_layer(spec) if spec else None
    if layer is None:
        return None
    d_out, d_in = _layer_shape(config["model"], config["dataset"], layer)
    return mask.view(d_out, d_in).any(dim=0)


def overlap(rows: pd.DataFrame, sweep_dir: SweepDir) -> pd.DataFrame:
    """Mask overlap across seeds per curve × round (see the module doc); the tickets from ``sweep_dir``."""
    ok = curve_rows(rows)
    out = []
    for key, curve in ok.groupby(CURVE, sort=True, dropna=False):
        trials = curve.drop_duplicates("trial_id")
        configs = {r.trial_id: json.loads(r.config) for r in trials.itertuples()}
        same_basis = len({basis_key(c) for c in configs.values()}) == 1
        tickets = {}
        if same_basis and len(configs) > 1:
            for tid in configs:
                tickets[tid] = sweep_dir.tickets(tid)
                if not tickets[tid]:
                    print(f"[glth] analysis: trial {tid} has no tickets; left out of the mask overlap", file=sys.stderr)
        for rnd in sorted(curve["round"].unique()):
            masks = [t[int(rnd)].mask.cpu() for t in tickets.values() if int(rnd) in t]
            row = dict(zip(CURVE, key), round=int(rnd), overlap_seeds=len(masks))
            row.update(dict.fromkeys(OVERLAP, math.nan))
            if len(masks) > 1:
                density = float(masks[0].float().mean())
                row["jaccard_mean"], row["jaccard_min"], row["jaccard_max"] = pairwise(masks)
                row["jaccard_chance"] = chance(density)
                config = next(iter(configs.values()))
                groups = [group_mask(config, m) for m in masks]
                if groups[0] is not None:
                    row["group_jaccard_mean"], row["group_jaccard_min"], row["group_jaccard_max"] = pairwise(groups)
                    row["group_density"] = float(groups[0].float().mean())
                    row["group_jaccard_chance"] = chance(row["group_density"])
            out.append(row)
    return pd.DataFrame(out, columns=[*CURVE, "round", "overlap_seeds", *OVERLAP]).astype({"tau": "float64"})


# -- the whole analysis ----------------------------------------------------------------------------
def analyze(
    rows: pd.DataFrame, sweep_dir: SweepDir | None = None, delta: float = 0.005, select_on: str = "val"
) -> Analysis:
    """Thresholds, peaks and (when ``sweep_dir`` holds the tickets) mask overlap of a sweep's rows.
    ``delta`` is in accuracy units (0.005 = 0.5 points); ``select_on`` the split that chooses."""
    from orchestrator.uncertainty import threshold_uncertainty

    rows = with_axes(rows)  # once, over every trial: each part below groups by the same curves
    summary = summarize(rows, delta, select_on)
    if summary.empty:  # every trial failed: no curve to analyse
        return Analysis(summary, summary[CURVE].assign(seeds=0), delta)  # the summary's column types
    if sweep_dir is not None:
        from orchestrator.baseline_overlap import baseline_overlap

        summary = summary.merge(overlap(rows, sweep_dir), on=[*CURVE, "round"], how="left")
        summary = summary.merge(baseline_overlap(rows, sweep_dir), on=[*CURVE, "round"], how="left")
    curves = thresholds(summary, delta)
    if not is_strong_search(rows):  # kinds without a dense baseline have no threshold to be unsure of
        curves = curves.merge(threshold_uncertainty(rows, delta, select_on), on=CURVE, how="left")
    if "jaccard_mean" in summary:  # the overlap of the winning tickets themselves
        there = [
            "jaccard_mean",
            "jaccard_chance",
            "group_jaccard_mean",
            "jaccard_vs_structured",
            "group_jaccard_vs_structured",
        ]
        at = summary[summary["winning"]][[*CURVE, *there]]
        at = at.rename(columns={c: f"threshold_{c}" for c in there})
        curves = curves.merge(at, on=CURVE, how="left")
    return Analysis(summary, curves, delta)


def write(analysis: Analysis, out_dir: Path) -> Path:
    path = Path(out_dir) / ANALYSIS_FILE
    with atomic.writing(path) as tmp:
        analysis.table().to_parquet(tmp, index=False)
    return path


def render_curves(curves: pd.DataFrame, fmt: str = "table") -> str:
    """The per-curve table: dense accuracy, winning-ticket threshold, peak, overlap at the threshold."""
    from orchestrator.results import NO_ROWS, curve_label, varying

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


# -- MLflow ----------------------------------------------------------------------------------------
def _metric_key(*parts) -> str:
    """MLflow keys take letters, digits, ``_ - . / `` and spaces."""
    return "/".join("".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in str(p)) for p in parts)


def mlflow_metrics(analysis: Analysis) -> list[tuple[str, float, int]]:
    """(key, value, step) per curve: its threshold, peak and per-round overlap (step = round)."""
    from orchestrator.results import curve_label, varying

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


def publish(
    rows: pd.DataFrame,
    sweep_dir: SweepDir,
    experiment: str,
    tracking_uri: str | None,
    delta: float = 0.005,
    select_on: str = "val",
    out_dir: Path | None = None,
) -> Analysis:
    """Analyze, write ``analysis.parquet`` and log it to MLflow (metrics, the file, and the
    per-curve table as an MLflow table); a missing store only warns. ``sweep_dir`` holds the
    tickets; ``out_dir`` is where analysis.parquet goes (default the sweep directory, which must
    then be local; the CLI passes ./glth-outputs/<sweep_id> for a sweep on an object store)."""
    from orchestrator.sinks import mlflow as mlflow_sink

    sweep_id = sweep_dir.sweep_id
    analysis = analyze(rows, sweep_dir, delta, select_on)
    path = write(analysis, out_dir if out_dir is not None else Path(sweep_dir.store.root))
    if tracking_uri:
        try:
            if log_to_mlflow(analysis, sweep_id, experiment, tracking_uri, [path]) is None:
                print(
                    f"[glth] analysis: no MLflow parent run for {sweep_id} at {tracking_uri}; written to {path} only",
                    file=sys.stderr,
                )
            else:
                mlflow_sink.log_analysis_table(tracking_uri, experiment, sweep_id, analysis.curves)
        except mlflow_sink.MlflowUnavailable as e:
            print(f"[glth] analysis: MLflow unavailable ({e}); written to {path} only", file=sys.stderr)
    return analysis


def experiment_of(sweep_dir: SweepDir) -> str:
    """The MLflow experiment a sweep logs to (its spec.yaml's ``experiment``, default glth)."""
    import yaml

    try:
        raw = yaml.safe_load(sweep_dir.spec_text()) or {}
    except (OSError, yaml.YAMLError):
        return "glth"
    profile = (raw.get("profiles") or {}).get(raw.get("profile")) or {}
    return str(profile.get("experiment", raw.get("experiment", "glth")))
