"""Run one sweep: its trials as Ray Tune trials, on an embedded local Ray or a cluster.

The driver owns the sweep directory (``orchestrator.layout``) on the sweep's storage: it writes
``sweep.json`` and ``spec.yaml``, and its callbacks write the Parquet rows (and MLflow) from each
round's report; workers write tickets and resume state there. Finished trials are never
recomputed: neither when the same spec runs again (their rows are complete: the trial ends at
once; an unfinished one resumes from its state) nor when an overlapping spec meets a trial whose
content hash already has complete rows in another sweep on the same storage (dedupe: its rows
and tickets are copied), unless ``force``. Every run starts a fresh Tuner: Tune's own state is
bookkeeping, never what a resume depends on.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from orchestrator import lease, shared_data
from orchestrator.background import Background
from orchestrator.defaults import absolute_uri, default_tracking_uri  # noqa: F401  (re-exported for callers)
from orchestrator.deferred_callback import Deferred
from orchestrator.layout import TUNE, SweepDir
from orchestrator.notices import Notices
from orchestrator.progress import Progress
from orchestrator.ray_local import ray_session
from orchestrator.sinks import parquet, parquet_compact, parquet_writer
from orchestrator.sinks.parquet_writer import ParquetWriter
from orchestrator.sinks.trim import TrimResult
from orchestrator.spec import Sweep
from orchestrator.sweep_end import finish_run
from orchestrator.trainable import run_tune_trial
from orchestrator.tune_feed import LiveFIFO, TrialFeed, grid_entries, trial_name

TUNE_NAME = "trials"
# Tune's result grid reads result.json files that glth never has Tune write (the rows are ours):
# its "Failed to fetch metrics" warning at the end of every sweep is noise
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
#: Tune's own console output is replaced by orchestrator.progress
QUIET_TUNE = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Tune's experiment state (every trial it holds, as JSON: O(N) a save, "auto" saves take up to
    # ~5 % of its loop) is bookkeeping nothing reads back (every run starts a fresh Tuner): saved
    # at the end of fit, not every few seconds of a long sweep
    "TUNE_GLOBAL_CHECKPOINT_S": "3600",
}


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class SweepResult:
    sweep_dir: SweepDir
    parent_run_id: str | None
    computed: int
    reused: int
    failed: list[str]
    experiment_id: str | None = None
    tracking_uri: str | None = None

    @property
    def sweep_id(self) -> str:
        return self.sweep_dir.sweep_id

    @property
    def out_dir(self) -> Path | str:
        """The sweep directory as a person names it: a local path, or a URI on an object store."""
        return self.sweep_dir.location

    @property
    def mlflow_url(self) -> str | None:
        """Where a browser shows the sweep's runs (MLflow 3 opens an experiment on its GenAI pages
        unless the URL asks for the runs view; glth's experiments are also tagged as model training)."""
        if self.experiment_id is None or not str(self.tracking_uri).startswith("http"):
            return None
        return f"{str(self.tracking_uri).rstrip('/')}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"


def sweep_dir_of(sweep: Sweep, storage=None) -> SweepDir:
    """The sweep's directory, resolved here once: ``storage`` a ``Storage``, a path or a URI (else
    the spec's ``storage:``, else ``$GLTH_STORAGE``, else ``./glth-runs``), or the ``SweepDir``."""
    if isinstance(storage, SweepDir):
        return storage
    return SweepDir.under(storage if storage is not None else sweep.spec.storage, sweep.sweep_id)


def _reuse_completed(sweep: Sweep, here: SweepDir, force: bool) -> set[str]:
    """Trial ids with complete rows here or in another sweep on the same storage (copied in)."""
    if force:
        return set()
    done = parquet.completed_trials(here)
    wanted = {t.trial_id: t for t in sweep.trials}
    for other in here.siblings():
        if not wanted.keys() - done:
            break
        for tid in parquet.completed_trials(other) & (wanted.keys() - done):
            df = parquet.read_rounds(other, skip_damaged=True)
            rows = df[df.trial_id == tid].assign(sweep_id=sweep.sweep_id).to_dict("records")
            here.copy_tickets(other, tid)
            parquet.write_trial(here, tid, rows[0]["dictionary"], rows)
            done.add(tid)
    return done & wanted.keys()


