"""The Parquet sink: hive layout read by pandas and duckdb, idempotent rewrites, atomic replacement."""

from __future__ import annotations

import json
import threading

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator import atomic
from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

SWEEP = "sweep-abc"


def record(trial_id: str, rnd: int, dictionary: str, status: str = "ok", **extra) -> dict:
    kept = int(1000 * 0.8**rnd)
    return {
        "sweep_id": SWEEP,
        "trial_id": trial_id,
        "seed": 0,
        "dataset": "digits",
        "model": "mlp_300_100",
        "dictionary": dictionary,
        "dictionary_kind": dictionary.split("-")[0],
        "basis": "",
        "tau": 0.2,
        "rewind": "init",
        "control": "none",
        "round": rnd,
        "kept": kept,
        "total": 1000,
        "density": kept / 1000,
        "compression": 1 - kept / 1000,
        "test_accuracy": 0.9 - 0.01 * rnd,
        "test_loss": 0.3,
        "val_accuracy": 0.9,
        "train_accuracy": 0.95,
        "train_loss": 0.2,
        "epochs": 2.0,
        "wall_seconds": 1.5,
        "rank": 10 - rnd if dictionary.startswith("bottleneck") else None,
        "status": status,
        "config": json.dumps({"rounds": 3, "trial": trial_id}),
        "kept_inputs": [1, 2],  # an extra key: ignored
        **extra,
    }


def write(out, trial_id, dictionary, rounds, **extra) -> None:
    rows = [record(trial_id, r, dictionary, **extra) for r in rounds]
    parquet.write_trial(SweepDir.under(out, SWEEP), trial_id, dictionary, rows)


def duck(out) -> pd.DataFrame:
    glob = out / SWEEP / "rounds" / "**" / "*.parquet"
    return duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true)").df()


@pytest.fixture
def two_trials(tmp_path):
    write(tmp_path, "t1", "canonical", range(3))
    write(tmp_path, "t2", "bottleneck-dct", range(3))
    return tmp_path


def test_two_trials_under_two_partitions_read_by_pandas_and_duckdb(two_trials):
    out = two_trials
    assert sorted(p.relative_to(out) for p in (out / SWEEP).rglob("*.parquet")) == [
        out.joinpath(SWEEP, "rounds", "dictionary=bottleneck-dct", "t2.parquet").relative_to(out),
        out.joinpath(SWEEP, "rounds", "dictionary=canonical", "t1.parquet").relative_to(out),
    ]

    df = parquet.read_rounds(SweepDir.under(out, SWEEP))
    assert list(df.columns) == parquet.SCHEMA.names
    assert len(df) == 6 and list(df.trial_id) == ["t1"] * 3 + ["t2"] * 3 and list(df["round"]) == [0, 1, 2] * 2
    assert set(df.dictionary) == {"canonical", "bottleneck-dct"} and pd.api.types.is_string_dtype(df.dictionary)
    for col in ("seed", "round", "kept", "total"):
        assert df[col].dtype == "int64", col
    for col in ("tau", "density", "test_accuracy", "epochs", "wall_seconds"):
        assert df[col].dtype == "float64", col
    assert df[df.trial_id == "t1"]["rank"].isna().all()
    assert list(df[df.trial_id == "t2"]["rank"]) == [10, 9, 8]
    assert "kept_inputs" not in df

    direct = pd.read_parquet(out / SWEEP / "rounds")
    assert len(direct) == 6 and set(direct.dictionary.astype(str)) == {"canonical", "bottleneck-dct"}
    assert direct["round"].dtype == "int64" and direct["test_accuracy"].dtype == "float64"

    via_duck = duck(out)
    assert len(via_duck) == 6 and set(via_duck.dictionary) == {"canonical", "bottleneck-dct"}
    assert via_duck["round"].dtype == "int64" and via_duck["tau"].dtype == "float64"
    assert via_duck.groupby("dictionary").size().to_dict() == {"canonical": 3, "bottleneck-dct": 3}

    # the partition column lives in the path only (in the file too, pandas fails to merge the two)
    assert "dictionary" not in pq.read_schema(parquet.trial_files(SweepDir.under(out, SWEEP))["t1"]).names


def test_rewrite_with_one_more_round_keeps_one_row_per_round(two_trials):
    out = two_trials
    write(out, "t1", "canonical", [0, 1, 2, 3])
    rows = [record("t1", r, "canonical") for r in (0, 1, 1, 2, 3)]
    rows[2] = {**rows[2], "test_accuracy": 0.5}  # a repeated round: the last one wins
    parquet.write_trial(SweepDir.under(out, SWEEP), "t1", "canonical", rows)

    df = parquet.read_rounds(SweepDir.under(out, SWEEP))
    assert len(df) == 7 and not df.duplicated(["trial_id", "round"]).any()
    t1 = df[df.trial_id == "t1"]
    assert list(t1["round"]) == [0, 1, 2, 3] and t1.loc[t1["round"] == 1, "test_accuracy"].item() == 0.5
    assert len(duck(out)) == 7 and len(pd.read_parquet(out / SWEEP / "rounds")) == 7


