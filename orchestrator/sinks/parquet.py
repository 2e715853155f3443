"""One Parquet file per trial, one row per round, under a hive partition per dictionary.

Layout: ``OUT/<sweep_id>/rounds/dictionary=<label>/<trial_id>.parquet``. Each write replaces a
trial's whole file (its full history so far) atomically, so a reader of the directory sees every
trial either before or after a round, never half a file.

The ``dictionary`` column lives only in the path. Storing it in the files as well makes
``pandas.read_parquet(dir)`` fail ("Unable to merge: Field dictionary has incompatible types:
string vs dictionary<...>") because pyarrow infers the partition field as dictionary-encoded;
with the path alone pandas, pyarrow and duckdb (``hive_partitioning=true``) all agree.
``read_rounds`` declares the partition as a plain string, so labels that look like numbers stay
strings.
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

from orchestrator import atomic

PARTITION = "dictionary"

SCHEMA = pa.schema([
    ("sweep_id", pa.string()),
    ("trial_id", pa.string()),
    ("seed", pa.int64()),
    ("dataset", pa.string()),
    ("model", pa.string()),
    ("dictionary", pa.string()),
    ("dictionary_kind", pa.string()),
    ("basis", pa.string()),
    ("tau", pa.float64()),
    ("rewind", pa.string()),
    # not in the original row list, but results.py groups curves by it: a random-mask or reinit
    # control must not be averaged into the curve it controls
    ("control", pa.string()),
    ("round", pa.int64()),
    ("kept", pa.int64()),
    ("total", pa.int64()),
    ("density", pa.float64()),
    ("compression", pa.float64()),
    ("test_accuracy", pa.float64()),
    ("test_loss", pa.float64()),
    ("val_accuracy", pa.float64()),
    ("train_accuracy", pa.float64()),
    ("train_loss", pa.float64()),
    ("epochs", pa.float64()),
    ("wall_seconds", pa.float64()),
    ("rank", pa.int64()),  # kept groups; null for ungrouped dictionaries
    ("status", pa.string()),
    ("config", pa.string()),
    # trial kind (imp, strong, construct) and what only constructive strong tickets report (null otherwise)
    ("kind", pa.string()),
    ("epsilon", pa.float64()),
    ("n", pa.int64()),
    ("target_accuracy", pa.float64()),
    ("max_weight_error", pa.float64()),
    ("mean_weight_error", pa.float64()),
    ("max_output_error", pa.float64()),
    ("kept_per_target", pa.float64()),
    ("random_per_target", pa.float64()),
    ("construct_seconds", pa.float64()),
])
FILE_SCHEMA = pa.schema([f for f in SCHEMA if f.name != PARTITION])
_PARTITIONING = ds.partitioning(pa.schema([SCHEMA.field(PARTITION)]), flavor="hive")
_DEFAULTS = {"control": "none"}

# a path segment every reader takes literally: no separators, no '=' or '%' (hive decoding),
# no leading '.' or '_' (pyarrow skips such names)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][^/\\=%\s]*")


def rounds_dir(out_dir: str | Path, sweep_id: str) -> Path:
    return Path(out_dir) / sweep_id / "rounds"


def trial_path(out_dir: str | Path, sweep_id: str, trial_id: str, dictionary_label: str) -> Path:
    for what, name in (("sweep_id", sweep_id), ("trial_id", trial_id), ("dictionary label", dictionary_label)):
        if not _SAFE_NAME.fullmatch(str(name)):
            raise ValueError(f"{what} {name!r} is not a safe path segment")
    return rounds_dir(out_dir, sweep_id) / f"{PARTITION}={dictionary_label}" / f"{trial_id}.parquet"


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


def write_trial(out_dir: str | Path, sweep_id: str, trial_id: str, dictionary_label: str, records: list[dict]) -> Path:
    """Replace the trial's file with ``records`` (its full history), one row per round, atomically."""
    path = trial_path(out_dir, sweep_id, trial_id, dictionary_label)
    table = _table(sweep_id, trial_id, records)
    with atomic.writing(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _empty() -> pd.DataFrame:
    return SCHEMA.empty_table().to_pandas()


def read_rounds(out_dir: str | Path, sweep_id: str) -> pd.DataFrame:
    """All rows of a sweep, sorted by trial and round; an empty frame with the columns if none."""
    root = rounds_dir(out_dir, sweep_id)
    if not root.is_dir():
        return _empty()
    # hidden names (atomic's temporaries) are skipped by the default ignore_prefixes
    dataset = ds.dataset(root, format="parquet", schema=SCHEMA, partitioning=_PARTITIONING)
    df = dataset.to_table().to_pandas()
    if df.empty:
        return _empty()
    return df.sort_values(["trial_id", "round"], kind="stable").reset_index(drop=True)[SCHEMA.names]


def trial_files(out_dir: str | Path, sweep_id: str) -> dict[str, Path]:
    """trial_id → its Parquet file."""
    root = rounds_dir(out_dir, sweep_id)
    return {p.stem: p for p in sorted(root.glob(f"{PARTITION}=*/*.parquet")) if not p.name.startswith(".")}


def completed_trials(out_dir: str | Path, sweep_id: str, rounds: int) -> set[str]:
    """Trial ids whose rows hold rounds 0 … rounds−1, all with status ok."""
    df = read_rounds(out_dir, sweep_id)
    ok = df[df["status"] == "ok"]
    needed = set(range(rounds))
    return {tid for tid, r in ok.groupby("trial_id")["round"] if needed <= set(r.tolist())}
