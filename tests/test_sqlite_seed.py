"""A new sqlite tracking store is copied from a migrated empty one: the same schema as a store
MLflow migrated itself, usable as one, and never copied over a store that exists."""

from __future__ import annotations

import sqlite3

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.sinks import mlflow as sink
from orchestrator.sinks.mlflow import sqlite_seed


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: its template is migrated once."""
    return tmp_path_factory.mktemp("cache")


def schema(db) -> dict:
    """Per table its columns (name, type, not null, default, primary key) and index names; the
    alembic revision. (MLflow's batch migrations emit a table's constraints in no fixed order.)"""
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
        out = {
            t: (
                [r[1:] for r in con.execute(f'pragma table_info("{t}")')],
                sorted(r[1] for r in con.execute(f'pragma index_list("{t}")')),
            )
            for t in tables
        }
        out["alembic"] = con.execute("select version_num from alembic_version").fetchall()
    return out


def test_seeded_store_is_mlflows_own_schema_and_works(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    seeded, migrated = tmp_path / "a" / "seeded.db", tmp_path / "migrated.db"
    uri = f"sqlite:///{seeded}"
    c = sink.client(uri)  # seeds, then MLflow opens it
    assert sqlite_seed.template().parent == cache / "glth"
    MlflowClient(f"sqlite:///{migrated}").search_experiments()  # MLflow creates and migrates it
    assert schema(seeded) == schema(migrated) and len(schema(seeded)) > 20
    # MLflow added its Default experiment with this store's own artifact root, as in a store it made
    assert [e.name for e in c.search_experiments()] == ["Default"]
    exp = sink.ensure_experiment(c, "glth-seed")
    run = c.create_run(exp, tags={"k": "v"})
    c.log_metric(run.info.run_id, "acc", 0.5, step=3)
    assert [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, "acc")] == [(3, 0.5)]
    with sqlite3.connect(seeded) as con:  # commits append to a write-ahead log: no journal per commit
        assert con.execute("pragma journal_mode").fetchone() == ("wal",)


def test_write_ahead_log_only_on_a_local_file_system(tmp_path, monkeypatch, cache):
    """A store on a network file system (here: the mounts table says tmp_path is NFS) keeps the
    rollback journal: sqlite's WAL needs shared memory NFS does not give; a local disk gets WAL."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    nfs = tmp_path / "home"
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/export {nfs} nfs4 rw,vers=4.2 0 0\n")
    monkeypatch.setattr(sqlite_seed, "MOUNTS", str(mounts))
    assert sqlite_seed.filesystem_of(nfs / "a" / "x") == "nfs4"
    assert sqlite_seed.filesystem_of(tmp_path / "homeless") == "ext4"  # a prefix of the name is not the mount
    modes = {}
    for where in (nfs, tmp_path / "local"):
        db = where / "mlflow.db"
        assert sqlite_seed.seed(f"sqlite:///{db}")
        with sqlite3.connect(db) as con:
            modes[where.name] = con.execute("pragma journal_mode").fetchone()[0]
    assert modes == {"home": "delete", "local": "wal"}
    monkeypatch.setattr(sqlite_seed, "MOUNTS", str(tmp_path / "absent"))
    assert sqlite_seed.filesystem_of(tmp_path) is None


def test_seed_never_replaces_a_store(tmp_path, monkeypatch, cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    db = tmp_path / "mlflow.db"
    assert sqlite_seed.seed(f"sqlite:///{db}") and db.stat().st_size > 0
    db.write_bytes(b"a store someone made")
    assert not sqlite_seed.seed(f"sqlite:///{db}")
    assert db.read_bytes() == b"a store someone made"
    assert not sqlite_seed.seed("http://127.0.0.1:5000") and not sqlite_seed.seed(f"sqlite:///{tmp_path}/x.db?mode=ro")
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]  # no temporary file left


def test_mlflow_telemetry_is_off_unless_the_user_set_it(tmp_path, monkeypatch, cache):
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    sink.client(f"sqlite:///{tmp_path / 'a.db'}")
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")  # the user's own choice wins
    sink.client(f"sqlite:///{tmp_path / 'b.db'}")
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
