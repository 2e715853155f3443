"""The one Tune trainable: restore → run a seed batch of runners → report each round's new rows.

A Tune trial runs a *seed batch*: one trial (a batch of one) or ``batch_seeds: K`` seeds of one
configuration trained at once (``glth_core.batched``), still written as K trials. After every
round the worker writes each member's ticket and the batch's resume state to the sweep directory
(``orchestrator.layout``: atomic on every backend), then reports only that round's rows; the
driver's callbacks write Parquet and MLflow. A restarted trial (a crash, a lost node, a new
driver) resumes from that state and first re-reports the rows the state holds, so a row is never
lost between the state write and the report (rows are keyed by trial and round: a repeat is the
same row).

A member whose loss diverges fails alone, as a separate trial would: its failed row is kept in the
state, and the other members go on as a batch of K − 1 from the start of the round, which they
had not finished: their results are those of separate runs.
"""

from __future__ import annotations

import dataclasses
import os

import ray
import torch
from ray import tune

from glth_core.train import DivergedError
from orchestrator import shared_data
from orchestrator.layout import MARKER, BatchState, SweepDir, UnreadableState
from orchestrator.tune_trial import TrialCarry


def with_data_dir_from(config, cwd: str | None):
    """``config`` with a relative data_dir made absolute against ``cwd`` (the driver's working
    directory); the trial id still hashes the data_dir as the spec wrote it."""
    d = config.data_dir
    if not d or not cwd or os.path.isabs(os.path.expanduser(d)):
        return config
    return dataclasses.replace(config, data_dir=os.path.join(cwd, d))


def resolve_device(config):
    """``device: auto`` → cuda where this worker has a GPU, else cpu; Ray's CUDA_VISIBLE_DEVICES
    already limits the process to the GPU(s) assigned to the trial."""
    if getattr(config, "device", "cpu") != "auto":
        return config
    return dataclasses.replace(config, device="cuda" if torch.cuda.is_available() else "cpu")


def _numbers(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_tune_trial(config: dict, live: dict | None = None, sweep_dir: SweepDir | None = None, datasets=None) -> None:
    """Tune function trainable. ``config = {"trial": TrialCarry.to_dict(), "sweep": {"sweep_id",
    "threads"}}``; ``sweep_dir``: the driver's ``SweepDir`` (``tune.with_parameters``), where the
    tickets and the resume state go; ``datasets``: the sweep's ``shared_data`` hub (None: each
    trial reads its own dataset).

    ``live`` comes from the driver running now (``tune.with_parameters``): ``completed`` trials
    already have all their rows and end at once; ``cwd`` resolves relative data directories.
    """
    live = live or {}
    sweep = config["sweep"]
    torch.set_num_threads(max(1, int(sweep.get("threads", 1))))
    carry = TrialCarry.from_dict(config["trial"])
    batch_id, members = carry.trial_id, carry.members
    ids = [t.trial_id for t in members]
    if set(ids) <= set(live.get("completed", ())):
        return
    if not sweep_dir.store.exists(MARKER):  # a node that does not share the driver's storage
        raise RuntimeError(
            f"storage {sweep_dir.uri}: node {ray.util.get_node_ip_address()} does not see the sweep "
            f"directory the driver made; use a filesystem every node mounts, or s3://"
        )
    experiment = members[0].experiment
    metas = [t.meta(sweep["sweep_id"]) for t in members]
    configs = [resolve_device(with_data_dir_from(t.config, live.get("cwd"))) for t in members]
    notice = None  # told once, with the first report: a damaged resume state is not resumed from
    try:
        saved = sweep_dir.load_batch_state(batch_id, experiment.state_cls)
    except UnreadableState as e:
        saved, notice = BatchState(), f"{e}; trial {batch_id} restarts from round 0"
    failed = dict(saved.failed)
    active = [k for k, tid in enumerate(ids) if tid not in failed]
    states = [saved.states.get(ids[k]) for k in active]
    resumed_from = states[0].round if states and states[0] is not None else -1
    # what the saved state already holds, reported again in case the driver never got it
    pending = [row for rows in failed.values() for row in rows]
    pending += [{**metas[k], **r, "status": "ok"} for k, s in zip(active, states) if s is not None for r in s.records]
    node_id = ray.get_runtime_context().get_node_id()
    batched = len(members) > 1
    data = shared_data.dataset_for(configs[active[0]], datasets) if active else None  # one for the batch
    batch = experiment.batch_runner([configs[k] for k in active], states, batched, data) if active else None
    sampler = None
    if sweep.get("system_metrics") and batch is not None:  # MLflow's monitors, imported only when asked
        from orchestrator.sinks.mlflow.system import SystemSampler

        sampler = SystemSampler().start()

    def report(metrics: dict) -> None:
        nonlocal notice
        if sampler is not None:
            metrics["system_metrics"] = sampler.take()
        if notice:
            metrics["notice"], notice = notice, None
        tune.report({**metrics, "trial_id": batch_id, "resumed_from": resumed_from, "node_id": node_id})

    try:
        while active and not batch.done:
            round_index = batch.states[0].round
            try:
                records = batch.run_round()
            except DivergedError as e:
                # deterministic: retrying would diverge again, so record it and go on without it
                culprits = list(active) if e.index is None else [active[e.index]]
                unfinished = dict(zip(active, batch.states))  # a failed round leaves every state as it was
                for k in culprits:
                    failed[ids[k]] = [{**metas[k], "round": round_index, "status": f"failed: {e}"}]
                    pending += failed[ids[k]]
                active = [k for k in active if k not in culprits]
                sweep_dir.save_batch_state(batch_id, BatchState({ids[k]: unfinished[k] for k in active}, failed))
                if not active:
                    report({"round": round_index, "new_rows": pending, "failed": str(e)})
                    return
                batch = experiment.batch_runner(
                    [configs[k] for k in active], [unfinished[k] for k in active], batched, data
                )
                continue
            for j, k in enumerate(active):
                pending.append({**metas[k], **records[j], "status": "ok"})
                if batch.tickets[j] is not None:
                    sweep_dir.save_ticket(ids[k], batch.tickets[j])
            sweep_dir.save_batch_state(batch_id, BatchState({ids[k]: s for k, s in zip(active, batch.states)}, failed))
            report({**_numbers(records[0]), "new_rows": pending})
            pending = []
        if pending:  # a restored trial that had already finished: its rows, once more
            report({"new_rows": pending})
    finally:
        if sampler is not None:
            sampler.stop()
