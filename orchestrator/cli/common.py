"""What every command shares: bad input as one line, loading a spec, the storage setting, finding
a sweep by key (on any storage: a local directory, a filesystem every node mounts, or S3)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from orchestrator.storage_setting import DEFAULT as STORAGE_DEFAULT
from orchestrator.storage_setting import ENV as STORAGE_ENV

if TYPE_CHECKING:  # orchestrator.storage imports pyarrow and pandas: `glth --help` does without
    from orchestrator.storage import Storage

EXIT_BAD_INPUT = 2
#: ``glth run``: every trial of the sweep failed, so there is nothing to analyse (1: some failed)
EXIT_ALL_FAILED = 3
EXIT_BUSY = 4  # another driver runs the sweep now
#: the exit statuses, as the CLI help and docs/reading-results.md list them
EXIT_STATUSES = (
    "exit status: 0 every trial complete; 1 some trials failed (the others are analysed); "
    "2 bad input (nothing run); 3 every trial failed (nothing to analyse); "
    "4 another driver runs this sweep now (nothing run); 130 interrupted"
)


class BadInput(Exception):
    """Anything the user can fix; printed as one line, exit status 2."""

    exit_status = EXIT_BAD_INPUT


class Busy(BadInput):
    """Another driver runs this sweep now (orchestrator.lease): one line naming it, exit status 4."""

    exit_status = EXIT_BUSY


def sweep_lease(where, check_only: bool = False):
    """The lease of the sweep directory ``where`` (``orchestrator.layout.SweepDir``) taken now
    (``orchestrator.lease.hold``), a context manager; with ``check_only`` only the refusal,
    nothing written. Busy when another driver holds it."""
    from orchestrator import lease

    try:
        if check_only:
            lease.Lease(where.store).check()
            return None
        return lease.hold(where.store)
    except lease.LeaseHeld as e:
        raise Busy(str(e)) from None
    except lease.BadLeaseSetting as e:
        raise BadInput(str(e)) from None


def load_sweep(path: Path, profile: str | None = None, overrides: list[str] | None = None):
    """The validated Sweep of a spec file, with the command line's ``PATH=VALUE`` overrides
    (orchestrator.overrides) applied and recorded; every problem is BadInput (nothing written, no Ray)."""
    from orchestrator import spec
    from orchestrator.overrides import OverrideError

    try:
        return spec.load(path, overrides=list(overrides or []), profile=profile)
    except (spec.SpecError, OverrideError) as e:
        raise BadInput(str(e)) from None


def storage_setting(flag: str | None, spec_value: str | None = None) -> tuple[str, str]:
    """``(value, source)`` of the storage setting: ``--storage`` > the spec's ``storage:`` >
    ``$GLTH_STORAGE`` > ``./glth-runs``; ``source`` names the setting in messages."""
    if flag:
        return flag, "--storage"
    if spec_value:
        return spec_value, "storage (the spec's storage: key)"
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV], STORAGE_ENV
    return STORAGE_DEFAULT, "storage (default ./glth-runs)"


def resolve_storage(flag: str | None, spec_value: str | None = None, check: bool = False) -> Storage:
    """The storage a command uses (precedence as ``storage_setting``); with ``check``, also
    ``Storage.check_writable()``. Any problem is BadInput naming the setting and the cause."""
    from orchestrator.storage import Storage, StorageError

    value, source = storage_setting(flag, spec_value)
    try:
        storage = Storage.resolve(value)
        if check:
            storage.check_writable()
    except StorageError as e:
        raise BadInput(f"{source}: {str(e).removeprefix('storage: ')}") from None
    return storage


def _spec_name(d: Path) -> str | None:
    try:
        raw = yaml.safe_load((d / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return str(raw.get("name")) if isinstance(raw, dict) and raw.get("name") is not None else None


def _is_sweep_dir(d: Path) -> bool:
    return d.is_dir() and (d / "spec.yaml").is_file()


def find_sweep(key: str, storage: str | None) -> Path | str:
    """The sweep directory that ``key`` names: a resolved local Path, or on an object store its
    ``s3://`` URI (``orchestrator.layout.SweepDir.at`` takes either).

    ``key`` may be a sweep directory's path (absolute or relative: what ``glth run`` printed; a
    directory inside it, such as its ``rounds/``, names it too), a sweep's URI
    (``s3://bucket/prefix/<sweep_id>`` or ``file:///abs/<sweep_id>``, or one inside it), a sweep id
    under ``storage`` (``--storage``, else ``$GLTH_STORAGE``, else ``./glth-runs``: a local path or
    ``s3://bucket/prefix``), a unique prefix of one, or the spec's ``name:``. The storage is only
    needed for the last three. Any failure is one line listing the sweeps there.
    """
    if "://" in key:
        return _find_by_uri(key)
    value, _ = storage_setting(storage)
    if "://" in value:
        store = resolve_storage(storage)
        if not store.is_local:
            return _find_in_store(key, store)
        root = Path(store.root)
    else:
        root = Path(value).expanduser()
    if root.is_dir() and _is_sweep_dir(root / key):
        return (root / key).resolve()
    as_path = Path(key).expanduser()
    if _is_sweep_dir(as_path):
        return as_path.resolve()
    if as_path.is_dir() and ("/" in key or as_path.is_absolute()):
        # a directory inside a sweep (its rounds/, as `glth run` prints it) names that sweep
        inside = next((d for d in as_path.resolve().parents[:3] if _is_sweep_dir(d)), None)
        if inside is not None:
            return inside
        raise BadInput(f"sweep: {key} is a directory but not a sweep (it has no spec.yaml)")
    if not root.is_dir():
        raise BadInput(
            f"sweep: {key!r} is not a sweep directory, and --storage {root} does not exist "
            f"(pass the sweep's directory, or --storage DIR holding it)"
        )
    dirs = sorted(d.name for d in root.iterdir() if _is_sweep_dir(d))
    return (root / _match(key, dirs, lambda n: _spec_name(root / n), root)).resolve()


def _match(key: str, names: list[str], spec_name, root) -> str:
    """The one sweep of ``names`` that ``key`` names (id, unique prefix, or the spec's name)."""
    match = [n for n in names if n.startswith(key)]
    named = [n for n in (match if len(match) > 1 else names) if spec_name(n) == key] if len(match) != 1 else []
    if len(match) != 1 and len(named) == 1:  # the name settles a prefix that is ambiguous (or none)
        match = named
    if len(match) != 1:
        listing = ", ".join(match or names) or "none"
        if match:
            raise BadInput(f"sweep: {key!r} is ambiguous under {root}; it matches {listing}")
        raise BadInput(f"sweep: {key!r} matches no sweep under {root}; sweeps: {listing}")
    return match[0]


def _remote(what: str, fn):
    """``fn()``, an object store's OSError (no such bucket, refused credentials) as one line."""
    from orchestrator.storage_check import aws_cause

    try:
        return fn()
    except OSError as e:
        raise BadInput(f"{what}: {aws_cause(e)}") from None


def _find_in_store(key: str, store: Storage) -> str:
    """A sweep id / prefix / name under an object-store root; its URI."""

    def spec_name(name: str) -> str | None:
        try:
            raw = yaml.safe_load(store.read_text(f"{name}/spec.yaml"))
        except (OSError, yaml.YAMLError):
            return None
        return str(raw.get("name")) if isinstance(raw, dict) and raw.get("name") is not None else None

    import pyarrow.fs as pafs

    bucket = _remote(f"--storage {store.uri}", lambda: store.filesystem.get_file_info(store.bucket))
    if bucket.type == pafs.FileType.NotFound:
        raise BadInput(f"--storage {store.uri}: bucket {store.bucket!r} does not exist")
    plain = "/" not in key and key not in ("", ".", "..")
    if plain and _remote(f"--storage {store.uri}", lambda: store.exists(f"{key}/spec.yaml")):
        return store.uri_of(key)
    names = _remote(f"--storage {store.uri}", lambda: [n for n in store.list() if store.exists(f"{n}/spec.yaml")])
    return store.uri_of(_match(key, names, spec_name, store.uri))


def _find_by_uri(key: str) -> Path | str:
    """A sweep named by its URI, or by the URI of a directory inside it (``…/<sweep_id>/rounds``)."""
    from orchestrator.storage import Storage, StorageError

    try:
        store = Storage.resolve(key)
    except StorageError as e:
        raise BadInput(f"sweep: {str(e).removeprefix('storage: ')}") from None
    if store.is_local:
        return find_sweep(store.root, None)
    parts = store.root.split("/")
    for n in range(len(parts), max(2, len(parts) - 3) - 1, -1):  # the sweep itself, then up to 3 levels up
        candidate = Storage.resolve("s3://" + "/".join(parts[:n]))
        if _remote(f"sweep: {key}", lambda: candidate.exists("spec.yaml")):  # noqa: B023 (called at once)
            return candidate.uri
    raise BadInput(f"sweep: {key} is not a sweep (no spec.yaml there or up to 3 levels above)")


def open_sweep(key: str, storage: str | None):
    """The ``orchestrator.layout.SweepDir`` that ``key`` names (``find_sweep``): the one handle a
    read command passes to everything it calls."""
    from orchestrator.layout import SweepDir

    return SweepDir.at(find_sweep(key, storage))


def read_rows(where, need_rows: bool = True):
    """The Parquet rows of the sweep directory ``where`` (a ``SweepDir``; BadInput when it has
    none yet and ``need_rows``)."""
    from orchestrator.sinks import parquet

    try:
        rows = _remote(f"sweep: {where.uri}", lambda: parquet.read_rounds(where))
    except parquet.DamagedRows as e:
        raise BadInput(f"sweep: {where.sweep_id}: {e}") from None
    if rows.empty and need_rows:
        raise BadInput(f"sweep: {where.sweep_id} has no rows yet")
    return rows


#: where read commands put what they derive from a sweep on an object store (never into the bucket)
OUTPUTS = "glth-outputs"


def outputs_dir(where) -> Path:
    """Where ``glth results`` / ``glth plot`` write analysis.parquet and plots/ for the sweep
    directory ``where`` (a ``SweepDir``): a local sweep's own directory; for a sweep on an object
    store, ``./glth-outputs/<sweep_id>/`` here (the bucket is only read, so read-only credentials do)."""
    if where.store.is_local:
        return Path(where.store.root)
    return Path.cwd() / OUTPUTS / where.sweep_id


def spec_text_of(where) -> str:
    """The spec.yaml of the sweep directory ``where`` (a ``SweepDir``), as it was run."""
    return _remote(f"sweep: {where.uri}", where.spec_text)