def test_readers_never_see_a_partial_file_while_a_writer_rewrites(tmp_path):
    write(tmp_path, "big", "canonical", range(300))  # a file large enough to take a while to write
    write(tmp_path, "small", "random", range(3))
    expected, seen, errors = 303, [], []
    stop = threading.Event()

    def reader():
        readers = (
            lambda: parquet.read_rounds(SweepDir.under(tmp_path, SWEEP)),
            lambda: pd.read_parquet(tmp_path / SWEEP / "rounds"),
            lambda: duck(tmp_path),
        )
        i = 0
        while not stop.is_set():
            try:
                seen.append(len(readers[i % 3]()))
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))
            i += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(50):
            rows = [record("big", r, "canonical", test_loss=float(i)) for r in range(300)]
            parquet.write_trial(SweepDir.under(tmp_path, SWEEP), "big", "canonical", rows)
            write(tmp_path, "small", "random", range(3), test_loss=float(i))
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert len(seen) >= 3 and set(seen) == {expected}
    assert [p.name for p in tmp_path.rglob(".*")] == []  # no temporaries left behind
    assert parquet.read_rounds(SweepDir.under(tmp_path, SWEEP)).test_loss.max() == 49.0


def test_a_crashed_writers_temp_file_is_ignored(two_trials):
    out = two_trials
    target = parquet.trial_files(SweepDir.under(out, SWEEP))["t1"]
    partial = target.read_bytes()[: target.stat().st_size // 2]
    leftover = atomic.temp_name(target)
    leftover.write_bytes(partial)
    assert leftover.name.startswith(".") and not leftover.name.endswith(".parquet")
    # a crash while writing the first file of a new partition leaves a folder holding only a temporary
    new_part = out / SWEEP / "rounds" / "dictionary=blockdiag"
    new_part.mkdir()
    atomic.temp_name(new_part / "t3.parquet").write_bytes(partial)

    assert len(parquet.read_rounds(SweepDir.under(out, SWEEP))) == 6
    assert len(pd.read_parquet(out / SWEEP / "rounds")) == 6
    assert len(duck(out)) == 6
    assert set(parquet.trial_files(SweepDir.under(out, SWEEP))) == {"t1", "t2"}


def test_completed_trials_need_every_round_ok(tmp_path):
    write(tmp_path, "done", "canonical", range(3))
    write(tmp_path, "short", "canonical", range(2))
    rows = [record("failed", r, "canonical") for r in range(2)] + [
        record("failed", 2, "canonical", status="failed: NaN loss")
    ]
    parquet.write_trial(SweepDir.under(tmp_path, SWEEP), "failed", "canonical", rows)
    assert parquet.completed_trials(SweepDir.under(tmp_path, SWEEP), 3) == {"done"}
    assert parquet.completed_trials(SweepDir.under(tmp_path, SWEEP), 2) == {"done", "short", "failed"}
    assert parquet.completed_trials(SweepDir.under(tmp_path, "no-such-sweep"), 3) == set()


def test_empty_sweep_reads_as_an_empty_frame_with_the_columns(tmp_path):
    df = parquet.read_rounds(SweepDir.under(tmp_path, SWEEP))
    assert df.empty and list(df.columns) == parquet.SCHEMA.names


def test_a_failed_round_with_missing_metrics_is_stored_with_nulls(tmp_path):
    failed = {"sweep_id": SWEEP, "trial_id": "t1", "round": 1, "dictionary": "canonical", "status": "failed: diverged"}
    parquet.write_trial(SweepDir.under(tmp_path, SWEEP), "t1", "canonical", [record("t1", 0, "canonical"), failed])
    df = parquet.read_rounds(SweepDir.under(tmp_path, SWEEP))
    assert list(df.status) == ["ok", "failed: diverged"] and df.test_accuracy.isna().tolist() == [False, True]
    assert list(df.control) == ["none", "none"]
    # rows read back (NaN for nulls, numpy scalars) can be written again: how a reused trial is copied
    parquet.write_trial(SweepDir.under(tmp_path, SWEEP), "t1", "canonical", df.to_dict("records"))
    assert parquet.read_rounds(SweepDir.under(tmp_path, SWEEP)).equals(df)


@pytest.mark.parametrize("label", ["", "a/b", "x=y", ".hidden", "_meta", "50%", "has space"])
def test_unsafe_labels_are_refused(tmp_path, label):
    with pytest.raises(ValueError):
        parquet.write_trial(SweepDir.under(tmp_path, SWEEP), "t1", label, [record("t1", 0, "canonical")])


def test_a_record_of_another_trial_is_refused(tmp_path):
    with pytest.raises(ValueError):
        parquet.write_trial(SweepDir.under(tmp_path, SWEEP), "t1", "canonical", [record("t2", 0, "canonical")])


def test_atomic_writes_replace_whole_files_and_clean_up_on_error(tmp_path):
    path = tmp_path / "sub" / "spec.yaml"
    atomic.write_text(path, "a: 1\n")
    atomic.write_bytes(path, b"a: 2\n")
    assert path.read_text() == "a: 2\n"
    with pytest.raises(RuntimeError), atomic.writing(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == "a: 2\n" and sorted(p.name for p in path.parent.iterdir()) == ["spec.yaml"]
    copy = atomic.copy_file(path, tmp_path / "copy.yaml")
    assert copy.read_text() == "a: 2\n"


def test_a_truncated_file_is_named_skipped_on_request_and_dropped_by_the_driver(two_trials):
    out = two_trials
    path = parquet.trial_files(SweepDir.under(out, SWEEP))["t1"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(parquet.DamagedRows) as e:
        parquet.read_rounds(SweepDir.under(out, SWEEP))
    message = str(e.value)
    assert "\n" not in message and str(path) in message and "magic bytes" in message
    assert f"glth run {out / SWEEP / 'spec.yaml'} --storage {out}" in message
    assert e.value.files == {"rounds/dictionary=canonical/t1.parquet": message.split(" (", 1)[1].split(");")[0]}

    skipped = parquet.read_rounds(SweepDir.under(out, SWEEP), skip_damaged=True)
    assert list(skipped.trial_id) == ["t2"] * 3 and list(skipped.columns) == parquet.SCHEMA.names
    assert parquet.completed_trials(SweepDir.under(out, SWEEP), rounds=3) == {"t2"}
    assert parquet.read_trial(SweepDir.under(out, SWEEP), "t1", "canonical") == []  # the writer then rewrites it whole

    assert list(parquet.drop_damaged(SweepDir.under(out, SWEEP))) == [str(path)]
    assert not path.exists() and len(parquet.read_rounds(SweepDir.under(out, SWEEP))) == 3
    assert parquet.drop_damaged(SweepDir.under(out, SWEEP)) == {}


def test_the_drivers_writer_holds_only_the_rows_of_trials_in_flight(tmp_path):
    """An ended Tune trial's members leave the driver's writer (their files hold the rows), so the
    driver keeps rows of the trials running, not of every trial run; one that reports again (a
    retry, a later driver) continues from its file: no row lost, none twice."""
    from ray.tune.experiment import Trial as TuneTrial

    from orchestrator import spec
    from orchestrator.sinks.parquet_writer import ParquetWriter
    from orchestrator.tune_trial import TrialCarry

    trials = spec.parse("name: w\ndataset: digits\nmodel: mlp_300_100\nseeds: [0, 1, 2]\nrounds: 3\n").trials
    ids = [t.trial_id for t in trials]
    batch, single = TrialCarry.of(list(trials[:2])), TrialCarry.of([trials[2]])  # Tune trials as the driver makes them
    tune_trial = {c.trial_id: TuneTrial("glth_test", config={"trial": c.to_dict()}, stub=True) for c in (batch, single)}
    batch, single = batch.trial_id, single.trial_id
    where = SweepDir.under(tmp_path, SWEEP)
    writer = ParquetWriter(where)
    for rnd in range(2):
        writer.on_trial_result(0, [], tune_trial[batch], {"new_rows": [record(t, rnd, "canonical") for t in ids[:2]]})
        writer.on_trial_result(0, [], tune_trial[single], {"new_rows": [record(ids[2], rnd, "canonical")]})
    assert set(writer.rows) == set(ids) and all(len(writer.rows[t]) == 2 for t in ids)

    writer.on_trial_complete(0, [], tune_trial[batch])
    assert set(writer.rows) == {ids[2]}  # both members of the batch forgotten, the running trial kept
    writer.on_trial_error(0, [], tune_trial[single])
    assert writer.rows == {}

    # the batch reports round 1 again, another loss (a retried trial): read back from the files, replaced
    writer.on_trial_result(
        0, [], tune_trial[batch], {"new_rows": [record(t, 1, "canonical", test_loss=7.0) for t in ids[:2]]}
    )
    writer.flush()
    rows = parquet.read_rounds(where)
    assert rows.groupby("trial_id")["round"].apply(list).to_dict() == {t: [0, 1] for t in ids}
    assert rows.set_index(["trial_id", "round"]).test_loss.to_dict() == {
        **{(t, r): 0.3 for t in ids for r in (0, 1)},
        **{(t, 1): 7.0 for t in ids[:2]},
    }
