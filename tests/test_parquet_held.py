"""The driver's Parquet writer holds a trial's rows and writes its file behind Tune's loop: a tiny
trial's file written once with the rows that writing every report gives, a long trial's rows on
disk within the flush interval, every row written at the trial's end, the experiment's end and by
``flush`` (the Ctrl-C path), writes in the order they were made (readers see each row once, never
fewer), and a write that fails raised on the loop, not swallowed. Tune's hooks are called as its
loop calls them, on a real local storage (no Ray started)."""

from __future__ import annotations

import pickle
import threading
import time

import pytest
from ray.tune.experiment import Trial as TuneTrial
from test_sink_parquet import SWEEP, record

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet
from orchestrator.sinks.parquet_writer import ParquetWriter
from orchestrator.sinks.write_behind import WriteBehind
from orchestrator.tune_trial import TrialCarry

LABEL = "canonical"


@pytest.fixture
def where(tmp_path) -> SweepDir:
    return SweepDir.under(tmp_path, SWEEP)


def tune_trial(*trial_ids: str) -> TuneTrial:
    """A Tune trial carrying ``trial_ids`` as its members, shaped as ``TrialCarry.to_dict`` (the
    writer reads only the members' ids)."""
    carry = {"trial_id": trial_ids[0], "members": [{"trial_id": t} for t in trial_ids]}
    assert TrialCarry.member_ids(carry) == list(trial_ids)
    return TuneTrial("glth_test", config={"trial": carry}, stub=True)


def report(writer: ParquetWriter, trial, rows: list[dict]) -> None:
    writer.on_trial_result(iteration=0, trials=[], trial=trial, result={"new_rows": rows})
    writer.on_step_end(iteration=0, trials=[])


def on_disk(where: SweepDir) -> dict[str, list[int]]:
    rows = parquet.read_rounds(where)
    return {t: sorted(g) for t, g in rows.groupby("trial_id")["round"]}


def test_a_tiny_trials_file_is_written_once_with_the_rows_of_writing_every_report(tmp_path):
    every, held = SweepDir.under(tmp_path / "every", SWEEP), SweepDir.under(tmp_path / "held", SWEEP)
    rows = [record("t1", r, LABEL, test_loss=0.1 * r) for r in range(3)]
    for r in range(3):  # before holding: the trial's whole file rewritten at every report
        parquet.write_trial(every, "t1", LABEL, rows[: r + 1])
    writer, trial = ParquetWriter(held), tune_trial("t1")
    for r in range(3):
        report(writer, trial, rows[r : r + 1])
    assert writer.writes.done == 0 and on_disk(held) == {}  # held: none due within flush_s
    writer.on_trial_complete(iteration=0, trials=[], trial=trial)
    writer.writes.drain()
    print(f"\nwrites of a 3-round trial's file: 3 writing every report, {writer.writes.done} held")
    assert writer.writes.done == 1 and writer.rows == {} and writer.held == {}
    assert parquet.read_rounds(held).equals(parquet.read_rounds(every))


def test_a_long_trials_rows_reach_its_file_within_the_flush_interval_while_it_runs(where):
    writer, trial = ParquetWriter(where, flush_s=0.3), tune_trial("long")
    t0 = time.monotonic()
    report(writer, trial, [record("long", 0, LABEL)])
    early = on_disk(where) if time.monotonic() - t0 < writer.flush_s else None  # not due yet: held
    time.sleep(writer.flush_s)
    report(writer, trial, [record("long", 1, LABEL)])  # joins the held row 0, due now
    writer.writes.drain()
    due = on_disk(where)
    report(writer, trial, [record("long", 2, LABEL)])
    writer.on_experiment_end(trials=[])  # Tune's loop ends (done, or an error in it): all held written
    assert early in ({}, None) and due == {"long": [0, 1]} and on_disk(where) == {"long": [0, 1, 2]}
    assert writer.writes.done == 2


def test_flush_writes_every_held_row_and_waits_for_the_writes(where):
    """``run_sweep``'s Ctrl-C path (Tune's cleanup skipped): what the writer holds is on disk when
    ``flush`` returns; the members of a seed batch each in their own file."""
    writer = ParquetWriter(where, flush_s=3600)
    batch, single = tune_trial("b0", "b1"), tune_trial("s")
    for r in range(2):
        report(writer, batch, [record("b0", r, LABEL), record("b1", r, LABEL)])
        report(writer, single, [record("s", r, LABEL)])
    assert writer.writes.done == 0
    writer.flush()
    assert on_disk(where) == {"b0": [0, 1], "b1": [0, 1], "s": [0, 1]} and writer.writes.done == 3
    writer.flush()  # nothing held: nothing written again
    assert writer.writes.done == 3 and set(writer.rows) == {"b0", "b1", "s"}  # still in flight


