"""The end of a ``glth run``: which trials failed (judged by the rows on disk), MLflow backfilled
from the rows exactly once, and the finished trials' row files compacted. ``run_sweep`` runs it on
a thread while the local Ray stops; ``glth sync`` uses ``sync_mlflow`` alone."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet, parquet_compact
from orchestrator.spec import Sweep


def finish_run(sweep: Sweep, sweep_dir: SweepDir, tracking_uri: str, compact_from: int) -> list[str]:
    """The end of a run: the failed trials, MLflow backfilled from the rows, finished trials'
    files compacted (where the setting asks)."""
    # judged by what is on disk, not by Tune's result grid: a trial failed unless all its rows
    # are there and ok (a diverged loss leaves a failed row; a trial out of retries, missing rows)
    try:  # read once for the judgement and the backfill (a damaged file: each reads as before)
        rows = parquet.read_rounds(sweep_dir)
    except parquet.DamagedRows:
        rows = None
    complete = parquet.completed_trials(sweep_dir, df=rows)
    failed = sorted(t.trial_id for t in sweep.trials if t.trial_id not in complete)
    sync_mlflow(sweep, sweep_dir, tracking_uri, rows)
    del rows
    if compact_from and len(sweep.trials) >= compact_from:  # after MLflow got each trial's own file
        parquet_compact.compact_finished(sweep_dir, complete)
    return failed


def sync_mlflow(sweep: Sweep, sweep_dir: SweepDir, tracking_uri: str, df=None) -> dict | None:
    """Backfill MLflow from the Parquet rows (``df``: already read, else read here) exactly once; a
    down server only postpones it."""
    from orchestrator.sinks import mlflow as mlflow_sink

    if df is None:
        df = parquet.read_rounds(sweep_dir)
    if df.empty:
        return None
    files = parquet.trial_files(sweep_dir)
    artifacts = {tid: {"rounds.parquet": str(p)} for tid, p in files.items() if isinstance(p, Path)}
    try:
        return mlflow_sink.sync_sweep(
            tracking_uri,
            sweep.spec.experiment,
            sweep.sweep_id,
            sweep.text,
            df,
            artifacts,
            metas=[t.meta(sweep.sweep_id) for t in sweep.trials],
        )
    except mlflow_sink.MlflowUnavailable as e:
        print(f"[glth] MLflow still unavailable ({e}); run `glth sync {sweep.sweep_id}` later", file=sys.stderr)
        return None
