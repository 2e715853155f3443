"""The sweep's curves on its parent run: MLflow's chart view draws the paper's figure while it runs.

A curve is the trials that differ only in their seed (``CURVE``: dataset × model × dictionary ×
control × τ × rewind × the other fields the sweep varies, ``orchestrator.axes``). At step =
round, once every seed of the curve has that round, the parent
gets ``curve/<label>/<stat>``: the mean over seeds of test accuracy, val accuracy and compression,
and the bounds of a 95% confidence interval of the mean test accuracy (Student t, as the band of
``orchestrator.plots``). A seed that failed at round f is not waited for at rounds ≥ f (the mean
is then over the seeds that have the round, as ``glth results`` averages them).

The label names the dictionary, its control when not ``none``, whichever of dataset, model, τ and
rewind vary among the sweep's trials, and the other fields that vary (``lr=0.05``), so it is stable
while the sweep runs: it comes from the metas of all the sweep's trials (one row-meta per trial:
``trial_id``, ``config`` and the describing columns), not from the rows seen so far.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import numpy as np
from mlflow.entities import Metric

from glth_core import controls
from orchestrator.axes import AXES, STANDARD, axes_text, config_of, curve_axes, flatten, seedless

CURVE = (*STANDARD, AXES)
MEANS = ("test_accuracy", "val_accuracy", "compression")
PREFIX = "curve/"
PROBE = "test_accuracy_mean"  # in every logged step's batch: its history says which steps are logged
MAX_KEY = 250


def _clean(v):
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    try:
        if v != v:  # pandas NA / numpy NaN of other types
            return None
    except (TypeError, ValueError):
        return None
    return v


def curve_fields(row: dict) -> tuple:
    """The row's curve: the ``CURVE`` values, normalised (NaN → None, τ a float, control "none")."""
    out = []
    for k in CURVE:
        v = _clean(row.get(k))
        if k == "tau" and v is not None:
            v = float(v)
        if k == "control" and v is None:
            v = "none"
        out.append(None if v is None else (v if isinstance(v, float) else str(v)))
    return tuple(out)


def _safe(text: str) -> str:
    """MLflow keys take letters, digits, ``_ - . /`` and spaces; ``/`` separates our levels."""
    return "".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in text).strip() or "_"


def _rewind_text(v: str) -> str:
    try:
        d = json.loads(v)
    except (TypeError, ValueError):
        return v
    return f"step{d['step']}" if isinstance(d, dict) and "step" in d else v


def varying(fields: Iterable[tuple]) -> tuple[str, ...]:
    fields = list(fields)
    return tuple(
        k for i, k in enumerate(CURVE) if k in ("dataset", "model", "tau", "rewind") and len({f[i] for f in fields}) > 1
    )


def label_of(fields: tuple, vary: tuple[str, ...]) -> str:
    """e.g. ``canonical``, ``bottleneck-1-dct random_mask``, ``mnist lenet canonical tau0.2 rewind-init``."""
    f = dict(zip(CURVE, fields))
    parts = [str(f[k]) for k in ("dataset", "model") if k in vary and f[k] is not None]
    parts.append(str(f["dictionary"]))
    if not controls.is_imp(f["control"]):
        parts.append(str(f["control"]))
    if "tau" in vary and f["tau"] is not None:
        parts.append(f"tau{f['tau']:g}")
    if "rewind" in vary and f["rewind"] is not None:
        parts.append(f"rewind-{_rewind_text(f['rewind'])}")
    if f[AXES]:
        parts.append(str(f[AXES]))
    label = " ".join(_safe(p) for p in parts)
    return label[: MAX_KEY - len(PREFIX) - 30]


def key(label: str, stat: str) -> str:
    return f"{PREFIX}{label}/{stat}"


def ci95(values: list[float]) -> tuple[float, float, float]:
    """(mean, lower, upper): mean ± t(0.975, n − 1) · std / √n (std with ddof 1; no width for n = 1)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean, mean
    from scipy import stats  # on first use: the MLflow set-up, on Ray's start, does without its 0.5 s of imports

    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def metas_from_rows(rows: Iterable[dict]) -> list[dict]:
    """One meta per trial (its first row), for when the sweep's own metas are not at hand."""
    seen: dict[str, dict] = {}
    for r in rows:
        seen.setdefault(str(r["trial_id"]), r)
    return list(seen.values())


