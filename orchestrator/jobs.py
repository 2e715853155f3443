"""Sweeps as Ray Jobs on a running cluster: ``glth submit``, ``glth status``, ``glth logs``, ``glth stop``.

``glth submit SPEC.yaml --address http://HEAD:8265`` validates the spec here, then asks the
cluster's Jobs API (the dashboard, port 8265) to run ``glth run SPEC --out OUT
[--tracking-uri URI]`` on the head node. The job's working directory is a temporary directory
holding only the spec file (not this repository: the cluster has glth installed), so it is
small and ephemeral: results must go elsewhere. Its env_vars are ``MLFLOW_TRACKING_URI`` and
``RAY_AUTH_MODE`` when set here. The job id reads ``glth-<sweep_id>-<6 hex>``.

Where things land (paths are the cluster's):
- ``--out``: a relative path is made absolute against the directory you submit from, right for a
  local cluster or a shared filesystem; for a remote cluster pass a path that exists there, or
  ``'~/glth-runs'`` (quoted: ``~`` is expanded on the cluster).
- ``--tracking-uri``: defaults to ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``,
  the same store ``glth run`` would use here; a relative ``sqlite:///`` path is made absolute
  the same way. A store the job cannot open costs nothing but a warning: the Parquet rows are
  complete and ``glth sync`` backfills MLflow later.

``glth stop JOB`` asks Ray to stop the job (SIGTERM to its driver, then SIGKILL after Ray's
grace period) and waits up to ``--wait`` seconds for it to reach STOPPED; the rounds its trials
finished are already stored, so ``glth run`` (or another submit) of the same spec resumes it.

The address is ``--address`` or ``$RAY_ADDRESS`` in its ``http(s)://`` form (a GCS address such
as ``HEAD:6379`` is for ``glth run``, not for the Jobs API). Ray's own client would let
``$RAY_ADDRESS``/``$RAY_API_SERVER_ADDRESS`` override an explicit address; here ``--address``
wins.

Token authentication (Ray 2.60, ``RAY_AUTH_MODE=token`` on the cluster): every dashboard request
carries ``Authorization: Bearer <token>``. Ray's client adds it by itself only when
``RAY_AUTH_MODE=token`` is set in *this* environment, taking the token from, in order,
``$RAY_AUTH_TOKEN``, the file named by ``$RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``
(``ray get-auth-token`` prints the cluster's). glth sends the header itself, whatever
``RAY_AUTH_MODE`` says, when it finds a token in ``--token-file F``, else ``$RAY_AUTH_TOKEN``,
else the file ``$RAY_AUTH_TOKEN_PATH``; otherwise Ray's rule applies (``~/.ray/auth_token``).
The token is never printed and never put in the job's runtime_env: the job's driver runs on the
head node and authenticates the way that node does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator import defaults

CONNECT_TIMEOUT_S = 10.0
POLL_S = 0.5
#: job states after which nothing more happens
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_ADDRESS_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


class JobsError(Exception):
    """Something the user can fix (address, token, job id): one line, exit status 2."""


# -- connecting ------------------------------------------------------------------------------
def resolve_address(address: str | None) -> str:
    """``--address`` or ``$RAY_ADDRESS``, checked to be the dashboard's http(s) URL."""
    source = "--address"
    if not address:
        address, source = os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS"
    if not address:
        raise JobsError("--address: required (the Ray dashboard, e.g. http://HEAD:8265), or set RAY_ADDRESS to it")
    if not _is_http_url(address):
        raise JobsError(f"{source}: expected the Ray dashboard's URL such as http://HEAD:8265 (got {address!r})")
    return address.rstrip("/")


def _is_http_url(address: str) -> bool:
    parts = urlsplit(address)
    try:
        _ = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _read_token(path: str, what: str) -> str:
    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as e:
        raise JobsError(f"{what}: cannot read {path} ({e.strerror or e})") from None
    if not token:
        raise JobsError(f"{what}: {path} is empty")
    return token


