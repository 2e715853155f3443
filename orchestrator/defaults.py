"""Where a sweep's rows and its MLflow runs go when the command line does not say: resolved here, once.

- storage: ``--storage`` (alias ``--out``), else ``$GLTH_STORAGE``, else ``./glth-runs``;
- tracking URI: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else an absolute sqlite store
  ``sqlite:///<cwd>/mlflow.db`` (absolute, so trials that run in other directories write the same file).
  ``glth run`` records the URI it used in the sweep's ``sweep.json`` (a relative sqlite path made
  absolute); the commands that read a sweep (results, plot, sync, export) use that one unless
  ``--tracking-uri`` says otherwise, so they find the sweep's runs from any directory. A sweep.json
  without it (an older sweep) falls back to the environment and the working directory as above.
"""

from __future__ import annotations

import os
from pathlib import Path

STORAGE_ENV = "GLTH_STORAGE"
STORAGE_FALLBACK = "glth-runs"


def default_storage() -> str:
    """``$GLTH_STORAGE`` or ``glth-runs`` (relative to the working directory)."""
    return os.environ.get(STORAGE_ENV) or STORAGE_FALLBACK


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` or an absolute sqlite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def storage(value: str | None) -> str:
    """The storage a command uses: its ``--storage`` value, else the default above."""
    return value or default_storage()


def tracking_uri(value: str | None, recorded: str | None = None) -> str:
    """The tracking URI a command uses: its ``--tracking-uri`` value, else the one its sweep
    recorded (``recorded``), else the default above."""
    return value or recorded or default_tracking_uri()


SQLITE = "sqlite:///"


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative sqlite path made absolute (against the working directory)."""
    if uri.startswith(SQLITE) and not uri[len(SQLITE) :].startswith("/"):
        return f"{SQLITE}{Path(uri[len(SQLITE) :]).resolve()}"
    return uri


def store_missing(uri: str) -> bool:
    """A sqlite tracking store whose file does not exist: it holds no run, and a command that only
    reads must not create it (nor need MLflow to find that out)."""
    return uri.startswith(SQLITE) and not Path(uri[len(SQLITE) :]).expanduser().is_file()
