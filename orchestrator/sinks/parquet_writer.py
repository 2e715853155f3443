"""The driver's Tune callback that turns each round's reported rows into Parquet.

A report carries only the rows new that round (``orchestrator.trainable``); this callback keeps
each running trial's rows (loaded from its file when first seen, so a new driver continues an old
file, or from its copy in a compacted part: ``parquet_files``)
and rewrites the trial's file with all of them, atomically. Rows are keyed by round: a row
reported twice (a trial resumed from its state) is the same row, written once. A Tune trial that
ended (complete, or failed) drops its members' rows: the file holds them, and a trial that reports
again (retried, or run by a later driver) is read back from it, so the driver holds the rows of the
trials in flight, not of every trial the sweep has run.
"""

from __future__ import annotations

from ray.tune import Callback

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet
from orchestrator.tune_trial import TrialCarry


class ParquetWriter(Callback):
    def __init__(self, where: SweepDir):
        self.where = where
        self.rows: dict[str, dict[int, dict]] = {}
        self.parts: dict[str, str | None] = {}  # dictionary label → its live part (compacted rows)

    def add(self, rows: list[dict]) -> list[str]:
        """Merge ``rows`` into their trials' files; returns the trial ids written."""
        by_trial: dict[str, list[dict]] = {}
        for row in rows:
            by_trial.setdefault(row["trial_id"], []).append(row)
        for trial_id, new in by_trial.items():
            label = new[0]["dictionary"]
            known = self.rows.get(trial_id)
            if known is None:
                known = {int(r["round"]): r for r in parquet.read_trial(self.where, trial_id, label, self.parts)}
            for r in new:
                known[int(r["round"])] = r
            self.rows[trial_id] = known
            parquet.write_trial(self.where, trial_id, label, list(known.values()))
        return list(by_trial)

    def forget(self, trial) -> None:
        """Drop the rows of the Tune trial ``trial``'s members (its file holds them)."""
        for trial_id in TrialCarry.member_ids(trial.config["trial"]):
            self.rows.pop(trial_id, None)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.add(result.get("new_rows") or [])

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.forget(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.forget(trial)
