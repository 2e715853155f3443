"""`glth submit / status / logs / stop` against a real local Ray head with the Jobs API (dashboard on).

The head binds to 127.0.0.1 on free ports under a short, unique temp dir, and is torn down by
killing every process whose command line names that dir (never `ray stop`).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from mlflow_db import sqlite_uri

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

BIN = Path(sys.executable).parent
GLTH = str(BIN / "glth")

SPEC = """
name: tiny-job
experiment: glth-test
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.2
seeds: [0]
rounds: 2
train: {epochs: 1}
resources: {cpu: 1}
max_concurrent: 1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree_of(needle: str) -> None:
    """SIGTERM, then SIGKILL, every process whose command line mentions ``needle``, and their children.

    Children too: Ray's agents and workers rename themselves (``ray::DashboardAgent``), so only
    their parent raylet still names the temp dir.
    """
    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and needle in " ".join(p.info["cmdline"] or []):
                procs.update({q.pid: q for q in [p, *p.children(recursive=True)]})
        except psutil.Error:
            pass
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(list(procs.values()), timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


def glth(*args: str, env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([GLTH, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def glth_here(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """``glth`` run in this process with exactly ``env`` as its environment: the same CLI code path
    as the console script without another interpreter's start (imports, 3-10 s on 2 busy cores);
    for the commands that only talk to the Jobs API (status, logs, stop) and ``submit``'s refusals."""
    from unittest import mock

    from orchestrator import cli

    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, env, clear=True),
        contextlib.chdir(cwd),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        rc = cli.main(list(args))
    return subprocess.CompletedProcess([GLTH, *args], rc, out.getvalue(), err.getvalue())


#: `ray start` attempts, each with fresh ports: a port picked free can be taken before Ray binds it
#: (another test worker's local Ray binds ports of its own meanwhile), and Ray then exits 1
HEAD_ATTEMPTS = 3


def _start_head(env: dict) -> tuple[str, int]:
    """(temp dir, dashboard port) of a Ray head started on 127.0.0.1, fresh ports on each attempt."""
    failures = []
    for _ in range(HEAD_ATTEMPTS):
        temp_dir = tempfile.mkdtemp(prefix="gj-", dir="/tmp")  # short: unix socket paths are limited
        dash = free_port()
        # Every port with a fixed default is picked free, so heads of parallel test runs never collide.
        ports = {
            flag: free_port()
            for flag in (
                "--port",
                "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port",
                "--metrics-export-port",
                "--ray-client-server-port",
                "--runtime-env-agent-port",
            )
        }
        done = subprocess.run(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                "--num-cpus=2",
                f"--temp-dir={temp_dir}",
                "--include-dashboard=true",
                "--disable-usage-stats",
                *(f"{k}={v}" for k, v in ports.items()),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode == 0:
            return temp_dir, dash
        failures.append(done.stderr[-1500:])
        kill_tree_of(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    raise RuntimeError(f"ray start --head failed {HEAD_ATTEMPTS} times; last stderr:\n{failures[-1]}")


@contextlib.contextmanager
def ray_head(auth_env: dict):
    """A Ray head on 127.0.0.1 with the dashboard (Jobs API) on; yields its http address and env."""
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        **auth_env,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # the job's driver runs `glth`
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    temp_dir, dash = _start_head(env)
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=5):
                    break
            except urllib.error.HTTPError:  # 401 from a token-protected head: it is up
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address, env
    finally:
        kill_tree_of(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    with ray_head({"RAY_AUTH_MODE": "disabled"}) as (address, env):
        yield address, env


def wait_terminal(job_id: str, address: str, env: dict, cwd: Path, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = glth_here("status", job_id, "--address", address, env=env, cwd=cwd)
        assert proc.returncode == 0, proc.stderr
        line = proc.stdout.strip()
        assert line.startswith(job_id), line
        if any(f" {s}" in line for s in ("SUCCEEDED", "FAILED", "STOPPED")):
            return line
        time.sleep(1)
    pytest.fail(f"job {job_id} not finished after {timeout}s")


@pytest.mark.slow
def test_submit_status_logs_on_a_real_head(head, tmp_path):
    address, env = head
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    uri = sqlite_uri(tmp_path / "mlflow.db")  # tables made already (tests/mlflow_db.py)
    # relative --out: made absolute here, so the job (whose cwd is its working_dir) writes under tmp_path
    proc = glth("submit", spec.name, "--address", address, "--out", "out", "--tracking-uri", uri, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert len(proc.stdout.splitlines()) == 1 and job_id.startswith("glth-tiny-job-")
    assert f"glth status {job_id}" in proc.stderr and f"glth logs {job_id} --follow" in proc.stderr

    final = wait_terminal(job_id, address, env, tmp_path)
    logs = glth_here("logs", job_id, "--address", address, env=env, cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    assert "SUCCEEDED" in final, f"{final}\n--- job logs ---\n{logs.stdout[-4000:]}"
    assert "sweep tiny-job-" in logs.stdout and "1 trials computed" in logs.stdout  # the sweep's own output

    out = tmp_path / "out"
    sweep_id = next(d.name for d in out.iterdir() if d.is_dir())
    rows = parquet.read_rounds(SweepDir.under(out, sweep_id))
    assert sorted(rows["round"]) == [0, 1]
    assert list((out / sweep_id / "rounds").rglob("*.parquet"))
    tracking = MlflowClient(uri)
    assert tracking.search_runs([tracking.get_experiment_by_name("glth-test").experiment_id])  # logged there

    listing = glth_here("status", "--address", address, env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[0].split() == ["JOB", "STATUS", "STARTED", "ENTRYPOINT"]
    row = next(line for line in listing.stdout.splitlines() if line.startswith(job_id))
    assert "SUCCEEDED" in row and f"glth run tiny.yaml --out {out}" in row

    followed = glth_here("logs", job_id, "--follow", "--address", address, env=env, cwd=tmp_path)
    assert followed.returncode == 0 and "1 trials computed" in followed.stdout, followed.stderr


@pytest.mark.slow
def test_unknown_job_is_one_line(head, tmp_path):
    address, env = head
    for cmd in (
        ["status", "raysubmit_nope"],
        ["logs", "raysubmit_nope"],
        ["logs", "raysubmit_nope", "--follow"],
        ["stop", "raysubmit_nope"],
    ):
        proc = glth_here(*cmd, "--address", address, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "raysubmit_nope" in proc.stderr and proc.stdout == ""


@pytest.mark.slow
def test_stop_a_running_job(head, tmp_path):
    """`glth stop` ends a running job (STOPPED); a second stop says it had already ended."""
    address, env = head
    job_id = f"glth-stop-test-{secrets.token_hex(3)}"
    from unittest import mock

    from ray.job_submission import JobSubmissionClient

    with mock.patch.dict(os.environ, env, clear=True):  # Ray's own client, in this process
        JobSubmissionClient(address).submit_job(entrypoint="sleep 600", submission_id=job_id)
    deadline = time.monotonic() + 120
    while "RUNNING" not in (line := glth_here("status", job_id, "--address", address, env=env, cwd=tmp_path).stdout):
        assert "PENDING" in line and time.monotonic() < deadline, line
        time.sleep(1)

    start = time.monotonic()
    proc = glth("stop", job_id, "--address", address, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{job_id} STOPPED") and proc.stdout.count("\n") == 1, proc.stdout
    assert time.monotonic() - start < 60  # not the job's 600 s
    assert glth_here("status", job_id, "--address", address, env=env, cwd=tmp_path).stdout.startswith(
        f"{job_id} STOPPED"
    )

    again = glth_here("stop", job_id, "--address", address, env=env, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith(f"{job_id} STOPPED"), again.stderr
    assert again.stderr == f"glth: job {job_id} had already ended; nothing to stop\n"


def test_bad_spec_never_reaches_the_cluster(tmp_path):
    """A bad spec fails before any connection: the address below has nothing listening."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("model: mlp_300_100", "model: no_such_net"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    start = time.monotonic()
    proc = glth("submit", str(bad), "--address", f"http://127.0.0.1:{free_port()}", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "model" in proc.stderr and "reach" not in proc.stderr
    assert time.monotonic() - start < 60


def test_unreachable_address_is_one_line(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    address = f"http://127.0.0.1:{free_port()}"
    for cmd in (["submit", str(spec)], ["status"], ["logs", "raysubmit_x"], ["stop", "raysubmit_x"]):
        proc = glth_here(*cmd, "--address", address, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"glth: error: --address: cannot reach the Ray dashboard at {address} (")


def test_address_must_be_the_dashboard_url(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "127.0.0.1:6379"}
    proc = glth_here("status", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "RAY_ADDRESS" in proc.stderr and "http://" in proc.stderr
    env.pop("RAY_ADDRESS")
    proc = glth_here("status", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "--address: required" in proc.stderr


def test_token_header_and_job_env(tmp_path, monkeypatch):
    """The token is sent as a Bearer header from --token-file / RAY_AUTH_TOKEN(_PATH), never elsewhere."""
    from orchestrator import jobs

    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    assert jobs.auth_headers(None) == {}
    tok = tmp_path / "tok"
    tok.write_text("s3cret\n")
    assert jobs.auth_headers(str(tok)) == {"Authorization": "Bearer s3cret"}
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tok))
    assert jobs.auth_headers(None) == {"Authorization": "Bearer s3cret"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "envtok")
    assert jobs.auth_headers(None) == {"Authorization": "Bearer envtok"}
    with pytest.raises(jobs.JobsError, match="--token-file") as e:
        jobs.auth_headers(str(tmp_path / "missing"))
    assert "s3cret" not in str(e.value)

    monkeypatch.chdir(tmp_path)  # where a submitted job's storage lands
    assert jobs._absolute_out("out") == str(tmp_path / "out")
    assert [jobs._absolute_out(o) for o in ("~/runs", "s3://bucket/runs", "file:///x")] == [
        "~/runs",
        "s3://bucket/runs",
        "file:///x",
    ]

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert jobs.job_env("sqlite:////x.db", sends_token=True) == {
        "MLFLOW_TRACKING_URI": "sqlite:////x.db",
        "RAY_AUTH_MODE": "token",
    }
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobs.job_env("u", sends_token=False)["RAY_AUTH_MODE"] == "disabled"
    assert "RAY_AUTH_MODE" not in jobs.job_env("u", sends_token=True)


def test_token_file_problems_are_one_line(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    empty = tmp_path / "empty"
    empty.write_text("")
    for token_file, why in ((tmp_path / "missing", "cannot read"), (empty, "is empty")):
        proc = glth_here(
            "status", "--address", "http://127.0.0.1:1", "--token-file", str(token_file), env=env, cwd=tmp_path
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and why in proc.stderr, proc.stderr


@pytest.mark.slow
def test_token_protected_head(tmp_path):
    """Against RAY_AUTH_MODE=token: refused without the token, served with --token-file or RAY_AUTH_TOKEN."""
    token = f"glth-test-{secrets.token_hex(16)}"
    with ray_head({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) as (address, head_env):
        env = {k: v for k, v in head_env.items() if k != "RAY_AUTH_TOKEN"}
        env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
        env["RAY_AUTH_MODE"] = "disabled"  # a client-side setting; the header is sent regardless

        refused = glth("status", "--address", address, env=env, cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "refused" in refused.stderr

        (tmp_path / "wrong").write_text("not-the-token")  # in this process, before it has seen the token
        wrong = glth_here("status", "--address", address, "--token-file", "wrong", env=env, cwd=tmp_path)
        assert wrong.returncode == 2 and "refused" in wrong.stderr
        (tmp_path / "token").write_text(token + "\n")
        served = [
            glth_here("status", "--address", address, "--token-file", "token", env=env, cwd=tmp_path),
            glth_here("status", "--address", address, env={**env, "RAY_AUTH_TOKEN": token}, cwd=tmp_path),
            glth_here(
                "status",
                "--address",
                address,
                env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "token"},
                cwd=tmp_path,
            ),
        ]
        for proc in served:
            assert proc.returncode == 0 and proc.stdout.strip() == "no jobs on this cluster", proc.stderr
        for proc in (refused, wrong, *served):
            assert token not in proc.stdout + proc.stderr
