"""`glth run SPEC --dry-run`: the plan on hand-made data, and end to end before and after a real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from in_process import glth_here

from orchestrator import cli, dry_run

GLTH = str(Path(sys.executable).with_name("glth"))


def trial(tid: str, tau: float, seed: int, rows: int = 3, kind: str = "imp") -> dict:
    return {
        "trial_id": tid,
        "kind": kind,
        "run_name": f"canonical-tau{tau:g}-s{seed}",
        "rows_expected": rows,
        "config": {
            "dataset": "digits",
            "tau": tau,
            "seed": seed,
            "train": {"lr": 0.05, "epochs": 1},
            "dictionary": {"kind": "canonical"},
        },
    }


TRIALS = [trial("aaa", 0.2, 0), trial("bbb", 0.2, 1), trial("ccc", 0.3, 0), trial("ddd", 0.3, 1)]
ROWS = pd.DataFrame(
    {
        "trial_id": ["aaa", "aaa", "aaa", "bbb", "ddd", "ddd", "zzz"],
        "round": [0, 1, 2, 0, 0, 1, 0],
        "status": ["ok", "ok", "ok", "ok", "ok", "failed", "ok"],
        "wall_seconds": [2.0, 2.0, 2.0, 2.0, 2.0, 9.0, 2.0],
    }
)


def test_plan_statuses_rounds_and_varying_axes():
    plan = dry_run.plan(TRIALS, ROWS)
    assert list(plan.columns) == [
        "trial_id",
        "run_name",
        "kind",
        "tau",
        "seed",
        "status",
        "rows_expected",
        "rounds_done",
        "rounds_left",
    ]  # lr, epochs, … do not vary
    assert plan["status"].tolist() == ["done", "partial", "pending", "failed"]
    assert plan["rounds_done"].tolist() == [3, 1, 0, 1]
    assert plan["rounds_left"].tolist() == [0, 2, 3, 2]
    assert plan["tau"].tolist() == [0.2, 0.2, 0.3, 0.3] and plan["seed"].tolist() == [0, 1, 0, 1]
    empty = dry_run.plan(TRIALS, pd.DataFrame(columns=["trial_id", "round", "status"]))
    assert set(empty["status"]) == {"pending"} and empty["rounds_left"].sum() == 12


def test_plan_counts_only_rounds_the_trial_expects():
    rows = pd.DataFrame({"trial_id": ["aaa"] * 4, "round": [0, 1, 1, 7], "status": ["ok"] * 4})
    plan = dry_run.plan([trial("aaa", 0.2, 0)], rows)
    assert plan[["status", "rounds_done", "rounds_left"]].values.tolist() == [["partial", 2, 1]]


def test_varying_axes_flattens_nested_configs():
    a, b = (
        {"train": {"lr": 0.1, "epochs": 1}, "densities": (1.0, 0.5)},
        {"train": {"lr": 0.2, "epochs": 1}, "densities": (1.0, 0.3)},
    )
    assert dry_run.varying_axes([a, b]) == ["train.lr", "densities"]
    assert dry_run.varying_axes([a, a]) == []


def test_render_totals_and_estimate():
    plan = dry_run.plan(TRIALS, ROWS)
    spr = dry_run.seconds_per_round(ROWS)
    assert spr == 2.0  # the failed row is not a measure of a round
    text = dry_run.render(plan, spr, concurrency=2)
    lines = text.splitlines()
    assert lines[0].split() == [
        "trial_id",
        "run_name",
        "tau",
        "seed",
        "status",
        "rows_expected",
        "rounds_done",
        "rounds_left",
    ]
    assert lines[1].split() == ["aaa", "canonical-tau0.2-s0", "0.2", "0", "done", "3", "3", "0"]
    assert lines[-2] == "4 trials: 1 done, 1 partial, 1 failed, 1 pending"
    assert lines[-1] == (
        "would compute: 3 trials, 7 rounds (≈ 14 s of trial time at 2 s a round, from the stored rows; "
        "≈ 7 s wall with 2 at once)"
    )
    assert (
        dry_run.render(plan).splitlines()[-1]
        == "would compute: 3 trials, 7 rounds (no stored rounds to estimate the time from)"
    )
    assert (
        "kind" in dry_run.render(dry_run.plan([*TRIALS, trial("eee", 0.3, 2, 1, kind="strong")], ROWS)).splitlines()[0]
    )


def test_render_when_everything_is_done():
    plan = dry_run.plan([trial("aaa", 0.2, 0)], ROWS)
    assert dry_run.render(plan).splitlines()[-2:] == [
        "1 trials: 1 done, 0 partial, 0 pending",
        "would compute: nothing (every trial is complete; --force recomputes)",
    ]


# -- end to end ------------------------------------------------------------------------------
SPEC = """\
name: dry
experiment: glth-test
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.3
seeds: [0, 1]
rounds: 2
train: {epochs: 1}
resources: {cpu: 1}
max_concurrent: 2
"""


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_dry_run_in_process_starts_no_ray_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import ray

    (tmp_path / "spec.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "spec.yaml", "--dry-run", "seeds=0-4"]) == 0
    out = capsys.readouterr().out
    assert "5 trials: 0 done, 0 partial, 5 pending" in out and "would compute: 5 trials, 10 rounds" in out
    assert "seed" in out.splitlines()[2].split()  # the varying axis is a column
    assert os.listdir(tmp_path) == ["spec.yaml"] and not ray.is_initialized()


NOT_INHERITED = ("GLTH_STORAGE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")


def glth(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    return subprocess.run([GLTH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def glth_no_ray(*args, cwd: Path) -> subprocess.CompletedProcess:
    """A command that starts no Ray (a dry run, a refusal, results, a rerun with every trial
    complete), in this process: the same ``cli.main`` as the console script, without its start-up."""
    return glth_here(*args, cwd=cwd, drop_env=NOT_INHERITED)


@pytest.mark.slow
def test_dry_run_resume_and_results_around_a_real_run(tmp_path):
    import ray

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "spec.yaml").write_text(SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    before = glth_no_ray("run", "spec.yaml", "--dry-run", "--out", "out", cwd=cwd)
    assert before.returncode == 0, before.stderr
    assert "2 trials: 0 done, 0 partial, 2 pending" in before.stdout
    assert "would compute: 2 trials, 4 rounds" in before.stdout
    assert _listing(cwd) == ["spec.yaml"], "the dry run wrote something"

    refused = glth_no_ray("run", "spec.yaml", "--resume", "--out", "out", cwd=cwd)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--resume: no sweep dry-" in refused.stderr and _listing(cwd) == ["spec.yaml"]

    run = glth("run", "spec.yaml", "--out", "out", "--tracking-uri", uri, cwd=cwd)
    assert run.returncode == 0, run.stderr[-3000:]
    (sweep_dir,) = [d for d in (cwd / "out").iterdir() if d.is_dir()]
    assert f"→ {sweep_dir}" in run.stderr  # the directory glth run names

    after = glth_no_ray("run", "spec.yaml", "--dry-run", "--out", "out", cwd=cwd)
    assert after.returncode == 0, after.stderr
    assert "2 trials: 2 done, 0 partial, 0 pending" in after.stdout and "would compute: nothing" in after.stdout
    forced = glth_no_ray("run", "spec.yaml", "--dry-run", "--force", "--out", "out", cwd=cwd)
    assert "2 trials: 0 done, 0 partial, 2 pending" in forced.stdout

    resumed = glth_no_ray("run", "spec.yaml", "--resume", "--out", "out", "--tracking-uri", uri, cwd=cwd)
    assert resumed.returncode == 0 and "0 trials computed, 2 reused" in resumed.stdout, resumed.stderr[-3000:]
    assert not ray.is_initialized()  # nothing left to compute: no Ray started in this process

    # `glth results <the sweep directory>` from a directory without ./glth-runs, relative and absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rel = os.path.relpath(sweep_dir, elsewhere)
    by_path = [glth_no_ray("results", key, "--tracking-uri", uri, cwd=elsewhere) for key in (rel, str(sweep_dir))]
    by_id = glth_no_ray(
        "results", sweep_dir.name[:6], "--storage", str(cwd / "out"), "--tracking-uri", uri, cwd=elsewhere
    )
    by_name = glth_no_ray("results", "dry", "--out", str(cwd / "out"), "--tracking-uri", uri, cwd=elsewhere)
    for proc in (*by_path, by_id, by_name):
        assert proc.returncode == 0, proc.stderr
        rounds = [
            line.split()
            for line in proc.stdout.splitlines()
            if line.startswith(" canonical") or line.startswith("canonical")
        ]
        assert [r[3] for r in rounds[:2]] == ["0", "1"], proc.stdout  # the round column of both rounds
    assert by_path[0].stdout == by_path[1].stdout
    assert not (elsewhere / "glth-runs").exists()


def test_dry_run_states_the_compute_of_the_resnet20_recipe(capsys, monkeypatch):
    """The full profile (device: cuda) is planned on this CPU-only machine: 81 trials × 16 rounds,
    27 of them reinit (two trainings a round), 160 epochs of ceil(45,000 / 128) = 352 steps; no GPU
    step time is measured, and the line says so. The quick profile's CPU time comes from the
    measured 1.4 s a step: 3,600 steps → 5,040 s."""
    from orchestrator import compute

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    assert cli.main(["run", "examples/specs/lth_resnet20.yaml", "--profile", "full", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1,728 trainings" in out and "56,320 steps (160 epochs of 352 steps)" in out
    assert f"{(81 + 27) * 16 * 56320:,} training steps" in out
    assert "no measured step time for cifar_resnet_20 on cuda" in out

    class Cfg:  # the fields compute reads, for a config of the quick profile
        model, dataset, val_fraction, control, lmc_points = "cifar_resnet_20", "cifar10", 0.1, "reinit", 0
        train = type("T", (), {"steps": 150, "batch_size": 64, "total_steps": lambda self, n: 150})()

    (line,) = compute.describe([(Cfg, 3)], "cpu")
    assert "900 training steps" in line and "assuming 1.4 s a step at batch 128" in line
    assert "10.5 min of cpu time" in line  # 900 steps × 1.4 s × 64/128 = 630 s
