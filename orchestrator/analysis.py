"""Per-sweep analysis: winning-ticket thresholds, peaks, and how much the tickets of different
seeds agree (mask overlap), written to ``DIR/<sweep_id>/analysis.parquet`` and the sweep's
MLflow parent run.

* threshold and peak per curve come from ``results.summarize`` / ``results.thresholds``;
* mask overlap across seeds from ``seed_overlap``, and with the ``structured`` control's tickets
  from ``baseline_overlap``;
* the per-curve table and the MLflow metrics from ``analysis_report``.

``analysis.parquet`` holds one row per curve × round: the per-round summary, the overlap columns,
and the curve's threshold / peak columns repeated on each of its rows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator import atomic, defaults
from orchestrator.analysis_report import log_to_mlflow
from orchestrator.axes import with_axes
from orchestrator.baseline_overlap import baseline_overlap
from orchestrator.kind_results import measures_threshold
from orchestrator.layout import SweepDir
from orchestrator.results import CURVE, summarize, thresholds
from orchestrator.seed_overlap import overlap

ANALYSIS_FILE = "analysis.parquet"


@dataclass
class Analysis:
    rounds: pd.DataFrame  # curve × round: summary + overlap
    curves: pd.DataFrame  # curve: threshold, peak, overlap at the threshold
    delta: float

    def table(self) -> pd.DataFrame:
        """What ``analysis.parquet`` holds: the rounds with their curve's columns joined on."""
        curve_cols = [c for c in self.curves.columns if c not in self.rounds.columns or c in CURVE]
        return self.rounds.merge(self.curves[curve_cols], on=CURVE, how="left").assign(delta=self.delta)


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
        summary = summary.merge(overlap(rows, sweep_dir), on=[*CURVE, "round"], how="left")
        summary = summary.merge(baseline_overlap(rows, sweep_dir), on=[*CURVE, "round"], how="left")
    curves = thresholds(summary, delta)
    if measures_threshold(rows):  # kinds without a dense baseline have no threshold to be unsure of
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
    sweep_id = sweep_dir.sweep_id
    analysis = analyze(rows, sweep_dir, delta, select_on)
    path = write(analysis, out_dir if out_dir is not None else Path(sweep_dir.store.root))
    no_parent = f"[glth] analysis: no MLflow parent run for {sweep_id} at {tracking_uri}; written to {path} only"
    if tracking_uri and defaults.store_missing(tracking_uri):  # no store, no parent run: MLflow not even imported
        print(no_parent, file=sys.stderr)
    elif tracking_uri:
        from orchestrator.sinks import mlflow as mlflow_sink

        try:
            if log_to_mlflow(analysis, sweep_id, experiment, tracking_uri, [path]) is None:
                print(no_parent, file=sys.stderr)
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
