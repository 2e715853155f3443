"""Tuner build / run / restore for one sweep, on an embedded local Ray or a cluster.

The driver owns the sweep's directory ``OUT/<sweep_id>/``: ``spec.yaml``, Parquet rows under
``rounds/`` (written by a Tune callback from each round's report), Tune's own state under
``tune/``. Finished trials are never recomputed: neither after ``--resume`` (Tune restores
its experiment) nor when an overlapping spec meets a trial whose content hash already has
complete rows (dedupe), unless ``force``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ray import tune
from ray.tune import Callback

from orchestrator import atomic
from orchestrator.progress import Progress
from orchestrator.sinks import mlflow as mlflow_sink
from orchestrator.sinks import parquet
from orchestrator.spec import Sweep
from orchestrator.trial import run_trial

TUNE_NAME = "trials"
#: Tune's own console output is replaced by orchestrator.progress; checkpoints every round
#: make its snapshot-frequency warning noise.
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
              "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` or an absolute sqlite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: the local Ray's token, random, one per process
_LOCAL_TOKEN = secrets.token_urlsafe(32)


@contextlib.contextmanager
def _local_auth():
    """Token authentication for the local Ray, unless RAY_AUTH_MODE says otherwise.

    Ray 2.60 binds its GCS, raylet and worker servers to every interface whatever the node IP
    (and advertises the machine's address), so a local Ray without auth lets anyone who can reach
    this machine run code in it. Left to itself, a new local Ray enables token auth too, but saves
    a token to ~/.ray/auth_token; this one lives only in the environment of this process and of the
    Ray processes it starts, and both variables are put back as they were afterwards.
    """
    if "RAY_AUTH_MODE" in os.environ:
        yield
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    def refresh():  # as Ray's own _enable_token_auth: this process re-reads its config and token
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    added = {"RAY_AUTH_MODE": "token"}
    if "RAY_AUTH_TOKEN" not in os.environ:
        added["RAY_AUTH_TOKEN"] = _LOCAL_TOKEN
    os.environ.update(added)
    refresh()
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
        refresh()


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None):
    """Attach to ``address``/RAY_ADDRESS, or start (and later stop) a local Ray on 127.0.0.1."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    with contextlib.ExitStack() as stack:
        if started:
            if address:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
            else:
                stack.enter_context(_local_auth())
                ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus or os.cpu_count(),
                         include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        try:
            yield
        finally:
            if started:
                ray.shutdown()


@dataclass
class SweepResult:
    sweep_id: str
    out_dir: Path
    parent_run_id: str | None
    computed: int
    reused: int
    failed: list[str]


class ParquetWriter(Callback):
    """Tune callback: each round's report rewrites that trial's Parquet file (atomically)."""

    def __init__(self, out_dir: Path, sweep_id: str):
        self.out_dir, self.sweep_id = out_dir, sweep_id

    def on_trial_result(self, iteration, trials, trial, result, **info):
        by_trial: dict[str, list] = {}
        for row in result.get("rows") or []:  # a batched trial reports the rows of K trials
            by_trial.setdefault(row["trial_id"], []).append(row)
        for trial_id, rows in by_trial.items():
            parquet.write_trial(self.out_dir, self.sweep_id, trial_id, rows[0]["dictionary"], rows)


def _reuse_completed(sweep: Sweep, out_dir: Path, force: bool) -> set[str]:
    """Trial ids with complete rows here or in another sweep under ``out_dir`` (copied in)."""
    if force:
        return set()
    rounds = sweep.rounds
    done = parquet.completed_trials(out_dir, sweep.sweep_id, rounds)
    wanted = {t.trial_id: t for t in sweep.trials}
    for other in sorted(p for p in out_dir.iterdir() if p.is_dir() and p.name != sweep.sweep_id):
        for tid in parquet.completed_trials(out_dir, other.name, rounds) & (wanted.keys() - done):
            df = parquet.read_rounds(out_dir, other.name)
            rows = df[df.trial_id == tid].assign(sweep_id=sweep.sweep_id).to_dict("records")
            parquet.write_trial(out_dir, sweep.sweep_id, tid, rows[0]["dictionary"], rows)
            done.add(tid)
    return done & wanted.keys()


def _start_mlflow(sweep: Sweep, tracking_uri: str) -> dict:
    info = {"tracking_uri": tracking_uri, "experiment": sweep.spec.experiment, "experiment_id": None, "parent_run_id": None}
    try:
        client = mlflow_sink.client(tracking_uri)
        info["experiment_id"] = mlflow_sink.ensure_experiment(client, sweep.spec.experiment)
        info["parent_run_id"] = mlflow_sink.get_or_create_parent(
            client, info["experiment_id"], sweep.sweep_id, sweep.text, tags={"glth.git_commit": git_commit()}
        )
    except mlflow_sink.MlflowUnavailable as e:
        print(f"[glth] MLflow at {tracking_uri} unavailable ({e}); rows go to Parquet, `glth sync` backfills later",
              file=sys.stderr)
    return info


def run_sweep(
    sweep: Sweep,
    out_dir: str | Path = "glth-runs",
    tracking_uri: str | None = None,
    address: str | None = None,
    force: bool = False,
    num_cpus: int | None = None,
) -> SweepResult:

    out_dir = Path(out_dir).expanduser().resolve()
    sweep_dir = out_dir / sweep.sweep_id
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(sweep_dir / "spec.yaml", sweep.text)
    tracking_uri = tracking_uri or default_tracking_uri()

    done = _reuse_completed(sweep, out_dir, force)
    pending = [t for t in sweep.trials if t.trial_id not in done]
    mlflow_info = _start_mlflow(sweep, tracking_uri)
    progress = Progress(total_trials=len(sweep.trials), rounds=sweep.rounds, already_done=len(done), complete=done)
    print(f"[glth] sweep {sweep.sweep_id}: {len(sweep.trials)} trials ({len(done)} already complete), "
          f"{sweep.rounds} rounds each → {sweep_dir}", file=sys.stderr)

    failed: list[str] = []
    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)
    if pending:
        res = sweep.spec.resources
        sweep_cfg = {"sweep_id": sweep.sweep_id, "threads": max(1, int(res.cpu)), **mlflow_info}
        storage = str(sweep_dir / "tune")
        callbacks = [ParquetWriter(out_dir, sweep.sweep_id), progress]
        # What this run knows and a restored experiment's saved trial configs may not: trials whose
        # rows are already complete on disk (Tune's snapshot can lag them by a round) and this run's
        # MLflow parent (the last run may have had none, or another tracking URI).
        # and the driver's working directory: Tune runs each trial in its own directory, so a
        # relative dataset.data_dir (kept relative in the trial id) is resolved against this one
        live = {"completed": sorted(done), "mlflow": mlflow_info, "cwd": os.getcwd()}
        with ray_session(address, num_cpus):
            # inside the session: with_parameters puts ``live`` in this Ray's object store
            trainable = tune.with_resources(tune.with_parameters(run_trial, live=live), {"cpu": res.cpu, "gpu": res.gpu})
            restore_path = os.path.join(storage, TUNE_NAME)
            if not force and tune.Tuner.can_restore(restore_path):
                print(f"[glth] resuming {restore_path}", file=sys.stderr)
                tuner = tune.Tuner.restore(restore_path, trainable, resume_unfinished=True, resume_errored=True)
                # the restored RunConfig holds the callbacks pickled by the first run: its Progress
                # counts and its output directory; this run's own replace them
                tuner._local_tuner.get_run_config().callbacks = callbacks
            else:
                if force and os.path.exists(restore_path):
                    shutil.rmtree(restore_path)
                tuner = tune.Tuner(
                    trainable,
                    param_space={"trial": tune.grid_search(grid_entries(pending, sweep.spec.batch_seeds)),
                                 "sweep": sweep_cfg},
                    # reused actors: a trial's worker (torch, data, glth imported) serves the next
                    # trial with the same resources; each trial still sets its threads and seeds
                    tune_config=tune.TuneConfig(max_concurrent_trials=sweep.spec.max_concurrent, reuse_actors=True,
                                                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
                    run_config=tune.RunConfig(
                        name=TUNE_NAME, storage_path=storage, verbose=0, callbacks=callbacks,
                        failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
                        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    ),
                )
            tuner.fit()
    # judged by what is on disk, not by Tune's result grid: a trial failed unless all its rows
    # are there and ok (a diverged loss leaves a failed row; a trial out of retries, missing rows)
    complete = parquet.completed_trials(out_dir, sweep.sweep_id, sweep.rounds)
    failed = sorted(t.trial_id for t in sweep.trials if t.trial_id not in complete)

    sync_mlflow(sweep, out_dir, tracking_uri)
    return SweepResult(sweep.sweep_id, sweep_dir, mlflow_info["parent_run_id"], len(pending), len(done), failed)


def grid_entries(trials: list, batch_seeds: int) -> list[dict]:
    """One Tune trial per trial, or per chunk of ``batch_seeds`` seeds of one configuration."""
    if batch_seeds <= 1:
        return [t.to_dict() for t in trials]
    groups: dict[str, list] = {}
    for t in trials:  # same config but the seed → one group
        key = dataclasses.replace(t.trajectory, seed=0).content_hash()
        groups.setdefault(key, []).append(t)
    entries = []
    for members in groups.values():
        for i in range(0, len(members), batch_seeds):
            chunk = members[i : i + batch_seeds]
            ids = [t.trial_id for t in chunk]
            batch_id = "batch-" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:8]
            entries.append({"kind": "imp", "trial_id": batch_id, "batch": [t.to_dict() for t in chunk]})
    return entries


def _trial_name(trial) -> str:
    t = trial.config["trial"]
    return f"{t['trial_id']}"


def sync_mlflow(sweep: Sweep, out_dir: Path, tracking_uri: str) -> dict | None:
    """Backfill MLflow from the Parquet rows exactly once; a down server only postpones it."""
    df = parquet.read_rounds(out_dir, sweep.sweep_id)
    if df.empty:
        return None
    artifacts = {tid: {"rounds.parquet": str(p)} for tid, p in parquet.trial_files(out_dir, sweep.sweep_id).items()}
    try:
        return mlflow_sink.sync_sweep(tracking_uri, sweep.spec.experiment, sweep.sweep_id, sweep.text, df, artifacts)
    except mlflow_sink.MlflowUnavailable as e:
        print(f"[glth] MLflow still unavailable ({e}); run `glth sync {sweep.sweep_id}` later", file=sys.stderr)
        return None
