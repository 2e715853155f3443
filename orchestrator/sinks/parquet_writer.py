"""The driver's Tune callback that turns each round's reported rows into Parquet.

A report carries only the rows new that round (``orchestrator.trainable``); this callback keeps
each running trial's rows (loaded from its file when first seen, so a new driver continues an old
file, or from its copy in a compacted part: ``parquet_files``) and rewrites the trial's file with
all of them, atomically. Rows are keyed by round: a row reported twice (a trial resumed from its
state) is the same row, written once.

A trial's new rows are held, not written at once, as the MLflow writer holds its rounds: its file
is rewritten when its Tune trial ends (complete, or failed), when the oldest of its rows not yet
written has waited ``flush_s`` (checked at every step of Tune's loop: a long trial's rounds appear
within seconds), at the experiment's end, and by ``flush`` (``run_sweep``'s Ctrl-C path). A tiny
trial's file is then written once, where it was written once a round. The writes themselves run on
one thread behind Tune's loop (``write_behind``), in the order they were made; the experiment's end
and ``flush`` wait for them (so the end of the run — its MLflow backfill, its compaction — reads
every row), and a write that failed is raised on Tune's loop at its next step.

What a killed driver held, or had queued, comes back with the next run: a trial's resume state
(``state/``, written by its worker before it reports the round) holds every row it reported; a
trial whose rows on disk are not complete is run again, resumes from that state and first reports
those rows again (``orchestrator.trainable``).

A Tune trial that ended drops its members' rows once they are handed to the writes: the file holds
them, and a trial that reports again (retried, or run by a later driver) is read back from it
(after its queued writes), so the driver holds the rows of the trials in flight, not of every
trial the sweep has run.
"""

from __future__ import annotations

import math
import os
import time

from ray.tune import Callback

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet
from orchestrator.sinks.write_behind import WriteBehind
from orchestrator.tune_trial import TrialCarry

#: the longest a reported row waits in the driver before its trial's file is rewritten
FLUSH_S = 2.0
#: the hold in seconds, where a person (or a test timing a fault on rows on disk) wants another
FLUSH_ENV = "GLTH_ROWS_FLUSH_S"


def flush_seconds() -> float:
    """``GLTH_ROWS_FLUSH_S`` (default 2; 0 writes every report at once): how long the driver holds a
    trial's rounds before its Parquet file and its MLflow run get them; ValueError, one line, if it
    is not a number of seconds ≥ 0."""
    raw = os.environ.get(FLUSH_ENV, "").strip()
    if not raw:
        return FLUSH_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{FLUSH_ENV}: {raw!r} is not a number of seconds ≥ 0 (0: every report written at once)")
    return value


class ParquetWriter(Callback):
    def __init__(self, where: SweepDir, flush_s: float = FLUSH_S):
        self.where = where
        self.flush_s = flush_s
        self.rows: dict[str, dict[int, dict]] = {}  # trial id → round → row, of the trials in flight
        self.labels: dict[str, str] = {}  # trial id → its dictionary label (its partition)
        self.held: dict[str, float] = {}  # trial id → time.monotonic() of its oldest row not yet written
        self.parts: dict[str, str | None] = {}  # dictionary label → its live part (compacted rows)
        self.writes = WriteBehind("glth-parquet")

    def __getstate__(self):  # Tune pickles its callbacks with the run's config: no thread, no lock
        state = dict(self.__dict__)
        state["writes"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.writes = WriteBehind("glth-parquet")
        self.held = dict.fromkeys(self.held, -math.inf)  # another clock: what was held is due

    # -- Tune's hooks ------------------------------------------------------------------------------
    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.hold(result.get("new_rows") or [])

    def on_step_end(self, iteration, trials, **info):
        self.write(due_only=True)
        self.writes.check()  # a write that failed ends the sweep here, as one on the loop did

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.forget(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.forget(trial)

    def on_experiment_end(self, trials, **info):
        self.flush()

    # -- the work ------------------------------------------------------------------------------------
    def hold(self, rows: list[dict]) -> list[str]:
        """Merge ``rows`` into their trials' rows, to be written; returns their trial ids."""
        now = time.monotonic()
        by_trial: dict[str, list[dict]] = {}
        for row in rows:
            by_trial.setdefault(row["trial_id"], []).append(row)
        for trial_id, new in by_trial.items():
            known = self.rows.get(trial_id)
            if known is None:
                label = new[0]["dictionary"]
                if self.writes.busy(trial_id):  # ended, and reported again before its file was written
                    self.writes.wait_for(trial_id)
                known = {int(r["round"]): r for r in parquet.read_trial(self.where, trial_id, label, self.parts)}
                self.rows[trial_id], self.labels[trial_id] = known, label
            for r in new:
                known[int(r["round"])] = r
            self.held.setdefault(trial_id, now)
        return list(by_trial)

    def write(self, trial_ids=None, due_only: bool = False) -> None:
        """Hand the held rows' trials (those in ``trial_ids``; with ``due_only``, those whose oldest
        held row waited ``flush_s``) to the writes: each trial's whole file."""
        now = time.monotonic()
        for trial_id in list(self.held if trial_ids is None else trial_ids):
            since = self.held.get(trial_id)
            if since is None or (due_only and now - since < self.flush_s):
                continue
            rows = list(self.rows[trial_id].values())
            self.writes.submit(trial_id, parquet.write_trial, self.where, trial_id, self.labels[trial_id], rows)
            del self.held[trial_id]

    def flush(self) -> None:
        """Write every held row and wait for every write; then raises a write that failed (once)."""
        self.write()
        self.writes.drain()

    def forget(self, trial) -> None:
        """Write the rows of the Tune trial ``trial``'s members, then drop them (their file holds them)."""
        members = TrialCarry.member_ids(trial.config["trial"])
        self.write(members)
        for trial_id in members:
            self.rows.pop(trial_id, None)
            self.labels.pop(trial_id, None)
