"""Reaching the tracking store fast or not at all, and failing with one exception.

A store that is down raises ``MlflowUnavailable`` quickly (no retries, a short timeout: ``HTTP_ENV``
while a guarded call runs), so the caller carries on and ``sync_sweep`` backfills later.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator

import requests
from mlflow.exceptions import MlflowException

# Fail fast when the server is down, and no "🏃 View run … at" line on stdout for every run
# ended (glth prints its own summary). Values the user already exported win.
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


class MlflowUnavailable(RuntimeError):
    """The tracking store cannot be reached now; the Parquet rows let ``sync_sweep`` catch up."""


_env_lock = threading.Lock()
_env_depth = 0
_env_added: list[str] = []


@contextlib.contextmanager
def _short_http() -> Iterator[None]:
    """Set ``HTTP_ENV`` (where unset) while any guarded call runs; restore it after the last."""
    global _env_depth
    with _env_lock:
        if _env_depth == 0:
            _env_added[:] = [k for k in HTTP_ENV if k not in os.environ]
            for k in _env_added:
                os.environ[k] = HTTP_ENV[k]
        _env_depth += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_depth -= 1
            if _env_depth == 0:
                for k in _env_added:
                    os.environ.pop(k, None)


_UNAVAILABLE_TEXT = (
    "failed with exception",
    "failed with timeout exception",
    "max retries exceeded",
    "connection refused",
    "connection aborted",
    "database is locked",
)


def _is_unavailable(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
            return True
        if isinstance(e, MlflowException) and (
            e.get_http_status_code() in (502, 503, 504) or e.error_code == "TEMPORARILY_UNAVAILABLE"
        ):
            return True
        if any(t in str(e).lower() for t in _UNAVAILABLE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    with _short_http():
        try:
            yield
        except MlflowUnavailable:
            raise
        except Exception as e:
            if _is_unavailable(e):
                raise MlflowUnavailable(str(e).splitlines()[0][:300]) from e
            raise


def _guarded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _guard():
            return fn(*args, **kwargs)

    return wrapper
