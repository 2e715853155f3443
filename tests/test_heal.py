"""Damaged or missing result files heal on the rerun, or are named in one line by the readers.

A trial's Parquet file is a copy of what its resume state (``state/<group>.pt``) holds, so a rerun
of the sweep rebuilds a missing or unreadable file from that state with the very same rows; an
unreadable resume state makes its trial restart from round 0, said in one line. The readers
(``glth results``) name a damaged file and how to rebuild it, without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from in_process import glth_here

from glth_core.experiment import TIMING_COLUMNS
from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

pytestmark = pytest.mark.slow

GLTH = str(Path(sys.executable).with_name("glth"))
SPEC = """
name: heal
experiment: glth-heal-test
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.5
seeds: [0, 1, 2, 3]
rounds: 3
train: {epochs: 1, batch_size: 64, lr: 0.05}
resources: {cpu: 1}
max_concurrent: 2
"""
TRIALS, ROUNDS = 4, 3


def glth(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([GLTH, *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def run(cwd: Path) -> subprocess.CompletedProcess:
    return glth(cwd, "run", "spec.yaml", "--out", "out", "--tracking-uri", f"sqlite:///{cwd / 'mlflow.db'}")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("heal")
    (cwd / "spec.yaml").write_text(SPEC)
    first = run(cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    (sweep_dir,) = [d for d in (cwd / "out").iterdir() if d.is_dir()]
    rows = parquet.read_rounds(SweepDir.under(cwd / "out", sweep_dir.name))
    assert len(rows) == TRIALS * ROUNDS and set(rows.status) == {"ok"}
    return {"cwd": cwd, "out": cwd / "out", "sweep_id": sweep_dir.name, "dir": sweep_dir, "rows": rows}


def file_of(sweep, trial_id: str) -> Path:
    return parquet.trial_files(SweepDir.under(sweep["out"], sweep["sweep_id"]))[trial_id]


def trial_rows(sweep, trial_id: str) -> pd.DataFrame:
    return pd.read_parquet(file_of(sweep, trial_id))


@pytest.fixture(scope="module")
def healed(sweep):
    """Three trials damaged three ways, then ONE rerun heals them all (a rerun starts Ray: one for
    both tests below): a truncated rows file (after ``glth results`` has read the sweep), a missing
    rows file, an unreadable resume state (its rows file removed, so the trial has to run again); the
    fourth trial is left alone."""
    damaged, missing, restarted, untouched = sorted(sweep["rows"].trial_id.unique())
    before = {t: trial_rows(sweep, t) for t in (damaged, missing, restarted)}
    path = file_of(sweep, damaged)
    truncate(path)
    results = glth_here(  # results start no Ray: in this process (cli.main, as the console script)
        "results", str(sweep["dir"]), "--tracking-uri", f"sqlite:///{sweep['cwd'] / 'mlflow.db'}", cwd=sweep["cwd"]
    )
    file_of(sweep, missing).unlink()
    state = sweep["dir"] / "state" / f"{restarted}.pt"
    truncate(state)
    file_of(sweep, restarted).unlink()
    left_alone = {untouched: file_of(sweep, untouched).stat().st_mtime_ns}
    return {
        "damaged": damaged,
        "missing": missing,
        "restarted": restarted,
        "path": path,
        "state": state,
        "before": before,
        "left_alone": left_alone,
        "results": results,
        "rerun": run(sweep["cwd"]),
    }


def test_a_truncated_rows_file_is_named_by_results_and_it_and_a_missing_one_are_rebuilt_by_the_rerun(sweep, healed):
    damaged, missing, path, results = (healed[k] for k in ("damaged", "missing", "path", "results"))
    print(f"\ninjected: {path.name} truncated to half; glth results said: {results.stderr.strip()!r}")
    assert results.returncode != 0
    assert "Traceback" not in results.stderr and len(results.stderr.strip().splitlines()) == 1, results.stderr
    assert str(path) in results.stderr and "glth run" in results.stderr

    rerun = healed["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert str(path) in rerun.stderr and "rebuil" in rerun.stderr, rerun.stderr[-3000:]
    for t in (damaged, missing):  # the same rows, timings too: they come from the resume state
        pd.testing.assert_frame_equal(trial_rows(sweep, t), healed["before"][t], check_exact=True)
    assert len(parquet.read_rounds(SweepDir.under(sweep["out"], sweep["sweep_id"]))) == TRIALS * ROUNDS


def test_an_unreadable_resume_state_restarts_its_trial_from_round_0_said_in_one_line(sweep, healed):
    tid, state, rerun = healed["restarted"], healed["state"], healed["rerun"]
    before = healed["before"][tid]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    said = [line for line in rerun.stderr.splitlines() if str(state) in line]
    print(f"\ninjected: {state.name} truncated; the rerun said: {said}")
    assert len(said) == 1 and "round 0" in said[0], rerun.stderr[-3000:]
    after = trial_rows(sweep, tid)
    timing = [c for c in TIMING_COLUMNS if c in before]
    pd.testing.assert_frame_equal(after.drop(columns=timing), before.drop(columns=timing), check_exact=True)
    others = healed["left_alone"]
    assert {t: file_of(sweep, t).stat().st_mtime_ns for t in others} == others  # nothing else touched
    assert len(parquet.read_rounds(SweepDir.under(sweep["out"], sweep["sweep_id"]))) == TRIALS * ROUNDS
