"""Ctrl-C on `glth run`: the local Ray stops (no process of it left, checked by pid), one line says
how to resume, the exit status is 130, and every finished round is kept: the rerun completes the
sweep with every (trial, round) row exactly once and the rows from before the interrupt unchanged
(not recomputed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from mlflow_db import migrated

from orchestrator.ray_local import EXIT_INTERRUPTED, resume_hint

pytestmark = pytest.mark.slow

GLTH = str(Path(sys.executable).with_name("glth"))
SPEC = """
name: interrupt
experiment: glth-interrupt-test
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.5
seeds: [0, 1]
rounds: 8
train: {epochs: 6, batch_size: 64, lr: 0.05}   # ~0.5 s a round: room to interrupt mid-sweep on a busy machine
resources: {cpu: 1}
max_concurrent: 1
"""
TRIALS, ROUNDS = 2, 8


def rows_of(out: Path) -> pd.DataFrame:
    files = sorted(out.glob("*/rounds/**/*.parquet"))
    if not files:
        return pd.DataFrame(columns=["trial_id", "round", "wall_seconds"])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


#: pid → command line, of every process ``descendants`` found
CMDLINES: dict[int, list[str]] = {}


def descendants(pid: int) -> dict[int, float]:
    """{pid: create time} of every process under ``pid`` (the create time tells a reused pid apart)."""
    out = {}
    try:
        for p in psutil.Process(pid).children(recursive=True):
            try:
                out[p.pid] = p.create_time()
                CMDLINES.setdefault(p.pid, p.cmdline())
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return out


def alive(procs: dict[int, float]) -> list[str]:
    left = []
    for pid, created in procs.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {p.name()}")
        except psutil.Error:
            pass
    return left


def cmdlines(procs: dict[int, float]) -> list[list[str]]:
    """The command lines of ``procs`` seen (recorded while they ran: the interrupted ones are gone)."""
    return [CMDLINES.get(pid, []) for pid in procs]


def wait_gone(procs: dict[int, float], timeout: float = 60.0) -> list[str]:  # Ray's agents end last under load
    deadline = time.monotonic() + timeout
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def start(cwd: Path) -> subprocess.Popen:
    migrated(cwd / "mlflow.db")
    # its own session and process group, as a terminal's foreground job: Ctrl-C goes to the group
    return subprocess.Popen(
        [GLTH, "run", "spec.yaml", "--out", "out", "--tracking-uri", f"sqlite:///{cwd / 'mlflow.db'}"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )


def kill_all(proc: subprocess.Popen, procs: dict[int, float]) -> None:
    for pid in [proc.pid, *procs]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_ctrl_c_stops_ray_keeps_finished_rounds_and_the_rerun_completes(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    out = tmp_path / "out"
    proc, seen = start(tmp_path), {}
    said: list[str] = []  # the driver's stderr, line by line as it comes
    reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        # interrupted once the driver has received a round: the rows it holds (written within 2 s
        # or at a trial's end) must reach the disk on Ctrl-C too
        deadline = time.monotonic() + 600
        while not any(re.search(r"\] trial \w+ round 1:", line) for line in said):
            assert proc.poll() is None, f"glth run ended before a round: {''.join(said)[-3000:]}"
            assert time.monotonic() < deadline, "no round within 600 s"
            seen.update(descendants(proc.pid))
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=30)
        err = "".join(said)
    except BaseException:
        kill_all(proc, seen)
        raise
    assert any("raylet" in " ".join(p) for p in cmdlines(seen)), "the run's raylet was not found among its processes"
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert not wait_gone(seen), f"Ray processes of the interrupted run still alive: {alive(seen)}"
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and lines[0].startswith("[glth] interrupted: local Ray stopped"), err[-3000:]
    assert "run again: glth run spec.yaml --out out --tracking-uri sqlite:///" in lines[0]
    assert err.rstrip().endswith(lines[0])  # the last thing said: no traceback after it

    before = rows_of(out)
    assert 1 <= len(before) < TRIALS * ROUNDS, "the interrupt came too late to test a resume"
    assert not before.duplicated(["trial_id", "round"]).any()

    proc, seen = start(tmp_path), {}
    try:
        while proc.poll() is None:
            seen.update(descendants(proc.pid))
            time.sleep(0.5)
        _, err = proc.communicate(timeout=30)
    except BaseException:
        kill_all(proc, seen)
        raise
    assert proc.returncode == 0, err[-3000:]
    assert not wait_gone(seen), f"Ray processes of the rerun still alive: {alive(seen)}"
    after = rows_of(out)
    assert len(after) == TRIALS * ROUNDS and after["trial_id"].nunique() == TRIALS
    assert not after.duplicated(["trial_id", "round"]).any()
    assert sorted(after.groupby("trial_id")["round"].apply(sorted).tolist()) == [list(range(ROUNDS))] * TRIALS
    kept = before.merge(after, on=["trial_id", "round"], suffixes=("_before", "_after"))
    assert len(kept) == len(before)
    assert (kept["wall_seconds_before"] == kept["wall_seconds_after"]).all()  # kept, not recomputed


def test_resume_hint_repeats_the_command_line():
    assert (
        resume_hint(["/venv/bin/glth", "run", "my spec.yaml", "tau=0.1,0.2"])
        == "run again: glth run 'my spec.yaml' tau=0.1,0.2"
    )
    assert resume_hint(["pytest", "-q"]) == "run the same `glth run` again"
