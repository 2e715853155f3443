"""Which files under a sweep's ``rounds/`` a reader reads: trials' own files and compacted parts.

    rounds/dictionary=<label>/<trial_id>.parquet   a trial's own file (``parquet.write_trial``)
    rounds/dictionary=<label>/part-<n>.parquet     a part: the rows of many finished trials
                                                   (``parquet_compact.compact``), n = 1, 2, …

The rule every glth reader follows (``parquet.read_rounds``, ``parquet.read_trial``), so that each
row is seen exactly once at every moment — while a compaction runs, and after one died midway:

- in each partition only the part with the highest number is read (the *live* part). A compaction
  writes part n+1 holding every row part n held (but those of trials with an own file), and only
  then deletes what it replaces; a lower part is a leftover that a reader ignores;
- a trial's own file wins over a part's copy of that trial: a part's rows are read without the
  trial ids that have an own file. An own file next to a copy in a part is either the very file
  the part was made from (a compaction between its write and its deletes, or killed there) or
  newer (the trial was rerun after compaction: ``--force``, a heal), so it is the one to read;
- a file that disappears between the listing and the read (a compaction deleted it) makes the
  reader list again and read again (``parquet.read_rounds``).

Parts are never rewritten (a new one gets the next number), so what a reader listed is still what
it reads, or is gone. Only the driver compacts, under the sweep's lease, once its row writes have
all landed (``parquet_writer`` flushed at the experiment's end, ``orchestrator.sweep``): no
compaction races another or a trial's write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as ds

from orchestrator.layout import ROUNDS
from orchestrator.storage import Storage

_PART = re.compile(r"part-(\d+)\.parquet")
SUFFIX = ".parquet"


def part_name(number: int) -> str:
    return f"part-{number:06d}{SUFFIX}"


def is_part_name(name: str) -> bool:
    return _PART.fullmatch(name) is not None


def part_number(rel: str) -> int:
    return int(_PART.fullmatch(rel.rpartition("/")[2]).group(1))


@dataclass(frozen=True)
class RowFiles:
    """One listing of ``rounds/``: paths relative to the sweep directory."""

    own: dict[str, str] = field(default_factory=dict)  # trial_id → its own file
    parts: dict[str, list[str]] = field(default_factory=dict)  # partition folder → its parts, oldest first

    @classmethod
    def of(cls, rels: list[str]) -> "RowFiles":
        """``rels``: the ``.parquet`` files under ``rounds/`` (``rounds/<partition>/<name>``)."""
        own, parts = {}, {}
        for rel in sorted(rels):
            segments = rel.split("/")
            if len(segments) != 3 or segments[0] != ROUNDS or not segments[2].endswith(SUFFIX):
                continue
            if is_part_name(segments[2]):
                parts.setdefault(segments[1], []).append(rel)
            else:
                own[segments[2][: -len(SUFFIX)]] = rel
        return cls(own, {p: sorted(rs, key=part_number) for p, rs in parts.items()})

    @property
    def live(self) -> list[str]:
        """Each partition's part with the highest number."""
        return [rs[-1] for rs in self.parts.values()]

    @property
    def all(self) -> list[str]:
        return sorted([*self.own.values(), *(r for rs in self.parts.values() for r in rs)])

    def own_in(self, partition: str) -> dict[str, str]:
        return {tid: rel for tid, rel in self.own.items() if rel.split("/")[1] == partition}

    def partitions(self) -> list[str]:
        return sorted({*self.parts, *(rel.split("/")[1] for rel in self.own.values())})


def rel_of(store: Storage, fs_path: str) -> str:
    return fs_path[len(store.fs_path()) + 1 :]


def listing(store: Storage, dataset: ds.Dataset) -> RowFiles:
    """The row files a dataset over ``rounds/`` found (one listing of the storage)."""
    return RowFiles.of([rel_of(store, p) for p in dataset.files])


def read(store: Storage, dataset: ds.Dataset, files: RowFiles, schema: pa.Schema, skip=frozenset()) -> pa.Table:
    """The rows of ``files`` by the rule above (``dataset``: the one they were listed from; the
    files in ``skip`` left out), in ``schema``."""
    by_rel = {rel_of(store, f.path): f for f in dataset.get_fragments()}

    def scan(rels: list[str], **kw) -> pa.Table:
        fragments = [by_rel[r] for r in rels if r not in skip]
        return ds.FileSystemDataset(fragments, schema, dataset.format, store.filesystem).to_table(**kw)

    tables = [scan(list(files.own.values()))]
    if files.live:
        overridden = ~ds.field("trial_id").isin(sorted(files.own)) if files.own else None
        tables.append(scan(files.live, filter=overridden))
    return pa.concat_tables(tables)
