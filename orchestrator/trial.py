"""The Tune trainable: one trial runs one trajectory, resuming from its last checkpoint.

Every round ends with one ``tune.report`` carrying the round's row, the rows so far and a
``tune.Checkpoint`` of the trajectory state, so a crashed trial resumes from its last round.
MLflow metrics are logged from here at step = round; that logging is idempotent, and a
tracking server that is down only defers it (the driver backfills from the Parquet rows).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from glth_core.imp import Ticket, Trajectory, TrajectoryState, canonical_json
from glth_core.strong.construct_run import ConstructRun, ConstructState
from glth_core.strong.edge_popup import StrongSearch, StrongState
from glth_core.train import DivergedError
from orchestrator.spec import Trial
from orchestrator.sinks import mlflow as mlflow_sink

STATE_FILE = "trajectory.pt"
FAILED_FILE = "failed.json"  # a batched trial's diverged seeds: their rows, by trial id
TICKETS_FILE = "tickets.pt"  # every finished round's mask and trained weights (for export, overlap, figures)
#: trial kind → (runner, its state class); every runner has done, run_round(), state, ticket
RUNNERS = {"imp": (Trajectory, TrajectoryState), "strong": (StrongSearch, StrongState),
           "construct": (ConstructRun, ConstructState)}


def trial_row_meta(trial: Trial, sweep_id: str) -> dict:
    """Columns shared by every row of a trial."""
    t = trial.trajectory
    spec = t.dictionary_spec
    desc = {"dictionary": trial.dictionary_label, "dictionary_kind": spec["kind"]}
    desc["basis"] = str(getattr(t, "distribution", None) or spec.get("basis") or spec.get("method") or spec.get("block") or "")
    rewind = getattr(t, "rewind", "none")
    return {
        "kind": trial.kind,
        "sweep_id": sweep_id,
        "trial_id": trial.trial_id,
        "seed": t.seed,
        "dataset": t.dataset,
        "model": t.model,
        **desc,
        "tau": getattr(t, "tau", None),
        "rewind": json.dumps(rewind) if isinstance(rewind, dict) else rewind,
        "control": trial.control,
        # the flat trajectory config: MLflow params (``params.tau``) and the Parquet config column
        "config": canonical_json({**t.to_dict(), "seeds": t.seeds(), "trial_id": trial.trial_id}),
    }


def with_data_dir_from(config, cwd: str | None):
    """``config`` with a relative data_dir made absolute against ``cwd`` (the driver's working
    directory); the trial id still hashes the data_dir as the spec wrote it."""
    d = config.data_dir
    if not d or not cwd or os.path.isabs(os.path.expanduser(d)):
        return config
    return dataclasses.replace(config, data_dir=os.path.join(cwd, d))


def member_file(name: str, trial_id: str | None) -> str:
    """A batched trial keeps each seed's state and tickets as ``trajectory-<trial_id>.pt``."""
    if trial_id is None:
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}-{trial_id}{ext}"


def load_tickets(directory, trial_id: str | None = None) -> dict[int, Ticket]:
    path = Path(directory) / member_file(TICKETS_FILE, trial_id)
    if not path.exists():
        return {}
    return {int(r): Ticket.from_dict(t) for r, t in torch.load(path, weights_only=True).items()}


def _restore(state_cls) -> tuple[object | None, dict[int, Ticket]]:
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None, {}
    with ckpt.as_directory() as d:
        return state_cls.load(Path(d) / STATE_FILE), load_tickets(d)


class _MlflowChild:
    """The trial's child run; any unavailability just switches logging off for this attempt."""

    def __init__(self, sweep: dict, trial: Trial, meta: dict):
        self.client, self.run_id, self.logged = None, None, set()
        if not sweep.get("parent_run_id"):
            return
        try:
            self.client = mlflow_sink.client(sweep["tracking_uri"])
            self.run_id = mlflow_sink.get_or_create_child(
                self.client, sweep["experiment_id"], sweep["parent_run_id"], trial.trial_id,
                params=json.loads(meta["config"]), run_name=trial.run_name,
            )
        except mlflow_sink.MlflowUnavailable:
            self.client = None

    def log(self, rows: list[dict]) -> None:
        if self.client is None:
            return
        try:
            self.logged = mlflow_sink.log_rounds(self.client, self.run_id, rows, known_logged_rounds=self.logged or None)
        except mlflow_sink.MlflowUnavailable:
            self.client = None


def _save_round(directory: str, runner_state, tickets: dict[int, Ticket], trial_id: str | None = None) -> None:
    runner_state.save(os.path.join(directory, member_file(STATE_FILE, trial_id)))
    torch.save({r: t.to_dict() for r, t in tickets.items()}, os.path.join(directory, member_file(TICKETS_FILE, trial_id)))