def _start_mlflow(sweep: Sweep, tracking_uri: str) -> dict:
    # MLflow (and its imports: 1.3 s, scipy among them) only here, on the set-up's thread while the
    # local Ray starts; the driver's main thread needs it only once that is done
    from orchestrator.sinks import mlflow as mlflow_sink

    info = {
        "tracking_uri": tracking_uri,
        "experiment": sweep.spec.experiment,
        "experiment_id": None,
        "parent_run_id": None,
    }
    try:
        client = mlflow_sink.client(tracking_uri)
        info["experiment_id"] = mlflow_sink.ensure_experiment(client, sweep.spec.experiment)
        info["parent_run_id"] = mlflow_sink.get_or_create_parent(
            client, info["experiment_id"], sweep.sweep_id, sweep.text, tags={"glth.git_commit": git_commit()}
        )
    except mlflow_sink.MlflowUnavailable as e:
        print(
            f"[glth] MLflow at {tracking_uri} unavailable ({e}); rows go to Parquet, `glth sync` backfills later",
            file=sys.stderr,
        )
    return info


def _mlflow_writer(sweep: Sweep, sweep_dir: SweepDir, info: dict, flush_s: float):
    """The driver's MLflow writer: child runs per trial, the curves on the parent, live (a trial's
    rounds held up to ``flush_s``, as the rows are)."""
    from orchestrator.sinks.mlflow.callback import MlflowWriter

    return MlflowWriter(
        info["tracking_uri"],
        info["experiment"],
        info["experiment_id"],
        info["parent_run_id"],
        sweep.sweep_id,
        metas=[t.meta(sweep.sweep_id) for t in sweep.trials],
        sweep_dir=sweep_dir,
        flush_s=flush_s,
    )


def run_sweep(
    sweep: Sweep,
    out_dir=None,
    tracking_uri: str | None = None,
    address: str | None = None,
    force: bool = False,
    num_cpus: int | None = None,
) -> SweepResult:
    """Run (or resume) ``sweep``; ``out_dir`` is its storage (a path, a URI, or a ``Storage``; see
    ``sweep_dir_of``), resolved here once into the ``SweepDir`` everything below is handed.
    Under the sweep's lease (``orchestrator.lease``: one driver per sweep; LeaseHeld if another
    driver runs it now)."""
    sweep_dir = sweep_dir_of(sweep, out_dir)
    with lease.hold(sweep_dir.store):
        return _run_leased(sweep, sweep_dir, tracking_uri, address, force, num_cpus)


