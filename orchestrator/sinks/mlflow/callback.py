"""The driver, MLflow's only writer while a sweep runs: a Tune callback beside the Parquet writer.

Each report's ``result["new_rows"]`` (the rows its trial — or each seed of a batched trial —
finished this round) goes to that trial's child run at step = round, with the machinery of
``sync``: a child is found by its tags or created on first sight (params = the flattened config,
name = ``run_name``, the dataset as its input), a round is logged once, a run ends FINISHED or
FAILED when its rows say so. ``result["system_metrics"]`` (``system.SystemSampler.take()`` in the
worker), when present, is logged with the round as ``system/<name>``. The parent gets the
sweep's curves (``curves.py``) as soon as every seed of a curve has a round.

A trial's rounds are held, not written at once: they go in one ``log_batch`` (with a new run's
params and an ended run's status tags) when the rows end the trial, when the oldest of them has
waited ``flush_s`` (checked at every step of Tune's loop: a long trial's rounds appear within
seconds), and at the experiment's end (also after Ctrl-C or an error in Tune's loop). A tiny
trial's run is then four writes (create, dataset input, one batch, end) where it was one batch a
round more. What a killed driver held is backfilled by the ``sync_sweep`` of the next run.

A tracking store that fails switches the callback off with one stderr line; rows keep going to
Parquet, and the ``sync_sweep`` at the sweep's end (or ``glth sync``) backfills exactly once.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ray.tune import Callback

from orchestrator.sinks.mlflow import curves
from orchestrator.sinks.mlflow.client import _children, _find_or_create_child, client
from orchestrator.sinks.mlflow.finish import (
    _end_tags,
    _finish,
    _run_name,
    _target,
    outcome_of,
    row_config,
    rows_expected,
)
from orchestrator.sinks.mlflow.guard import MlflowUnavailable, _guard
from orchestrator.sinks.mlflow.rounds import _new_rounds, _send, logged_rounds
from orchestrator.sinks.mlflow.values import _now_ms

#: the longest a reported round waits in the driver before it is written to MLflow
FLUSH_S = 2.0


@dataclass
class _Held:
    """A trial's rows not yet in MLflow (plain data: it pickles)."""

    since: float  # time.monotonic() when its oldest held row was reported
    last: dict | None = None  # the last row of its latest report
    rounds: dict[int, tuple[dict, dict | None, int]] = field(default_factory=dict)  # ok round → (row, system, ms)


