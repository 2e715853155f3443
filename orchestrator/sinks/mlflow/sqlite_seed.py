"""A new sqlite tracking store starts as a copy of an empty store already at MLflow's schema head.

MLflow makes a new sqlite store by creating its first tables and then running every schema
migration of its history (alembic): seconds of CPU that each ``glth run`` with a fresh store paid
before its sweep started. The result is the same empty schema every time, so glth migrates one
empty database per MLflow release into a cache (``$XDG_CACHE_HOME/glth``, else ``~/.cache/glth``)
and copies it to the new store's path. MLflow then finds every table at its head revision and
only adds its ``Default`` experiment (with this store's artifact root), as in a store it migrated
itself. Best effort: wherever the cache or the copy fails, MLflow creates the store as before.

The copy is put in write-ahead-log mode (``journal_mode=WAL``, kept by the file) before it takes
the store's name: a commit appends to ``<store>-wal`` instead of writing, syncing and deleting a
rollback journal, which took a quarter of the driver's CPU in MLflow's commits (about nine a
trial); readers (``mlflow ui``, ``glth runs``) no longer wait for the writer. Crash-safe as before
(a killed process's last commits are in the WAL, replayed by the next opener); the store is then
the ``.db`` file with its ``-wal`` and ``-shm`` files while it is open, one file once closed. A
store that exists is left in its mode. Only on a file system known to be local (``LOCAL_FS``, read
from ``/proc/self/mounts``): sqlite's WAL needs shared memory that a network file system (NFS, a
cluster's shared home) does not give, so a store there, or where the type is unknown, keeps the
rollback journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import sqlite3
from pathlib import Path

SQLITE = "sqlite:///"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glth"


def _template_name() -> str:
    """One template per MLflow release and set of migrations (a reinstalled dev build differs)."""
    import mlflow
    from mlflow.store import db_migrations

    revisions = sorted(p.name for p in (Path(db_migrations.__file__).parent / "versions").glob("*.py"))
    digest = hashlib.sha256("\n".join(revisions).encode()).hexdigest()[:12]
    return f"mlflow-{mlflow.__version__}-{digest}.db"


def template() -> Path:
    """The migrated empty store, made (atomically) on first use."""
    path = _cache_dir() / _template_name()
    if path.is_file():
        return path
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        engine = sqlalchemy.create_engine(f"{SQLITE}{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


#: file systems on which a new store is put in WAL mode (local disks, memory, a container's layers)
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "tmpfs", "overlay", "apfs"})


#: where the mounts are read (Linux)
MOUNTS = "/proc/self/mounts"


def filesystem_of(path: Path) -> str | None:
    """The type of the file system ``path`` is on (its longest mount point in ``MOUNTS``), None if
    unknown."""
    try:
        table = Path(MOUNTS).read_text()
    except OSError:
        return None
    where = os.path.realpath(path)
    best, kind = -1, None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def _write_ahead_log(db: Path) -> None:
    """``db`` in WAL mode (a flag in its header), left one file again (checkpointed, closed)."""
    con = sqlite3.connect(db)
    try:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode stayed {mode}")
    finally:
        con.close()


def seed(tracking_uri: str) -> bool:
    """Put the migrated empty store at ``tracking_uri``'s path when that is a sqlite file that does
    not exist yet; never over a file (another process's new store included). True if it did."""
    if not tracking_uri.startswith(SQLITE) or "?" in tracking_uri:
        return False
    path = Path(tracking_uri[len(SQLITE) :]).expanduser()
    if str(path) in ("", ":memory:") or path.exists():
        return False
    try:
        source = template()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            shutil.copyfile(source, tmp)
            if filesystem_of(path.parent) in LOCAL_FS:
                with contextlib.suppress(sqlite3.Error):  # a file system without WAL: a rollback journal
                    _write_ahead_log(tmp)
            os.link(tmp, path)  # fails if the path exists by now: that store is kept
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    except Exception:  # noqa: BLE001 - any failure: MLflow makes the store itself
        return False
    return True