def auth_headers(token_file: str | None) -> dict[str, str]:
    """The Authorization header for a token found as the module docstring says, else none."""
    if token_file:
        token = _read_token(token_file, "--token-file")
    elif os.environ.get("RAY_AUTH_TOKEN", "").strip():
        token = os.environ["RAY_AUTH_TOKEN"].strip()
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        token = _read_token(os.environ["RAY_AUTH_TOKEN_PATH"], "RAY_AUTH_TOKEN_PATH")
    else:
        return {}
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def _without_address_vars() -> Iterator[None]:
    # JobSubmissionClient lets these override its address argument; ours is already resolved.
    saved = {k: os.environ.pop(k) for k in _ADDRESS_VARS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _unreachable(address: str, why: object) -> JobsError:
    return JobsError(f"--address: cannot reach the Ray dashboard at {address} ({why})")


def _probe(address: str) -> None:
    """Fail fast (seconds, not the OS's minutes) when nothing listens at the address."""
    parts = urlsplit(address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise _unreachable(address, e.strerror or type(e).__name__) from None


@contextlib.contextmanager
def _talking_to(address: str, job_id: str | None = None) -> Iterator[None]:
    """Turn the client's failures the user can fix into one-line JobsErrors."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as e:
        first = str(getattr(e, "message", e)).splitlines()[0]
        raise JobsError(f"--token-file: the Ray dashboard at {address} refused the request ({first})") from None
    except (ConnectionError, requests.exceptions.ConnectionError) as e:
        raise _unreachable(address, type(e).__name__) from None
    except RuntimeError as e:
        if job_id is not None and "status code 404" in str(e):
            raise JobsError(f"job: {job_id!r} is not a job on {address} (`glth status` lists them)") from None
        raise


class Cluster:
    """The Jobs API of one cluster: a JobSubmissionClient plus how it was reached."""

    def __init__(self, address: str | None, token_file: str | None = None):
        self.address = resolve_address(address)
        headers = auth_headers(token_file)
        self.sends_token = bool(headers)
        _probe(self.address)
        from ray.job_submission import JobSubmissionClient

        # Quiet Ray's INFO chatter ("uploading package…", "websocket closed…"): stderr is glth's.
        for name in (
            "ray.dashboard.modules.dashboard_sdk",
            "ray.dashboard.modules.job.sdk",
            "ray._private.runtime_env",
        ):
            logging.getLogger(name).setLevel(logging.WARNING)
        with _talking_to(self.address), _without_address_vars():
            self.client = JobSubmissionClient(self.address, headers=headers)

    def submit(self, spec_path: Path, sweep_id: str, out: str, tracking_uri: str | None) -> tuple[str, str]:
        """Submit ``glth run`` of the (already validated) spec; returns (job id, out as the job sees it)."""
        out = _absolute_out(out)
        uri = _absolute_tracking_uri(tracking_uri)
        entrypoint = shlex.join(["glth", "run", spec_path.name, "--out", out, "--tracking-uri", uri])
        job_id = f"glth-{sweep_id}-{secrets.token_hex(3)}"
        with tempfile.TemporaryDirectory(prefix="glth-submit-") as workdir:
            shutil.copyfile(spec_path, Path(workdir) / spec_path.name)
            runtime_env = {"working_dir": workdir, "env_vars": job_env(uri, self.sends_token)}
            with _talking_to(self.address):  # uploads the working_dir before it returns
                self.client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=job_id,
                    runtime_env=runtime_env,
                    metadata={"glth.sweep_id": sweep_id, "glth.out": out},
                )
        return job_id, out

    def info(self, job_id: str):
        with _talking_to(self.address, job_id):
            return self.client.get_job_info(job_id)

    def table(self) -> str:
        """Every job of the cluster, oldest first: id, status, start time, entrypoint."""
        with _talking_to(self.address):
            jobs = sorted(self.client.list_jobs(), key=lambda j: j.start_time or 0)
        if not jobs:
            return "no jobs on this cluster"
        rows = [("JOB", "STATUS", "STARTED", "ENTRYPOINT")]
        rows += [
            (j.submission_id or j.job_id or "-", status_of(j), _when(j.start_time), j.entrypoint or "-") for j in jobs
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[3]]) for r in rows)

    def logs(self, job_id: str) -> str:
        with _talking_to(self.address, job_id):
            return self.client.get_job_logs(job_id)

    def stop(self, job_id: str, wait_s: float = 30.0):
        """Ask the job to stop; wait up to ``wait_s`` for it to end. Returns (whether a stop was
        requested, i.e. the job was still running, and its JobDetails at the end of the wait)."""
        self.info(job_id)  # an unknown id is one line naming it
        with _talking_to(self.address, job_id):
            requested = bool(self.client.stop_job(job_id))
        deadline = time.monotonic() + wait_s
        info = self.info(job_id)
        while requested and status_of(info) not in TERMINAL and time.monotonic() < deadline:
            time.sleep(POLL_S)
            info = self.info(job_id)
        return requested, info

    def follow(self, job_id: str, write: Callable[[str], object]):
        """Stream the job's logs until it ends; returns its final JobDetails."""
        self.info(job_id)  # an unknown id is one line, not a websocket handshake error

        async def tail():
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        with _talking_to(self.address, job_id):
            asyncio.run(tail())
        return self.info(job_id)


# -- what a submitted job is given ----------------------------------------------------------
def _absolute_out(out: str) -> str:
    """A relative local path made absolute here; ``~…`` and URIs (``s3://…``, ``file://…``) as given."""
    return out if out.startswith("~") or "://" in out else str(Path(out).resolve())


def _absolute_tracking_uri(uri: str | None) -> str:
    return defaults.absolute_uri(defaults.tracking_uri(uri))


def job_env(tracking_uri: str, sends_token: bool) -> dict[str, str]:
    env = {"MLFLOW_TRACKING_URI": tracking_uri}
    mode = os.environ.get("RAY_AUTH_MODE")
    # A local "disabled" next to a token we send is a stale setting here, not the cluster's:
    # forwarding it would make the job's driver skip the token its head node needs.
    if mode and not (sends_token and mode.lower() == "disabled"):
        env["RAY_AUTH_MODE"] = mode
    return env


# -- formatting ------------------------------------------------------------------------------
def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def status_of(info) -> str:
    return getattr(info.status, "value", str(info.status))


def describe(info) -> str:
    """One line: the job id, its status and Ray's message about it."""
    job_id = info.submission_id or info.job_id
    return f"{job_id} {status_of(info)}: {info.message}" if info.message else f"{job_id} {status_of(info)}"