def _run_leased(
    sweep: Sweep, sweep_dir: SweepDir, tracking_uri: str | None, address: str | None, force: bool, num_cpus: int | None
) -> SweepResult:
    tracking_uri = absolute_uri(tracking_uri or default_tracking_uri())
    compact_from = parquet_compact.min_trials()  # a bad setting is refused before any work
    rows_flush_s = parquet_writer.flush_seconds()  # the same (how long the driver holds a trial's rounds)
    share = shared_data.enabled()
    sweep_dir.create(sweep.text, tracking_uri)
    if force:
        sweep_dir.clear_states()
    for uri, cause in parquet.drop_damaged(sweep_dir).items():
        print(
            f"[glth] rows file {uri} unreadable ({cause}): removed; this run rebuilds it from its trial's resume state",
            file=sys.stderr,
        )

    done = _reuse_completed(sweep, sweep_dir, force)
    pending = [t for t in sweep.trials if t.trial_id not in done]
    mlflow_started = Background(_start_mlflow, sweep, tracking_uri)  # while the local Ray starts
    progress = Progress(total_trials=len(sweep.trials), rounds=sweep.rounds, already_done=len(done), complete=done)
    print(
        f"[glth] sweep {sweep.sweep_id}: {len(sweep.trials)} trials ({len(done)} already complete), "
        f"{sweep.rounds} rounds each → {sweep_dir.uri}",
        file=sys.stderr,
    )

    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)
    if pending:
        res = sweep.spec.resources
        sweep_cfg = {
            "sweep_id": sweep.sweep_id,
            "threads": max(1, int(res.cpu)),
            "system_metrics": bool(sweep.spec.system_metrics),
        }
        # what this run knows: trials whose rows are already complete, and the driver's working
        # directory (a relative dataset.data_dir, kept relative in the trial id, is resolved against it)
        live = {"completed": sorted(done), "cwd": os.getcwd()}
        entries = grid_entries(pending, sweep.spec.batch_seeds)
        saved = [e["trial_id"] for e in entries if sweep_dir.has_batch_state(e["trial_id"])]
        if saved:
            print(
                f"[glth] resuming {len(saved)} trial(s) from their saved state in {sweep_dir.uri}/state",
                file=sys.stderr,
            )
        storage_path, filesystem = sweep_dir.store.tune_storage(TUNE)
        sweep_dir.store.delete_dir(f"{TUNE}/{TUNE_NAME}")  # Tune's bookkeeping of an earlier run
        with ray_session(address, num_cpus), shared_data.session(share) as datasets:
            rows = ParquetWriter(sweep_dir, rows_flush_s)
            # built when a trial first needs it: the MLflow set-up may still run while the trials' workers start
            writer = Deferred(mlflow_started, lambda info: _mlflow_writer(sweep, sweep_dir, info, rows_flush_s))
            # what the MLflow curves import (scipy.stats, 0.5 s), while the trials run
            Background(importlib.import_module, "scipy.stats")
            # inside the session: with_parameters puts ``live``, the sweep directory and the datasets' hub
            # in this Ray's object store (a worker rebuilds the storage's filesystem with its own credentials)
            given = tune.with_parameters(run_tune_trial, live=live, sweep_dir=sweep_dir, datasets=datasets)
            trainable = tune.with_resources(given, {"cpu": res.cpu, "gpu": res.gpu})
            tuner = tune.Tuner(
                trainable,
                param_space={"sweep": sweep_cfg},  # with each trial's entry from the feed
                # reused actors: a trial's worker (torch, data, glth imported) serves the next
                # trial with the same resources; each trial still sets its threads and seeds
                tune_config=tune.TuneConfig(
                    search_alg=TrialFeed(entries),
                    num_samples=len(entries),
                    scheduler=LiveFIFO(),  # FIFO without a walk over every trial at each step
                    max_concurrent_trials=sweep.spec.max_concurrent,
                    reuse_actors=True,
                    trial_name_creator=trial_name,
                    trial_dirname_creator=trial_name,
                ),
                run_config=tune.RunConfig(
                    name=TUNE_NAME,
                    storage_path=storage_path,
                    storage_filesystem=filesystem,
                    verbose=0,
                    callbacks=[
                        rows,
                        writer,
                        progress,
                        Notices(),
                        TrimResult(),  # last: the others have read the rows it drops
                    ],
                    failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
                ),
            )
            try:
                tuner.fit()
            except BaseException:  # Ctrl-C leaves fit without Tune's cleanup: what the writers hold goes now
                try:
                    rows.flush()  # and is on disk before the run ends (a write that failed is raised)
                finally:
                    if writer.built is not None:
                        writer.built.flush()
                raise
            rows.flush()  # done by Tune's experiment end already: the run's end (MLflow, compaction) reads every row
            # only after a fit that was not interrupted; while ray.shutdown waits for Ray's processes
            finished = Background(finish_run, sweep, sweep_dir, tracking_uri, compact_from, nice=0)
    else:
        finished = Background(finish_run, sweep, sweep_dir, tracking_uri, compact_from, nice=0)
    failed = finished.result()
    mlflow_info = mlflow_started.result()
    return SweepResult(
        sweep_dir,
        mlflow_info["parent_run_id"],
        len(pending),
        len(done),
        failed,
        mlflow_info["experiment_id"],
        tracking_uri,
    )
