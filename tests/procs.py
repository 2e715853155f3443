"""Real processes for integration tests: an MLflow tracking server and a multi-node local Ray.

Everything binds to 127.0.0.1 and is stopped by pid (never `ray stop`, which would kill every
Ray on the machine).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite backend; stop() kills its process group."""

    def __init__(self, tmp: Path, port: int | None = None):
        self.tmp, self.port, self.proc = Path(tmp), port or free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240.0) -> "MlflowServer":
        from mlflow_db import migrated

        migrated(self.tmp / "db.sqlite")  # tables made once per test process, not by every server
        log = open(self.tmp / f"server-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 (the server's, closed by stop())
        self.proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.tmp / 'db.sqlite'}",
                "--default-artifact-root",
                str(self.tmp / "art"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no job runner: MLflow 3's server otherwise starts four more Python processes (a job
            # runner and three huey consumers, for its GenAI jobs) that the tests never use
            env={**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout}s: {Path(log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its workers: its own session
            self.proc.wait(timeout=30)
        self.proc = None


def kill_matching(needle: str) -> int:
    """SIGKILL every process whose command line mentions ``needle`` (a unique temp dir), and
    their children: Ray's agents rename themselves (ray::DashboardAgent) and lose the path."""
    victims = []
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid not in me and needle in " ".join(p.info["cmdline"] or []):
                victims += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    return len(victims)


class LocalRayCluster:
    """A head and ``workers`` extra nodes started with the `ray` CLI on 127.0.0.1."""

    def __init__(self, workers: int = 1, cpus_per_node: int = 1):
        self.workers, self.cpus = workers, cpus_per_node
        self.temp_dir = tempfile.mkdtemp(prefix="glray-", dir="/tmp")  # short: unix socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def _ray(self, *args: str) -> None:
        subprocess.run([str(BIN / "ray"), "start", *args], env=self.env, check=True, capture_output=True, timeout=180)

    def start(self) -> "LocalRayCluster":
        self._ray(
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--num-cpus={self.cpus}",
            "--include-dashboard=false",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        )
        for _ in range(self.workers):
            self._ray(f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}")
        return self

    def stop(self) -> None:
        kill_matching(self.temp_dir)
