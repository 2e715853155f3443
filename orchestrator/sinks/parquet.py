"""One Parquet file per trial, one row per round, under a hive partition per dictionary.

Layout: ``OUT/<sweep_id>/rounds/dictionary=<label>/<trial_id>.parquet``. Each write replaces a
trial's whole file (its full history so far) atomically, so a reader of the directory sees every
trial either before or after a round, never half a file. A large sweep's finished trials are
later merged into one ``part-<n>.parquet`` per partition (``parquet_compact``); which files hold
which rows, and how the readers here see each row once, is ``parquet_files``'.

The ``dictionary`` column lives only in the path. Storing it in the files as well makes
``pandas.read_parquet(dir)`` fail ("Unable to merge: Field dictionary has incompatible types:
string vs dictionary<...>") because pyarrow infers the partition field as dictionary-encoded;
with the path alone pandas, pyarrow and duckdb (``hive_partitioning=true``) all agree.
``read_rounds`` declares the partition as a plain string, so labels that look like numbers stay
strings.

Every function takes the sweep's directory (``orchestrator.layout.SweepDir``), resolved once by
whoever names the sweep (``run_sweep``, the CLI); nothing here resolves a storage setting.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from glth_core import kinds
from orchestrator.layout import ROUNDS, SweepDir
from orchestrator.sinks import parquet_files
from orchestrator.storage import Storage

PARTITION = "dictionary"
_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string()}
#: columns of every row that the orchestrator adds (the trial's identity and status)
META = {
    "sweep_id": str,
    "trial_id": str,
    "kind": str,
    "run_name": str,
    "rows_expected": int,
    "seed": int,
    "dataset": str,
    "model": str,
}
TAIL = {"status": str, "config": str}
#: the schema follows from the trial kinds' declared columns (``glth_core.kinds.columns``)
SCHEMA = pa.schema([(name, _ARROW[t]) for name, t in {**META, **kinds.columns(), **TAIL}.items()])
FILE_SCHEMA = pa.schema([f for f in SCHEMA if f.name != PARTITION])
_PARTITIONING = ds.partitioning(pa.schema([SCHEMA.field(PARTITION)]), flavor="hive")
_DEFAULTS = {"control": "none"}
_READ_TRIES = 10  # listings a reader makes while compactions move rows under it

# a path segment every reader takes literally: no separators, no '=' or '%' (hive decoding),
# no leading '.' or '_' (pyarrow skips such names)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][^/\\=%\s]*")


def _relative(trial_id: str, dictionary_label: str) -> str:
    for what, name in (("trial_id", trial_id), ("dictionary label", dictionary_label)):
        if not _SAFE_NAME.fullmatch(str(name)):
            raise ValueError(f"{what} {name!r} is not a safe path segment")
    if parquet_files.is_part_name(f"{trial_id}{parquet_files.SUFFIX}"):
        raise ValueError(f"trial_id {trial_id!r} is a compacted part's name")
    return f"{ROUNDS}/{PARTITION}={dictionary_label}/{trial_id}.parquet"


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _cell(v, type_: pa.DataType):
    """A record value as the column's Python type (rows read back by pandas carry NaN for null)."""
    if pa.types.is_floating(type_):
        return None if v is None or v is pd.NA else float(v)
    if _missing(v):
        return None
    if pa.types.is_integer(type_):
        return int(v)
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def _table(sweep_id: str, trial_id: str, records: list[dict]) -> pa.Table:
    by_round: dict[int, dict] = {}
    for r in records:
        if r.get("trial_id", trial_id) != trial_id or r.get("sweep_id", sweep_id) != sweep_id:
            raise ValueError(f"record of {r.get('sweep_id')}/{r.get('trial_id')} written as {sweep_id}/{trial_id}")
        by_round[int(r["round"])] = r  # last wins
    rows = [{**_DEFAULTS, **by_round[k], "sweep_id": sweep_id, "trial_id": trial_id} for k in sorted(by_round)]
    columns = {f.name: pa.array([_cell(r.get(f.name), f.type) for r in rows], type=f.type) for f in FILE_SCHEMA}
    return pa.table(columns, schema=FILE_SCHEMA)


def write_trial(where: SweepDir, trial_id: str, dictionary_label: str, records: list[dict]) -> str:
    """Replace the trial's file with ``records`` (its full history), one row per round, atomically."""
    if not _SAFE_NAME.fullmatch(str(where.sweep_id)):
        raise ValueError(f"sweep_id {where.sweep_id!r} is not a safe path segment")
    table = _table(where.sweep_id, trial_id, records)
    return where.store.write_parquet(_relative(trial_id, dictionary_label), table)


def _empty() -> pd.DataFrame:
    return SCHEMA.empty_table().to_pandas()


class DamagedRows(ValueError):
    """Row files of a sweep that cannot be read: one line naming them and how to rebuild them."""

    def __init__(self, store: Storage, damaged: dict[str, str]):
        self.files = dict(damaged)  # path relative to the sweep directory → why it cannot be read
        first, cause = next(iter(self.files.items()))
        more = f" and {len(self.files) - 1} more" if len(self.files) > 1 else ""
        spec = store.uri_of("spec.yaml") if store.is_local else f"SPEC (as run: {store.uri_of('spec.yaml')})"
        super().__init__(
            f"rows file {store.uri_of(first)}{more} unreadable ({cause}); rebuild it from its trial's "
            f"resume state by rerunning the sweep: glth run {spec} --storage {store.uri.rpartition('/')[0]}"
        )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def listed(store: Storage) -> tuple[ds.Dataset, parquet_files.RowFiles]:
    """A dataset over ``rounds/`` and the row files it found (one listing)."""
    # hidden names (atomic's temporaries) are skipped by open_dataset; older files lack newer
    # columns, which read as nulls
    dataset = store.open_dataset(ROUNDS, schema=SCHEMA, partitioning=_PARTITIONING)
    return dataset, parquet_files.listing(store, dataset)