def test_writes_land_in_the_order_they_were_made_and_a_reader_sees_each_row_once(where):
    """Every report due at once (flush_s 0): 40 rewrites of one trial's file queued behind the loop;
    a reader meanwhile never sees a row twice nor fewer rows than it saw before."""
    seen, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                rows = parquet.read_rounds(where)
                assert not rows.duplicated(["trial_id", "round"]).any()
                seen.append(len(rows))
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))

    thread = threading.Thread(target=reader)
    thread.start()
    writer, trial = ParquetWriter(where, flush_s=0), tune_trial("t")
    try:
        for r in range(40):
            report(writer, trial, [record("t", r, LABEL)])
        writer.on_experiment_end(trials=[])
    finally:
        stop.set()
        thread.join()
    print(f"\n{writer.writes.done} writes; a reader's row counts: {len(seen)} reads, {sorted(set(seen))[:10]}…")
    assert errors == [] and seen == sorted(seen) and len(seen) >= 3
    assert on_disk(where) == {"t": list(range(40))} and 1 <= writer.writes.done <= 40

    order, behind = [], WriteBehind()
    for k in range(20):  # uneven durations: the queue, not their speed, orders them
        behind.submit("same", lambda k=k: (time.sleep(0.002 * (k % 3)), order.append(k)))
    behind.drain()
    assert order == list(range(20)) and behind.done == 20


def test_a_trial_reported_again_right_after_its_end_continues_from_its_written_rows(where):
    """A trial that ended (its file's write queued) and reports again (a retry): the writer waits
    for its queued write, reads it back and loses none of its rows."""
    writer = ParquetWriter(where, flush_s=3600)
    trials = {t: tune_trial(t) for t in ("a", "b", "c")}
    for r in range(3):
        for t, trial in trials.items():
            report(writer, trial, [record(t, r, LABEL)])
    for trial in trials.values():
        writer.on_trial_error(iteration=0, trials=[], trial=trial)  # three writes queued
    report(writer, trials["c"], [record("c", 3, LABEL, test_loss=9.0)])
    writer.flush()
    assert on_disk(where) == {"a": [0, 1, 2], "b": [0, 1, 2], "c": [0, 1, 2, 3]}
    assert parquet.read_rounds(where).set_index(["trial_id", "round"]).test_loss[("c", 3)] == 9.0


def test_a_write_that_fails_is_raised_on_the_loop_and_its_rows_written_once_it_can(where, tmp_path):
    """A directory where the trial's file goes: its write behind the loop fails; Tune's next step
    raises that error (once: not swallowed, not repeated), and the trial's next write holds the
    failed write's rows too."""
    writer, trial = ParquetWriter(where, flush_s=3600), tune_trial("t")
    report(writer, trial, [record("t", 0, LABEL)])  # first seen: nothing to read back
    obstacle = tmp_path / SWEEP / "rounds" / f"dictionary={LABEL}" / "t.parquet"
    (obstacle / "inside").mkdir(parents=True)
    writer.flush_s = 0
    writer.on_step_end(iteration=1, trials=[])  # due: handed to the writes
    deadline = time.monotonic() + 60
    while writer.writes.done < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError) as failed:
        writer.on_step_end(iteration=2, trials=[])
    print(f"\nraised on the loop: {failed.value!r}")
    assert "t.parquet" in str(failed.value) and writer.writes.done == 1
    writer.on_step_end(iteration=3, trials=[])  # raised once
    (obstacle / "inside").rmdir()
    obstacle.rmdir()
    report(writer, trial, [record("t", 1, LABEL)])
    writer.flush()
    assert on_disk(where) == {"t": [0, 1]} and writer.writes.done == 2

    # a failed write does not keep the experiment's end from writing the other trials' rows first
    writer.flush_s = 3600
    report(writer, trial, [record("t", 2, LABEL)])
    report(writer, tune_trial("u"), [record("u", 0, LABEL)])
    obstacle.unlink()
    (obstacle / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        writer.on_experiment_end(trials=[])
    assert on_disk(where) == {"u": [0]} and writer.writes.done == 4


def test_the_writer_pickles_as_tune_saves_it_with_the_runs_config(where):
    writer, trial = ParquetWriter(where, flush_s=3600), tune_trial("t")
    report(writer, trial, [record("t", 0, LABEL)])
    copy = pickle.loads(pickle.dumps(writer))
    copy.on_step_end(iteration=1, trials=[])  # held in another process: due at once
    copy.writes.drain()
    assert on_disk(where) == {"t": [0]} and copy.writes.done == 1 and writer.writes.done == 0


def test_the_hold_setting(monkeypatch):
    from orchestrator.sinks import parquet_writer

    monkeypatch.delenv("GLTH_ROWS_FLUSH_S", raising=False)
    assert parquet_writer.flush_seconds() == 2.0
    monkeypatch.setenv("GLTH_ROWS_FLUSH_S", "0.25")
    assert parquet_writer.flush_seconds() == 0.25
    for bad in ("-1", "soon", "nan", "inf"):
        monkeypatch.setenv("GLTH_ROWS_FLUSH_S", bad)
        with pytest.raises(ValueError, match=f"GLTH_ROWS_FLUSH_S: '{bad}' is not a number of seconds"):
            parquet_writer.flush_seconds()