class CurveBook:
    """Which seeds each curve waits for, and their values per round; plain data (it pickles)."""

    def __init__(self, metas: Iterable[dict]):
        metas = list(metas)
        self.axes, flat = curve_axes(metas)  # the varying fields beside the standard ones, from the configs
        fields = {str(m["trial_id"]): curve_fields({**m, AXES: axes_text(f, self.axes)}) for m, f in zip(metas, flat)}
        self.vary = varying(fields.values())
        self.trial_curve: dict[str, str] = {tid: label_of(f, self.vary) for tid, f in fields.items()}
        self.members: dict[str, set[str]] = {}
        for tid, label in self.trial_curve.items():
            self.members.setdefault(label, set()).add(tid)
        self.values: dict[str, dict[int, dict[str, tuple]]] = {}
        self.ended_at: dict[str, int] = {}  # trial → the first round it will never have

    def _with_axes(self, row: dict) -> dict:
        """A row of a trial the metas did not list, with its ``axes`` text."""
        return {**row, AXES: axes_text(seedless([flatten(config_of(row.get("config")))])[0], self.axes)}

    def seeds(self) -> dict[str, int]:
        """curve label → how many seeds (trials) it has."""
        return {label: len(m) for label, m in self.members.items()}

    def add(self, row: dict) -> str | None:
        """Record one row; the label of its curve (None for a row without a round)."""
        if row.get("round") is None:
            return None
        tid, rnd = str(row["trial_id"]), int(row["round"])
        label = self.trial_curve.get(tid)
        if label is None:  # a trial the metas did not list: its curve gets one more seed
            label = self.trial_curve[tid] = label_of(curve_fields(self._with_axes(row)), self.vary)
            self.members.setdefault(label, set()).add(tid)
        if row.get("status", "ok") != "ok":
            self.ended_at[tid] = min(rnd, self.ended_at.get(tid, rnd))
            return label
        expected = _clean(row.get("rows_expected"))
        if expected is not None:
            self.ended_at[tid] = min(int(expected), self.ended_at.get(tid, int(expected)))
        vals = tuple(None if _clean(row.get(k)) is None else float(row[k]) for k in MEANS)
        self.values.setdefault(label, {}).setdefault(rnd, {})[tid] = vals
        return label

    def add_all(self, rows: Iterable[dict]) -> set[str]:
        return {label for r in rows if (label := self.add(r)) is not None}

    def ready_rounds(self, label: str) -> list[int]:
        """The rounds every seed of the curve has (or will never have)."""
        members = self.members.get(label, set())
        out = []
        for rnd, by_trial in sorted(self.values.get(label, {}).items()):
            if all(t in by_trial or self.ended_at.get(t, math.inf) <= rnd for t in members):
                out.append(rnd)
        return out

    def stats(self, label: str, rnd: int) -> dict[str, float]:
        """``curve/<label>/<stat>`` → value at this round (empty without any test accuracy)."""
        by_trial = self.values.get(label, {}).get(rnd, {})
        out = {}
        for i, name in enumerate(MEANS):
            xs = [v[i] for v in by_trial.values() if v[i] is not None]
            if not xs:
                continue
            mean, lo, hi = ci95(xs)
            out[key(label, f"{name}_mean")] = mean
            if name == "test_accuracy":
                out[key(label, "test_accuracy_ci_low")] = lo
                out[key(label, "test_accuracy_ci_high")] = hi
        return out if key(label, PROBE) in out else {}


def log_ready(
    client,
    parent_run_id: str,
    book: CurveBook,
    logged: dict[str, set[int]],
    labels: Iterable[str] | None = None,
    timestamp_ms: int | None = None,
) -> int:
    """Log every ready (curve, round) not yet on the parent; ``logged`` caches label → steps
    (filled from the probe's history on first use). Returns how many steps were logged."""
    from orchestrator.sinks.mlflow.values import MAX_METRICS_PER_BATCH, _now_ms

    now = timestamp_ms or _now_ms()
    batch, steps, n = [], [], 0

    def send():
        client.log_batch(parent_run_id, metrics=batch, synchronous=True)
        for label, rnd in steps:  # cached as logged only once MLflow has them
            logged[label].add(rnd)
        batch.clear()
        steps.clear()

    for label in sorted(set(book.members) if labels is None else set(labels)):
        rounds = book.ready_rounds(label)
        if not rounds:
            continue
        if label not in logged:
            logged[label] = {int(m.step) for m in client.get_metric_history(parent_run_id, key(label, PROBE))}
        for rnd in rounds:
            if rnd in logged[label]:
                continue
            metrics = [Metric(k, v, now, rnd) for k, v in book.stats(label, rnd).items()]
            if not metrics:
                continue
            if len(batch) + len(metrics) > MAX_METRICS_PER_BATCH:
                send()  # one step's metrics never straddle two batches
            batch.extend(metrics)
            steps.append((label, rnd))
            n += 1
    if batch:
        send()
    return n