def _damaged(store: Storage, rels: list[str]) -> dict[str, str]:
    damaged = {}
    for rel in rels:
        try:
            pq.read_table(pa.BufferReader(store.read_bytes(rel)), schema=FILE_SCHEMA)
        except (pa.ArrowException, OSError) as e:
            damaged[rel] = (
                _one_line(e).removeprefix("Could not open Parquet input source '<Buffer>': ") or type(e).__name__
            )
    return damaged


def damaged_files(where: SweepDir) -> dict[str, str]:
    """This sweep's row files (own files and parts) that cannot be read whole: relative path → why."""
    return _damaged(where.store, listed(where.store)[1].all)


def _read_table(store: Storage, skip_damaged: bool) -> pa.Table:
    """The rows by ``parquet_files``' rule; listed again and read again while a compaction moves
    rows between the listing and the read (a listed file gone)."""
    for _ in range(_READ_TRIES):
        dataset, files = listed(store)
        try:
            return parquet_files.read(store, dataset, files, SCHEMA)
        except (pa.ArrowException, OSError):
            if listed(store)[1] != files:
                continue
            damaged = _damaged(store, files.all)
            if not damaged:  # not a file's fault (a network error): as it was
                raise
            if not skip_damaged:
                raise DamagedRows(store, damaged) from None
            return parquet_files.read(store, dataset, files, SCHEMA, skip=set(damaged))
    return parquet_files.read(store, *listed(store), SCHEMA)


def read_rounds(where: SweepDir, skip_damaged: bool = False) -> pd.DataFrame:
    """All rows of a sweep, each once, sorted by trial and round; an empty frame with the columns
    if none. A file that cannot be read (truncated, overwritten) raises DamagedRows naming it, or
    with ``skip_damaged`` is left out (its trials without rows)."""
    df = _read_table(where.store, skip_damaged).to_pandas()
    if df.empty:
        return _empty()
    return df.sort_values(["trial_id", "round"], kind="stable").reset_index(drop=True)[SCHEMA.names]


def drop_damaged(where: SweepDir) -> dict[str, str]:
    """Delete this sweep's unreadable row files, so that the run rebuilds each from its trial's
    resume state (or recomputes it); returns their URIs → why. The driver's, under its lease."""
    store = where.store
    try:
        read_rounds(where)
        return {}
    except DamagedRows as e:
        for rel in e.files:
            store.delete(rel)
        return {store.uri_of(rel): cause for rel, cause in e.files.items()}


def live_part(where: SweepDir, dictionary_label: str) -> str | None:
    """The live part of a dictionary's partition (``parquet_files``), None when it has none: one
    listing of the partition."""
    folder = f"{ROUNDS}/{PARTITION}={dictionary_label}"
    return next(iter(parquet_files.RowFiles.of([f"{folder}/{n}" for n in where.store.list(folder)]).live), None)


def read_trial(where: SweepDir, trial_id: str, dictionary_label: str, parts: dict | None = None) -> list[dict]:
    """One trial's rows as records: its own file's, else its copy in its partition's live part
    (``parquet_files``); [] when it has none, or an unreadable file (its rows are then rewritten
    whole from what the trial reports). ``parts``: label → live part, filled as partitions are
    listed (the driver's writer keeps it: no compaction runs while it writes)."""
    store = where.store
    rel = _relative(trial_id, dictionary_label)
    try:
        if store.exists(rel):
            table = pq.read_table(pa.BufferReader(store.read_bytes(rel)), schema=FILE_SCHEMA)
        else:
            parts = {} if parts is None else parts
            if dictionary_label not in parts:
                parts[dictionary_label] = live_part(where, dictionary_label)
            if parts[dictionary_label] is None:
                return []
            filters = [("trial_id", "==", trial_id)]
            table = pq.read_table(
                store.fs_path(parts[dictionary_label]), filesystem=store.filesystem, schema=FILE_SCHEMA, filters=filters
            )
    except pa.ArrowException:
        return []
    return table.to_pandas().to_dict("records")


def trial_files(where: SweepDir) -> dict[str, Path | str]:
    """trial_id → its own Parquet file (a local Path, or a URI on an object store); a trial whose
    rows were compacted into a part has none."""
    store = where.store
    return {
        tid: Path(store.fs_path(rel)) if store.is_local else store.uri_of(rel)
        for tid, rel in listed(store)[1].own.items()
    }


def completed_trials(where: SweepDir, rounds: int | None = None, df: pd.DataFrame | None = None) -> set[str]:
    """Trial ids whose ok rows hold rounds 0 … n−1, n their ``rows_expected`` (or ``rounds``); an
    unreadable file holds none. ``df``: the sweep's rows already read (``read_rounds``)."""
    if df is None:
        df = read_rounds(where, skip_damaged=True)
    ok = df[df["status"] == "ok"]
    done = set()
    for tid, rows in ok.groupby("trial_id"):
        expected = rows["rows_expected"].dropna()
        n = int(expected.iloc[0]) if len(expected) else rounds
        if n is not None and set(range(n)) <= set(rows["round"].tolist()):
            done.add(tid)
    return done
