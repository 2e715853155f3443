"""Compaction: the own files of a sweep's finished trials merged into one part per dictionary.

A sweep of thousands of trials is thousands of row files (objects, on S3) that every read lists
and opens; compacted, it is one file per dictionary partition, plus the own files of the trials
that are not finished. For each partition with own files of complete trials (every round ok:
``parquet.completed_trials``; their rows are final), part n+1 is written holding

    the rows of the live part n (``parquet_files``), but those of trials that have an own file
    + the rows of the complete trials' own files

sorted by trial and round, atomically (a local temporary name then a rename; one PUT on S3).
Only then are the own files it folded and every older part deleted. A failed or unfinished
trial keeps its own file: it is rewritten when it runs again, and folded once it is complete.

Killed anywhere (a driver SIGKILLed, a node lost), it leaves what ``parquet_files``' rule reads
exactly once: before the write nothing changed; after it, the older parts are ignored and an own
file not yet deleted wins over its identical copy. The next compaction folds such an own file
again (same rows) and deletes the leftovers. No cell changes: the same rows in the same schema.

Who and when: the driver, under the sweep's lease, at the end of ``run_sweep`` (after MLflow got
each trial's ``rounds.parquet``), for sweeps of at least ``GLTH_COMPACT_MIN_TRIALS`` trials
(default 100: a small sweep keeps one file per trial, easy to look at, and reads fast anyway).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pyarrow as pa

from orchestrator.layout import ROUNDS, SweepDir
from orchestrator.sinks import parquet, parquet_files

MIN_TRIALS_ENV = "GLTH_COMPACT_MIN_TRIALS"
MIN_TRIALS = 100
#: rows per row group of a part: a trial's rows are found (``parquet.read_trial``) by reading the
#: footer and the one group whose trial-id range holds it, not the whole part
ROW_GROUP = 4096


@dataclass
class Compacted:
    trials: int = 0  # own files folded into parts
    parts: int = 0  # parts written
    deleted: int = 0  # files deleted: the own files folded and the parts replaced


def min_trials() -> int:
    """``GLTH_COMPACT_MIN_TRIALS`` (default 100; 0 never compacts); ValueError, one line, if it is
    not a whole number ≥ 0."""
    raw = os.environ.get(MIN_TRIALS_ENV, "").strip()
    if not raw:
        return MIN_TRIALS
    if not raw.isdigit():
        raise ValueError(f"{MIN_TRIALS_ENV}: {raw!r} is not a whole number of trials ≥ 0 (0: never compact)")
    return int(raw)


def _merged(where: SweepDir, dataset, files: parquet_files.RowFiles, partition: str, fold: dict) -> pa.Table:
    own = files.own_in(partition)
    here = parquet_files.RowFiles(own, {partition: files.parts[partition]} if partition in files.parts else {})
    unfolded = {rel for tid, rel in own.items() if tid not in fold}
    table = parquet_files.read(where.store, dataset, here, parquet.SCHEMA, skip=unfolded)
    table = table.select(parquet.FILE_SCHEMA.names).cast(parquet.FILE_SCHEMA)
    return table.sort_by([("trial_id", "ascending"), ("round", "ascending")])


def compact(where: SweepDir, complete: set[str] | None = None) -> Compacted:
    """Fold the own files of the trials in ``complete`` (default: ``parquet.completed_trials``)
    into a new part per partition, then delete what it replaces. The driver's, under its lease."""
    store = where.store
    dataset, files = parquet.listed(store)
    if complete is None:
        complete = parquet.completed_trials(where)
    done = Compacted()
    for partition in files.partitions():
        fold = {tid: rel for tid, rel in files.own_in(partition).items() if tid in complete}
        parts = files.parts.get(partition, [])
        replaced = parts[:-1]  # leftovers of a compaction killed before its deletes
        if fold:
            table = _merged(where, dataset, files, partition, fold)
            number = parquet_files.part_number(parts[-1]) + 1 if parts else 1
            rel = f"{ROUNDS}/{partition}/{parquet_files.part_name(number)}"
            store.write_parquet(rel, table, row_group_size=ROW_GROUP)
            done.trials, done.parts = done.trials + len(fold), done.parts + 1
            replaced = [*fold.values(), *parts]
        store.delete_files(replaced)
        done.deleted += len(replaced)
    return done


def compact_finished(where: SweepDir, complete: set[str]) -> None:
    """``compact`` at the end of a run, said in one line; a storage that fails only leaves the
    files as they are, for the next run."""
    try:
        done = compact(where, complete)
    except (OSError, pa.ArrowException) as e:
        cause = " ".join(str(e).split())[:200] or type(e).__name__
        print(f"[glth] rows not compacted ({cause}); the next run of the sweep tries again", file=sys.stderr)
        return
    if done.trials:
        print(
            f"[glth] rows of {done.trials} finished trial(s) compacted into {done.parts} file(s), one per dictionary",
            file=sys.stderr,
        )
