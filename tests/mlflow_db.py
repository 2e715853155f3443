"""MLflow sqlite databases for tests, their tables made once per test process.

A new sqlite tracking database runs every one of MLflow's schema migrations on first use: 5-15 s
on 2 busy cores, paid again by every ``glth run`` or ``mlflow server`` a test points at a fresh
file. What the tests check is what glth logs into the database, not MLflow making its tables, so
each gets a copy of one database migrated here (same MLflow, same schema)::

    uri = sqlite_uri(tmp_path / "mlflow.db")   # the file exists now, tables and all
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def _template() -> Path:
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="glth-mlflow-db-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    db = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # creates and migrates the tables
    return db


def migrated(db: str | Path) -> Path:
    """``db`` made a copy of the migrated, empty database (when it does not exist yet)."""
    db = Path(db)
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template(), db)
    return db


def sqlite_uri(db: str | Path) -> str:
    """``sqlite:///<db>`` of a migrated database at ``db``."""
    return f"sqlite:///{migrated(db)}"
