"""MLflow sqlite databases for tests, at MLflow's schema head before first use.

A new sqlite tracking database runs every one of MLflow's schema migrations on first use: 5-15 s
on 2 busy cores, paid again by every ``mlflow server`` or library call a test points at a fresh
file. What the tests check is what glth logs into the database, not MLflow making its tables, so
each gets what ``glth run`` itself makes of a new store (orchestrator.sinks.mlflow.sqlite_seed: a
copy of the empty store migrated once per MLflow release)::

    uri = sqlite_uri(tmp_path / "mlflow.db")   # the file exists now, tables and all
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.sinks.mlflow import sqlite_seed


def migrated(db: str | Path) -> Path:
    """``db`` made a copy of the migrated, empty database (when it does not exist yet)."""
    db = Path(db)
    if not db.exists():
        assert sqlite_seed.seed(f"{sqlite_seed.SQLITE}{db}"), f"could not seed an MLflow store at {db}"
    return db


def sqlite_uri(db: str | Path) -> str:
    """``sqlite:///<db>`` of a migrated database at ``db``."""
    return f"sqlite:///{migrated(db)}"