class MlflowWriter(Callback):
    """``metas``: one row-meta per trial of the whole sweep (``trial_id``, ``config`` and the
    describing columns dataset, model, dictionary, control, tau, rewind: ``Trial.meta``), so each curve
    knows how many seeds to wait for. ``sweep_dir``: the sweep's directory
    (``orchestrator.layout.SweepDir``), whose Parquet rows
    written before this run (reused trials, a resumed sweep) are read at ``setup`` so their
    curves complete too. Pickles (Tune saves callbacks with its experiment state): the client is
    rebuilt after unpickling, the caches are kept."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        experiment_id: str | None,
        parent_run_id: str | None,
        sweep_id: str,
        metas: Iterable[dict] = (),
        sweep_dir=None,
        flush_s: float = FLUSH_S,
    ):
        self.tracking_uri, self.experiment, self.sweep_id = tracking_uri, experiment, sweep_id
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.sweep_dir = sweep_dir
        keep = ("trial_id", "config", *curves.STANDARD)  # the book keeps labels, not the configs
        self.book = curves.CurveBook([{k: m.get(k) for k in keep} for m in metas])
        self.off = parent_run_id is None or experiment_id is None  # nowhere to write: MLflow was down at start
        self._client = None
        self._runs: dict[str, str] = {}  # trial id → child run id
        self._logged: dict[str, set[int]] = {}  # trial id → rounds in its run
        self._ok: dict[str, set[int]] = {}
        self._ended: set[str] = set()
        self._curve_steps: dict[str, set[int]] = {}
        self._known: dict | None = None  # the parent's children found by one search
        self._fresh: set[str] = set()  # runs created by this writer, in this process
        self.flush_s = flush_s
        self._held: dict[str, _Held] = {}  # trial id → its rows not yet written
        self._labels: set[str] = set()  # curves with rows since the last write of the curves
        self._labels_since = 0.0

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_client"] = None
        state["_known"], state["_fresh"] = None, set()  # another process: look again
        return state

    def __setstate__(self, state):
        self.__dict__.update({"_known": None, "_fresh": set(), **state})
        for held in self._held.values():  # another clock: what was held is due
            held.since = -math.inf
        self._labels_since = -math.inf

    # -- Tune's hooks ------------------------------------------------------------------------------
    def setup(self, **info):
        if self.sweep_dir is None:
            return
        from orchestrator.sinks import parquet

        df = parquet.read_rounds(self.sweep_dir)
        labels = self.book.add_all(df.to_dict("records")) if not df.empty else set()
        self._guarded(lambda: curves.log_ready(self._c(), self.parent_run_id, self.book, self._curve_steps, labels))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rows = result.get("new_rows") or []
        if not rows:
            return
        labels = self.book.add_all(rows)  # kept up even when off: cheap, and right if pickled
        if self.off:
            return
        if labels and not self._labels:
            self._labels_since = time.monotonic()
        self._labels |= labels
        ended = self.hold(rows, result.get("system_metrics"))
        if ended:
            self._guarded(lambda: self._flush(ended))

    def on_step_end(self, iteration, trials, **info):
        self.flush(due_only=True)

    def on_experiment_end(self, trials, **info):
        self.flush()

    # -- the work ------------------------------------------------------------------------------------
    def _c(self):
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    def _guarded(self, fn) -> None:
        if self.off:
            return
        try:
            with _guard():
                fn()
        except Exception as e:  # never end the sweep for its dashboard: sync_sweep retries at the end
            self.off = True
            self._held, self._labels = {}, set()  # the backfill's now
            why = "unavailable" if isinstance(e, MlflowUnavailable) else f"failed ({type(e).__name__})"
            print(
                f"[glth] MLflow at {self.tracking_uri} {why}: {str(e).splitlines()[0][:200] if str(e) else ''}; "
                f"live logging off, rows go to Parquet and the sweep's end (or `glth sync`) backfills",
                file=sys.stderr,
            )

    def hold(self, rows: list[dict], system_metrics: dict | None = None) -> list[str]:
        """Keep ``rows`` (new rows of one or more trials) until their trials' next write; returns
        the trials whose rows end them now (to be written at once)."""
        now, now_ms = time.monotonic(), _now_ms()
        by_trial: dict[str, list[dict]] = {}
        for r in rows:
            by_trial.setdefault(str(r["trial_id"]), []).append(r)
        ended = []
        for tid, trows in by_trial.items():
            held = self._held.setdefault(tid, _Held(since=now))
            held.last = max(trows, key=lambda r: int(r["round"]))
            ok = self._ok.setdefault(tid, set())
            for r in trows:
                if r.get("status", "ok") == "ok":
                    held.rounds[int(r["round"])] = (r, system_metrics, now_ms)
                    ok.add(int(r["round"]))
            last = held.last
            if tid not in self._ended and outcome_of(last, ok, rows_expected(last, row_config(last))) is not None:
                ended.append(tid)
        return ended

    def flush(self, due_only: bool = False) -> None:
        """Write what is held: every trial's rounds and the ready curves, or (``due_only``) those
        of the trials (curves) whose oldest held round waited ``flush_s``."""
        if self.off or not (self._held or self._labels):
            return
        now = time.monotonic()
        tids = [t for t, h in self._held.items() if not due_only or now - h.since >= self.flush_s]
        if tids or (self._labels and (not due_only or now - self._labels_since >= self.flush_s)):
            self._guarded(lambda: self._flush(tids))

    def _flush(self, tids: Iterable[str]) -> None:
        c = self._c()
        for tid in tids:
            held = self._held.pop(tid, None)
            if held is not None:
                self._write_trial(c, tid, held)
        if self._labels:
            labels, self._labels = self._labels, set()
            curves.log_ready(c, self.parent_run_id, self.book, self._curve_steps, labels)

    def _write_trial(self, c, tid: str, held: "_Held") -> None:
        """One trial's held rounds into its run: one ``log_batch`` (a new run's params and an
        ended run's status tags ride with its metrics), so one commit where there were several."""
        last = held.last
        params: list = []
        if tid not in self._runs:
            config = row_config(last)
            self._runs[tid], created = _find_or_create_child(
                c,
                self.experiment_id,
                self.parent_run_id,
                tid,
                config,
                _run_name(last, config),
                known=self._children_found(c),
                dataset=last.get("dataset"),
                params_out=params,
            )
            self._logged[tid] = set() if created else None
            if created:
                self._fresh.add(tid)
        run_id = self._runs[tid]
        known = self._logged[tid]
        logged = set(known) if known is not None else logged_rounds(c, run_id)
        rounds, new = _new_rounds(held.rounds, logged)
        outcome = None
        if tid not in self._ended:
            outcome = outcome_of(last, self._ok.get(tid, set()) | logged | new, rows_expected(last, row_config(last)))
        # a run this writer created is RUNNING without end tags: they can go in the same batch
        ends_here = outcome is not None and tid in self._fresh
        _send(c, run_id, rounds, params, _end_tags(outcome, "") if ends_here else ())
        self._logged[tid] = logged | new
        if ends_here:
            c.set_terminated(run_id, _target(outcome))
        elif outcome is not None:
            _finish(c, c.get_run(run_id), outcome, None)
        if outcome is not None:
            self._ended.add(tid)

    def _children_found(self, c) -> dict:
        """The parent's children when this writer first needs them (one search: runs an earlier,
        interrupted driver created); the runs it creates itself it keeps in ``_runs``."""
        if self._known is None:
            self._known = _children(c, self.experiment_id, self.parent_run_id)
        return self._known
