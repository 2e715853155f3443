"""What every command shares: bad input as one line, loading a spec, finding a sweep by key."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator import defaults

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """Anything the user can fix; printed as one line, exit status 2."""


def load_sweep(path: Path, profile: str | None = None, overrides: list[str] | None = None):
    """The validated Sweep of a spec file, with the command line's ``PATH=VALUE`` overrides
    (orchestrator.overrides) applied and recorded; every problem is BadInput (nothing written, no Ray)."""
    from orchestrator import spec
    from orchestrator.overrides import OverrideError

    try:
        return spec.load(path, overrides=list(overrides or []), profile=profile)
    except (spec.SpecError, OverrideError) as e:
        raise BadInput(str(e)) from None


def _spec_name(d: Path) -> str | None:
    try:
        raw = yaml.safe_load((d / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return str(raw.get("name")) if isinstance(raw, dict) and raw.get("name") is not None else None


def _is_sweep_dir(d: Path) -> bool:
    return d.is_dir() and (d / "spec.yaml").is_file()


def find_sweep(key: str, storage: str | None) -> Path:
    """The sweep directory that ``key`` names, resolved (absolute).

    ``key`` may be a sweep directory's path (absolute or relative: what ``glth run`` printed; a
    directory inside it, such as its ``rounds/``, names it too), a
    sweep id under ``storage``, a unique prefix of one, or the spec's ``name:``. The storage root
    is only needed for the last three. Any failure is one line listing the sweeps there.
    """
    root = Path(defaults.storage(storage)).expanduser()
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
        raise BadInput(f"sweep: {key!r} is not a sweep directory, and --storage {root} does not exist "
                       f"(pass the sweep's directory, or --storage DIR holding it)")
    dirs = sorted(d for d in root.iterdir() if _is_sweep_dir(d))
    match = [d for d in dirs if d.name.startswith(key)]
    named = [d for d in (match if len(match) > 1 else dirs) if _spec_name(d) == key]
    if len(match) != 1 and len(named) == 1:  # the name settles a prefix that is ambiguous (or none)
        match = named
    if len(match) != 1:
        names = ", ".join(d.name for d in (match or dirs)) or "none"
        if match:
            raise BadInput(f"sweep: {key!r} is ambiguous under {root}; it matches {names}")
        raise BadInput(f"sweep: {key!r} matches no sweep under {root}; sweeps: {names}")
    return match[0].resolve()


def read_rows(d: Path, need_rows: bool = True):
    """A sweep directory's Parquet rows (BadInput when it has none yet and ``need_rows``)."""
    from orchestrator.sinks import parquet

    rows = parquet.read_rounds(d.parent, d.name)
    if rows.empty and need_rows:
        raise BadInput(f"sweep: {d.name} has no rows yet")
    return rows
