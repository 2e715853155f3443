"""End to end on a real local Ray: `glth run` → Parquet rows → MLflow runs → `glth results`."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from in_process import glth_here
from mlflow.tracking import MlflowClient

from orchestrator.layout import SweepDir, UnreadableState
from orchestrator.sinks import parquet

pytestmark = pytest.mark.slow

GLTH = str(Path(sys.executable).with_name("glth"))

SPEC = """
name: small
experiment: glth-test
dataset: digits
model: mlp_300_100
dictionary:
  - {kind: canonical}
  - {kind: bottleneck, layer: "1", basis: identity}
tau: 0.3
seeds: [0, 1]
rounds: ROUNDS
train: {epochs: EPOCHS, batch_size: 64, lr: 0.05}
resources: {cpu: 1}
max_concurrent: 2
"""


def write_spec(tmp: Path, rounds: int = 3, epochs: int = 1, name: str = "small") -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(
        SPEC.replace("ROUNDS", str(rounds)).replace("EPOCHS", str(epochs)).replace("name: small", f"name: {name}")
    )
    return p


def glth(*args, cwd: Path, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([GLTH, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def mlflow_children(uri: str, experiment: str) -> tuple[list, list]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("glth.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def metric_steps(uri: str, run_id: str, key: str = "test_accuracy") -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_sweep_rows_runs_and_results_agree(small_sweep):
    import ray

    tmp_path, uri, proc, sweep_id = (small_sweep[k] for k in ("cwd", "uri", "proc", "sweep_id"))
    assert "TERMINATED" in proc.stderr and "rounds" in proc.stderr  # progress a person can read
    rows = parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep_id))
    assert len(rows) == 12
    assert not rows.duplicated(["trial_id", "round"]).any()
    assert set(rows.dictionary) == {"canonical", "bottleneck-identity"}
    assert rows.groupby("trial_id")["round"].apply(list).map(lambda r: r == [0, 1, 2]).all()
    assert (rows[rows["round"] == 0].density == 1.0).all()
    assert rows.config.map(lambda c: "seeds" in json.loads(c)).all()
    # Tune's trials (orchestrator.tune_feed) are named after the trial ids: one directory each
    tune_dirs = (tmp_path / "out" / sweep_id / "tune" / "trials").iterdir()
    assert sorted(p.name for p in tune_dirs if p.is_dir()) == sorted(rows.trial_id.unique())

    parents, children = mlflow_children(uri, "glth-test")
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    for c in children:
        assert metric_steps(uri, c.info.run_id) == [0, 1, 2]

    # results, and the rerun below, start no Ray: run in this process (cli.main, as the console script)
    res = glth_here("results", sweep_id, "--out", "out", "--format", "json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    table = pd.DataFrame(json.loads(res.stdout))
    ref = rows.groupby(["dictionary", "round"]).test_accuracy.agg(["mean", "std"]).reset_index()
    merged = table.merge(ref, on=["dictionary", "round"])
    assert len(merged) == 6
    assert (merged.test_accuracy_mean - merged["mean"]).abs().max() < 1e-12
    assert (merged.test_accuracy_std - merged["std"]).abs().max() < 1e-12
    assert merged.groupby("dictionary").winning.sum().eq(1).all()

    # rerunning the same spec recomputes nothing
    again = glth_here("run", str(write_spec(tmp_path)), "--out", "out", "--tracking-uri", uri, cwd=tmp_path)
    assert again.returncode == 0 and "0 trials computed, 4 reused" in again.stdout
    assert not ray.is_initialized()
    assert len(parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep_id))) == 12
    parents, children = mlflow_children(uri, "glth-test")
    assert len(parents) == 1 and len(children) == 4


def test_trials_share_one_read_of_their_dataset_and_compute_what_a_per_trial_load_computes(small_sweep):
    """4 trials on 2 workers at a time: the dataset is read once (the reader's count, in the
    driver's last line about it), and every row and every round's mask equal those of the
    trial run here as a library call, which loads its own dataset."""
    from glth_core.experiment import TIMING_COLUMNS
    from orchestrator import spec as specs
    from orchestrator.trainable import resolve_device

    tmp_path, proc, rows = small_sweep["cwd"], small_sweep["proc"], small_sweep["rows"]
    said = re.findall(r"\[glth\] shared datasets: (\d+) read\(s\) on (\d+) node\(s\), (\d+) request", proc.stderr)
    # read once; asked by each worker once (a reused worker keeps it for its next trials)
    print(
        f"found: the dataset read {said and said[0][0]} time(s) for 4 trials, {said and said[0][2]} worker request(s)"
    )
    assert len(said) == 1 and said[0][:2] == ("1", "1") and 1 <= int(said[0][2]) <= 4, said
    where = SweepDir.under(tmp_path / "out", small_sweep["sweep_id"])
    sweep = specs.load(tmp_path / "small.yaml")
    for trial in sweep.trials:
        runner = trial.experiment.runner(resolve_device(trial.config))  # glth_core.data.load_for, its own read
        stored, tickets = rows[rows.trial_id == trial.trial_id].sort_values("round"), where.tickets(trial.trial_id)
        for (_, row), r in zip(stored.iterrows(), range(sweep.rounds)):
            record = runner.run_round()
            for k, v in record.items():
                if k in row.index and k not in TIMING_COLUMNS and not isinstance(v, (dict, list)):
                    assert row[k] == v if not pd.isna(v) else pd.isna(row[k]), (trial.trial_id, r, k, row[k], v)
            assert torch.equal(tickets[r].mask, runner.ticket.mask), (trial.trial_id, r)
            assert torch.equal(tickets[r].kept_coeffs, runner.ticket.kept_coeffs), (trial.trial_id, r)
        assert len(stored) == sweep.rounds == r + 1


def _trial_workers(root_pid: int) -> list[psutil.Process]:
    try:
        procs = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            if "ImplicitFunc" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _cwd_name(p: psutil.Process) -> str | None:
    try:
        return Path(p.cwd()).name
    except psutil.Error:
        return None


def saved_rounds(where: SweepDir, spec_path: Path) -> dict[str, int]:
    """trial id → the round its saved resume state is at (trials with a state only)."""
    from orchestrator import spec as specs

    trials = specs.load(spec_path).trials
    rounds = {}
    for t in trials:
        if where.has_batch_state(t.trial_id):
            with contextlib.suppress(UnreadableState):  # replaced while read: read it next time
                state = where.load_batch_state(t.trial_id, t.experiment.state_cls).states.get(t.trial_id)
                if state is not None:
                    rounds[t.trial_id] = state.round
    return rounds


def test_sigkill_of_a_trial_worker_resumes_from_its_last_round(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(tmp_path, rounds=6, epochs=6, name="kill")
    proc = subprocess.Popen(
        [GLTH, "run", str(spec), "--out", "out", "--tracking-uri", uri],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    deadline = time.monotonic() + 300
    try:
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            out = tmp_path / "out"
            if not out.exists() or not any(out.iterdir()):
                continue
            sweep_id = next(out.iterdir()).name
            where = SweepDir.under(out, sweep_id)
            files = parquet.trial_files(where)
            partial = {tid: len(pd.read_parquet(f)) for tid, f in files.items()}
            # the worker of a trial mid-trajectory (Tune names its working directory by trial id),
            # not one that has just started and has no state to resume from: its saved state (written
            # before each report; the rows reach disk up to 2 s later) is at round 3 to 5
            mid = {tid for tid, r in saved_rounds(where, spec).items() if 3 <= r < 6}
            workers = [w for w in _trial_workers(proc.pid) if _cwd_name(w) in mid]
            if workers:
                workers[0].send_signal(signal.SIGKILL)
                killed = (workers[0].pid, partial)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "never found a trial worker mid-trajectory"
    print(f"injected: SIGKILL of trial worker pid {killed[0]} with rows per trial {killed[1]}")
    assert proc.returncode == 0, stderr[-3000:]
    assert "RECOVERING" in stderr
    resumed = [
        int(line.rsplit("resumed at round ", 1)[1].split()[0])
        for line in stderr.splitlines()
        if "resumed at round" in line
    ]
    assert resumed and min(resumed) >= 2, stderr[-3000:]  # continued from its checkpoint, not from round 0
    rows = parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep_id))
    print(f"found: {len(rows)} rows, duplicates {int(rows.duplicated(['trial_id', 'round']).sum())}")
    assert len(rows) == 4 * 6
    assert not rows.duplicated(["trial_id", "round"]).any()
    _, children = mlflow_children(uri, "glth-test")
    assert len(children) == 4
    for c in children:
        assert metric_steps(uri, c.info.run_id) == list(range(6))
