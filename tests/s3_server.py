"""A real S3-compatible server on loopback for tests: moto's standalone server, with IAM auth on.

``S3Server().start()`` runs ``moto_server`` as a subprocess on a free 127.0.0.1 port and stops it
by pid. Authentication is real: the server starts with ``INITIAL_NO_AUTH_ACTION_COUNT=3``, so its
first three requests (made here: create an IAM user, give it an ``s3:*`` policy, create its access
key) go unchecked and every later request must be signed with that key. A wrong key is refused
(``InvalidAccessKeyId``) the way AWS refuses it.

Credentials reach glth the way they do on a cluster, through the AWS environment chain: ``env``
holds ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` and
``AWS_ENDPOINT_URL`` (which orchestrator.storage honours), for ``monkeypatch`` or for the
environment of Ray processes.

As a pytest plugin (``pytest_plugins = ["s3_server"]`` in conftest.py, or import the fixtures)
it gives a session fixture ``s3_server`` and a function fixture ``s3_env`` that puts ``env`` into
``os.environ`` for one test.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
NO_AUTH_REQUESTS = 3  # the setup calls in _make_user; everything after them is authenticated
REGION = "us-east-1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """``moto_server`` on 127.0.0.1 with one IAM user allowed ``s3:*``."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.access_key = self.secret_key = None
        fd, name = tempfile.mkstemp(prefix="moto-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)

    @property
    def env(self) -> dict[str, str]:
        """The AWS environment of a client that may use the server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60.0) -> "S3Server":
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(NO_AUTH_REQUESTS), "PYTHONUNBUFFERED": "1"}
        for k in [k for k in env if k.startswith("AWS_")]:
            env.pop(k)
        with open(self.log_path, "wb") as log:  # the server keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:  # /moto-api/ is moto's own dashboard: not an AWS action, so not counted
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    text = self.log_path.read_text()[-2000:]
                    self.stop()
                    raise RuntimeError(f"moto_server not up after {timeout}s: {text}") from None
                time.sleep(0.2)
        self._make_user()
        return self

    def _client(self, service: str, access_key: str = "setup", secret_key: str = "setup"):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )

    def _make_user(self) -> None:
        iam = self._client("iam")
        iam.create_user(UserName="glth")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="glth", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="glth")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def s3(self):
        """A boto3 S3 client with the server's valid key."""
        return self._client("s3", self.access_key, self.secret_key)

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"glth-{secrets.token_hex(4)}"
        self.s3().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (independent of orchestrator.storage)."""
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the server and any child
            self.proc.wait(timeout=30)
        self.proc = None
        self.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """``s3_server.env`` in ``os.environ`` for one test (no other AWS_* variable)."""
    for k in [k for k in os.environ if k.startswith("AWS_") or k == "GLTH_S3_ENDPOINT"]:
        monkeypatch.delenv(k)
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server