def _load_failed(directory) -> dict[str, list[dict]]:
    path = Path(directory) / FAILED_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def run_batch(config: dict, live: dict | None = None) -> None:
    """``batch_seeds: K``: K seeds of one configuration trained at once (glth_core.batched), still
    written as K trials: K Parquet files, K MLflow children, K states in each checkpoint.

    A seed whose loss diverges fails alone, as a separate trial would: its failed row is kept
    (and checkpointed in ``failed.json``), and the other seeds go on as a batch of K - 1 from the
    start of the round, which they had not finished: their results are those of separate runs."""
    from glth_core.batched import BatchedTrajectory

    live = live or {}
    sweep = {**config["sweep"], **live.get("mlflow", {})}
    torch.set_num_threads(max(1, int(sweep.get("threads", 1))))
    trials = [Trial.from_dict(d) for d in config["trial"]["batch"]]
    ids = [t.trial_id for t in trials]
    if set(ids) <= set(live.get("completed", ())):
        return
    metas = [trial_row_meta(t, sweep["sweep_id"]) for t in trials]
    node_id = ray.get_runtime_context().get_node_id()
    states, tickets, failed = [None] * len(trials), [{} for _ in trials], {}
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            failed = _load_failed(d)
            states = [None if tid in failed else TrajectoryState.load(Path(d) / member_file(STATE_FILE, tid)) for tid in ids]
            tickets = [{} if tid in failed else load_tickets(d, tid) for tid in ids]
    active = [k for k, tid in enumerate(ids) if tid not in failed]
    resumed_from = -1 if not active or states[active[0]] is None else states[active[0]].round
    configs = [with_data_dir_from(t.trajectory, live.get("cwd")) for t in trials]
    children = [_MlflowChild(sweep, t, m) for t, m in zip(trials, metas)]

    def rebatch(states_of: dict[int, TrajectoryState | None]) -> BatchedTrajectory:
        return BatchedTrajectory([configs[k] for k in active], states=[states_of[k] for k in active])

    batch = rebatch(dict(enumerate(states))) if active else None
    rows = [failed.get(tid, []) for tid in ids]
    for j, k in enumerate(active):
        rows[k] = [{**metas[k], **r, "status": "ok"} for r in batch.states[j].records]
    while active and not batch.done:
        try:
            records = batch.run_round()
        except DivergedError as e:
            culprits = list(active) if e.index is None else [active[e.index]]
            for k in culprits:
                rows[k].append({**metas[k], "round": batch.states[0].round, "status": f"failed: {e}"})
                children[k].log(rows[k])
                failed[ids[k]] = rows[k]
            unfinished = dict(zip(active, batch.states))
            active = [k for k in active if k not in culprits]
            if active:
                batch = rebatch(unfinished)
                continue
            tune.report({"round": batch.states[0].round, "rows": sum(rows, []), "trial_id": config["trial"]["trial_id"],
                         "failed": str(e)})
            return
        for j, k in enumerate(active):
            rows[k].append({**metas[k], **records[j], "status": "ok"})
            tickets[k][batch.tickets[j].round] = batch.tickets[j]
            children[k].log(rows[k])
        with tempfile.TemporaryDirectory() as d:
            for j, k in enumerate(active):
                _save_round(d, batch.states[j], tickets[k], ids[k])
            (Path(d) / FAILED_FILE).write_text(json.dumps(failed))  # d is private until reported
            metrics = {k: v for k, v in records[0].items() if isinstance(v, (int, float)) and v is not None}
            tune.report({**metrics, "rows": sum(rows, []), "trial_id": config["trial"]["trial_id"],
                         "resumed_from": resumed_from, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(d))


def run_trial(config: dict, live: dict | None = None) -> None:
    """Tune function trainable. ``config = {"trial": Trial.to_dict(), "sweep": {...}}``.

    ``live`` comes from the driver running now (``tune.with_parameters``), which matters when it
    restored an interrupted experiment: ``completed`` trials already have all their rows on disk
    and end at once, and ``mlflow`` (this run's parent run) replaces the one saved in the config.
    """
    if "batch" in config["trial"]:
        return run_batch(config, live)
    live = live or {}
    sweep = {**config["sweep"], **live.get("mlflow", {})}
    torch.set_num_threads(max(1, int(sweep.get("threads", 1))))
    trial = Trial.from_dict(config["trial"])
    if trial.trial_id in live.get("completed", ()):
        return
    meta = trial_row_meta(trial, sweep["sweep_id"])
    node_id = ray.get_runtime_context().get_node_id()
    runner_cls, state_cls = RUNNERS[trial.kind]
    state, tickets = _restore(state_cls)
    resumed_from = -1 if state is None else state.round
    traj = runner_cls(with_data_dir_from(trial.trajectory, live.get("cwd")), state=state)
    mlflow_child = _MlflowChild(sweep, trial, meta)
    rows = [{**meta, **r, "status": "ok"} for r in traj.state.records]
    mlflow_child.log(rows)

    while not traj.done:
        try:
            record = traj.run_round()
        except DivergedError as e:
            # deterministic: retrying would diverge again, so record it and end the trial
            rows.append({**meta, "round": traj.state.round, "status": f"failed: {e}"})
            mlflow_child.log(rows)
            tune.report({"round": traj.state.round, "rows": rows, "trial_id": trial.trial_id, "failed": str(e)})
            return
        rows.append({**meta, **record, "status": "ok"})
        if traj.ticket is not None:
            tickets[traj.ticket.round] = traj.ticket
        mlflow_child.log(rows)
        with tempfile.TemporaryDirectory() as d:
            _save_round(d, traj.state, tickets)
            metrics = {k: v for k, v in record.items() if isinstance(v, (int, float)) and v is not None}
            tune.report({**metrics, "rows": rows, "trial_id": trial.trial_id, "resumed_from": resumed_from,
                         "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(d))
