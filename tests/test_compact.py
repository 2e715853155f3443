"""Compacted rows: finished trials' own files merged into one part per dictionary, each row read once.

Rows are written by the real writer (``parquet.write_trial``), on a local directory and on the
loopback S3 server; compaction is ``parquet_compact.compact``, killed for real (SIGKILL of the
process running it) where a test needs it dead between its write and its deletes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from test_sink_parquet import record

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet, parquet_compact, parquet_files
from orchestrator.storage import Storage

SWEEP = "sweep-abc"
COMPLETE = {f"c{i}": ("canonical" if i % 2 else "bottleneck-dct") for i in range(8)}
ROUNDS = 3  # record()'s config says rounds: 3; the files carry no rows_expected


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """A sweep directory on each backend, with ``raw()``: its row files as the storage lists them
    (names under ``rounds/``), independent of the reader under test."""
    if request.param == "local":
        root = tmp_path / "runs"
        d = SweepDir(Storage.resolve(str(root)), SWEEP)
        d.raw = lambda: sorted(str(p.relative_to(root / SWEEP / "rounds")) for p in root.rglob("*.parquet"))
    else:
        server = request.getfixturevalue("s3_env")
        bucket = server.make_bucket()
        d = SweepDir(Storage.resolve(f"s3://{bucket}/runs"), SWEEP)
        prefix = f"runs/{SWEEP}/rounds/"
        d.raw = lambda: sorted(k.removeprefix(prefix) for k in server.keys(bucket, prefix) if k.endswith(".parquet"))
    return d


def write(where: SweepDir, trial_id: str, label: str, rounds=range(ROUNDS), **extra) -> None:
    parquet.write_trial(where, trial_id, label, [record(trial_id, r, label, **extra) for r in rounds])


def fill(where: SweepDir) -> pd.DataFrame:
    """Eight complete trials in two partitions, one short and one failed; returns the rows."""
    for tid, label in COMPLETE.items():
        write(where, tid, label)
    write(where, "short", "canonical", range(2))
    write(where, "failed", "canonical", range(1), status="failed: NaN loss")
    return parquet.read_rounds(where)


def assert_same(rows: pd.DataFrame, reference: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(rows, reference, check_exact=True)


def compact_expecting(where: SweepDir, counts: tuple[int, int, int], files: list[str]) -> None:
    """Compact the complete trials; ``counts``: (trials folded, parts written, files deleted);
    ``files``: what is left, as ``<dictionary>/<name>`` without ``.parquet``."""
    done = parquet_compact.compact(where, parquet.completed_trials(where, ROUNDS))
    assert (done.trials, done.parts, done.deleted) == counts
    assert where.raw() == [f"dictionary={f}.parquet" for f in files]


def test_compaction_keeps_every_row_and_dtype_and_leaves_one_part_per_partition(where):
    before = fill(where)
    assert len(before) == 8 * ROUNDS + 2 + 1
    c1 = pd.DataFrame(parquet.read_trial(where, "c1", "canonical"))
    compact_expecting(
        where, (8, 2, 8), ["bottleneck-dct/part-000001", "canonical/failed", "canonical/part-000001", "canonical/short"]
    )
    after = parquet.read_rounds(where)
    assert_same(after, before)
    assert list(after.dtypes) == list(before.dtypes) and after["round"].dtype == "int64"
    assert set(parquet.trial_files(where)) == {"short", "failed"}
    # the writer's view of a compacted trial: its rows from the part, as from its own file before
    assert_same(pd.DataFrame(parquet.read_trial(where, "c1", "canonical")), c1)
    assert c1["round"].tolist() == [0, 1, 2]
    assert parquet.read_trial(where, "c9", "canonical") == []
    if where.store.is_local:  # readers of the directory itself agree once the deletes are done
        rounds = where.location / "rounds"
        assert len(pd.read_parquet(rounds)) == len(before)
        assert len(duckdb.sql(f"SELECT * FROM read_parquet('{rounds}/**/*.parquet')").df()) == len(before)

    # the short trial finishes: the next compaction folds it and part 1 into part 2
    write(where, "short", "canonical", range(ROUNDS))
    grown = parquet.read_rounds(where)
    assert len(grown) == len(before) + 1
    compact_expecting(where, (1, 1, 2), ["bottleneck-dct/part-000001", "canonical/failed", "canonical/part-000002"])
    assert_same(parquet.read_rounds(where), grown)
    assert parquet_compact.compact(where, parquet.completed_trials(where, ROUNDS)).parts == 0


def test_a_trial_rewritten_after_compaction_is_read_once_from_its_newer_file(where):
    """A trial rerun after compaction (``--force``, a heal) gets its own file again: it wins over
    its copy in the part, and the next compaction replaces the copy."""
    before = fill(where)
    parquet_compact.compact(where, parquet.completed_trials(where, ROUNDS))
    write(where, "c1", "canonical", test_loss=7.0)  # the writer continues from read_trial's rows
    rows = parquet.read_rounds(where)
    assert len(rows) == len(before) and not rows.duplicated(["trial_id", "round"]).any()
    assert rows[rows.trial_id == "c1"].test_loss.tolist() == [7.0] * ROUNDS
    assert rows[rows.trial_id == "c3"].test_loss.tolist() == before[before.trial_id == "c3"].test_loss.tolist()
    parquet_compact.compact(where, parquet.completed_trials(where, ROUNDS))
    assert_same(parquet.read_rounds(where), rows)
    assert "dictionary=canonical/c1.parquet" not in where.raw()


def test_the_drivers_writer_continues_a_compacted_trial_from_its_copy_in_the_part(where):
    """A compacted trial reported again (a ``--force`` rerun's first round): the writer starts from
    its rows in the part, as from its own file, and its new own file then wins."""
    from orchestrator.sinks.parquet_writer import ParquetWriter

    before = fill(where)
    parquet_compact.compact(where, set(COMPLETE))
    writer = ParquetWriter(where)
    writer.hold([{**record("c1", 1, "canonical", test_loss=5.0), "dictionary": "canonical"}])
    writer.hold([{**record("c3", 0, "canonical", test_loss=6.0), "dictionary": "canonical"}])
    writer.flush()
    assert writer.parts == {"canonical": "rounds/dictionary=canonical/part-000001.parquet"}  # listed once
    rows = parquet.read_rounds(where)
    assert len(rows) == len(before) and not rows.duplicated(["trial_id", "round"]).any()
    assert rows[rows.trial_id == "c1"].test_loss.tolist() == [0.3, 5.0, 0.3]
    assert rows[rows.trial_id == "c3"].test_loss.tolist() == [6.0, 0.3, 0.3]
    assert set(parquet.trial_files(where)) == {"c1", "c3", "short", "failed"}


def test_a_reader_running_while_compactions_run_sees_every_row_exactly_once(where):
    reference = fill(where)
    keys = sorted(zip(reference.trial_id, reference["round"]))
    seen, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                rows = parquet.read_rounds(where)
                seen.append(sorted(zip(rows.trial_id, rows["round"])) == keys and rows.equals(reference))
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(6):  # each time some trials get their own file again (same rows), then compact
            for tid in list(COMPLETE)[i % 4 :: 4]:
                write(where, tid, COMPLETE[tid])
            parquet_compact.compact(where, set(COMPLETE))
    finally:
        stop.set()
        t.join()
    assert errors == []
    print(f"\n{len(seen)} reads during 6 compactions on {where.store.scheme}: all exactly once: {all(seen)}")
    assert len(seen) >= 3 and all(seen)


KILLER = """
import os, signal, sys
from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet_compact
from orchestrator.storage import Storage

after = int(sys.argv[2])
deletes, real = [0], Storage.delete_files

def delete_files(self, rels):  # the fault: SIGKILL of this process after `after` files deleted
    for rel in rels:
        if deletes[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        deletes[0] += 1
        real(self, [rel])

Storage.delete_files = delete_files
parquet_compact.compact(SweepDir.at(sys.argv[1]), set(sys.argv[3].split(",")))
"""


def compact_killed(where: SweepDir, after_deletes: int, complete) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLER), where.uri, str(after_deletes), ",".join(sorted(complete))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.parametrize("after_deletes", [0, 3, 4])
def test_a_compaction_killed_between_its_write_and_its_deletes_leaves_every_row_once(where, after_deletes):
    """Partitions are compacted in name order: bottleneck-dct's part is written, then its 4 files
    deleted, then canonical's part; killed at the first delete, the 4th, or canonical's first."""
    reference = fill(where)
    compact_killed(where, after_deletes, COMPLETE)
    left = where.raw()
    print(f"\nkilled after {after_deletes} deletes on {where.store.scheme}: {left}")
    parts = [n for n in left if "/part-" in n]
    assert len(parts) == (2 if after_deletes == 4 else 1) and len(left) == 10 - after_deletes + len(parts)
    assert_same(parquet.read_rounds(where), reference)
    assert parquet.completed_trials(where, ROUNDS) == set(COMPLETE)

    parquet_compact.compact(where, set(COMPLETE))  # the next compaction folds the leftovers
    assert_same(parquet.read_rounds(where), reference)
    left = where.raw()
    assert [n.split("/part-")[0] for n in left if "/part-" in n] == [
        "dictionary=bottleneck-dct",
        "dictionary=canonical",
    ]
    assert [n for n in left if "/part-" not in n] == [
        "dictionary=canonical/failed.parquet",
        "dictionary=canonical/short.parquet",
    ]


def test_a_compaction_killed_before_deleting_the_part_it_replaces_leaves_every_row_once(where):
    reference = fill(where)
    parquet_compact.compact(where, set(COMPLETE))
    write(where, "c1", "canonical")
    compact_killed(where, 1, COMPLETE)  # c1's file deleted, killed before part 1 of canonical is
    assert [n for n in where.raw() if "canonical/part" in n] == [
        "dictionary=canonical/part-000001.parquet",
        "dictionary=canonical/part-000002.parquet",
    ]
    assert_same(parquet.read_rounds(where), reference)
    assert parquet_compact.compact(where, set(COMPLETE)).deleted == 1  # only the leftover part
    assert_same(parquet.read_rounds(where), reference)
    assert [n for n in where.raw() if "part" in n] == [
        "dictionary=bottleneck-dct/part-000001.parquet",
        "dictionary=canonical/part-000002.parquet",
    ]


def test_a_damaged_part_is_named_and_dropped_like_a_damaged_trial_file(tmp_path, capsys):
    where = SweepDir(Storage.resolve(str(tmp_path)), SWEEP)
    fill(where)
    parquet_compact.compact(where, set(COMPLETE))
    part = where.location / "rounds" / "dictionary=canonical" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(parquet.DamagedRows) as e:
        parquet.read_rounds(where)
    assert list(e.value.files) == ["rounds/dictionary=canonical/part-000001.parquet"]
    skipped = parquet.read_rounds(where, skip_damaged=True)
    assert set(skipped.trial_id) == {"c0", "c2", "c4", "c6", "short", "failed"}
    write(where, "short", "canonical")  # finished now: compacting canonical has to read the part
    parquet_compact.compact_finished(where, {"short"})
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("[glth] rows not compacted (") and "next run" in said[0]
    assert list(parquet.drop_damaged(where)) == [str(part)] and not part.exists()
    parquet_compact.compact_finished(where, {"short"})
    assert "rows of 1 finished trial(s) compacted into 1 file(s)" in capsys.readouterr().err


def test_the_compaction_threshold_setting(monkeypatch):
    assert parquet_compact.min_trials() == 100
    monkeypatch.setenv("GLTH_COMPACT_MIN_TRIALS", "0")
    assert parquet_compact.min_trials() == 0
    monkeypatch.setenv("GLTH_COMPACT_MIN_TRIALS", "-3")
    with pytest.raises(ValueError, match="GLTH_COMPACT_MIN_TRIALS: '-3' is not a whole number"):
        parquet_compact.min_trials()


def test_a_reader_whose_listed_files_a_compaction_deleted_lists_again(where):
    reference = fill(where)
    dataset, files = parquet.listed(where.store)  # what a reader listed just before the compaction
    parquet_compact.compact(where, set(COMPLETE))
    with pytest.raises(OSError):  # its files are gone: reading that listing fails …
        parquet_files.read(where.store, dataset, files, parquet.SCHEMA)
    assert_same(parquet.read_rounds(where), reference)  # … so read_rounds lists again


def test_bench_compact_at_a_tiny_size_measures_every_number(tmp_path):
    """``benchmarks/bench_compact.py`` end to end on a 10 × 2 synthetic sweep, locally: the counts
    it reports (timings are not asserted: they depend on the machine)."""
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "compact.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    args = ["--synthetic", "10x2", "--repeats", "1", "--no-s3", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "bench_compact.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    local = json.loads(out.read_text())["local"]
    assert (local["rows"], local["files_before"], local["files_after"], local["trials_compacted"]) == (20, 10, 5, 10)
    assert all(
        math.isfinite(local[k]) and local[k] > 0 for k in ("read_before_s", "read_after_s", "compact_s", "completion_s")
    )
    assert "compact 10 trials x 2 rounds (20 rows), local" in done.stdout
