"""Progress a person can read: trial state changes and a live count of rounds and trials.

Two displays of the same counts, on stderr:
- plain lines (stderr is not a terminal: CI, logs, pipes; or ``GLTH_PROGRESS=plain``; or
  ``TERM=dumb``): one line per state change and per round, ``[glth   12s] trial … round 3: …``;
- live (stderr is a terminal): a block redrawn in place with ANSI cursor moves, holding trials
  done / running / pending, rounds done, elapsed, ETA and the latest accuracy of each running
  trial; state changes that matter (a trial finished, failed, recovered) scroll above it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from ray.tune import Callback

from glth_core.results_view import PROGRESS
from orchestrator.kind_results import progress_fields
from orchestrator.tune_trial import TrialCarry

#: redraw at most this often on Tune's loop steps (each result redraws at once)
REDRAW_S = 1.0
MAX_RUNNING_SHOWN = 12


def _carry(trial) -> tuple[str, int]:
    """Our content-hash trial id (Tune's own id changes between runs of a sweep) and how many
    trajectories the Tune trial runs (K for a batch of seeds)."""
    carry = TrialCarry.from_dict(trial.config["trial"])
    return carry.trial_id, carry.size


def _fields(trial) -> tuple[tuple[str, str], ...]:
    """What the live display shows of a round of the Tune trial's kind (its members share one)."""
    return progress_fields(TrialCarry.from_dict(trial.config["trial"]).members[0].kind)


def shown(running: dict, sep: str) -> str:
    """The fields of a round its kind shows (``fields``: (row column, label); the default ones when
    absent), each value as ``{:.4f}``."""
    return sep.join(f"{label} {float(running[column]):.4f}" for column, label in running.get("fields", PROGRESS))


def clock(seconds: float | None) -> str:
    """``h:mm:ss``, or ``-`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def live_lines(
    *,
    done: int,
    running: list[dict],
    pending: int,
    failed: int,
    rounds_done: int,
    rounds_total: int,
    elapsed: float,
    eta: float | None,
    width: int = 100,
) -> list[str]:
    """The live block. ``running``: one dict per running trial with trial_id, size, and (once it
    has reported) round, rounds, the kind's progress ``fields`` and their values (by default
    test_accuracy and density). Every line is cut to ``width``."""
    trials = f"trials: {done} done, {sum(r.get('size', 1) for r in running)} running, {pending} pending"
    trials += f", {failed} failed" if failed else ""
    lines = [f"[glth {clock(elapsed)}] {rounds_done}/{rounds_total} rounds · {trials} · ETA {clock(eta)}"]
    for r in running[:MAX_RUNNING_SHOWN]:
        size = f" ×{r['size']}" if r.get("size", 1) > 1 else ""
        if "round" in r:
            lines.append(f"  {r['trial_id']}{size}  round {r['round']}/{r['rounds'] - 1}  {shown(r, '  ')}")
        else:
            lines.append(f"  {r['trial_id']}{size}  starting")
    if len(running) > MAX_RUNNING_SHOWN:
        lines.append(f"  … and {len(running) - MAX_RUNNING_SHOWN} more running")
    return [line[:width] for line in lines]


def live_wanted(stream=None) -> bool:
    """A live display on a terminal, plain lines anywhere else (or when asked for)."""
    stream = stream or sys.stderr
    if os.environ.get("GLTH_PROGRESS") == "plain" or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class _Block:
    """Lines redrawn in place at the bottom of a terminal: cursor up over the last drawing, clear, draw."""

    def __init__(self):
        self.height = 0

    def _erase(self) -> str:
        return f"\x1b[{self.height}F\x1b[J" if self.height else ""

    def draw(self, lines: list[str], above: str | None = None) -> None:
        text = self._erase() + (f"{above}\n" if above else "") + "".join(f"{line}\x1b[K\n" for line in lines)
        sys.stderr.write(text)
        sys.stderr.flush()
        self.height = len(lines)


class Progress(Callback):
    """A Tune callback that reports state changes and counts; it pickles with Tune's state."""

    def __init__(self, total_trials: int, rounds: int, already_done: int = 0, complete=(), live: bool | None = None):
        self.total_trials, self.rounds, self.already_done = total_trials, rounds, already_done
        self.complete = set(complete)  # complete on disk (counted in already_done); a restore may list them again
        self.t0 = time.monotonic()
        self.rounds_done: dict[str, int] = {}
        self.finished = already_done
        self.errored = 0
        self.recovering: set[str] = set()  # restarted after a failure; their next result says from where
        self.live = live  # None: decided at each output by live_wanted()
        self.running: dict[str, dict] = {}  # trial id → what the live block shows of it
        self.rounds_this_run = 0
        self._block = _Block()
        self._drawn_at = 0.0

    # -- output ----------------------------------------------------------------------------
    def _is_live(self) -> bool:
        return live_wanted() if self.live is None else self.live

    def _say(self, text: str, live_too: bool = True) -> None:
        """A plain line; in live mode only the lines that matter, above the block."""
        line = f"[glth {time.monotonic() - self.t0:6.0f}s] {text}"
        if not self._is_live():
            print(line, file=sys.stderr, flush=True)
        elif live_too:
            self._redraw(above=line)

    def _redraw(self, above: str | None = None) -> None:
        if not self._is_live():
            return
        self._drawn_at = time.monotonic()
        self._block.draw(self.lines(), above)

    def _count(self) -> str:
        total_rounds = self.total_trials * self.rounds
        done = sum(self.rounds_done.values()) + self.already_done * self.rounds
        return f"{done}/{total_rounds} rounds, {self.finished}/{self.total_trials} trials done"

    def lines(self, width: int | None = None) -> list[str]:
        """The live block for the current state."""
        elapsed = time.monotonic() - self.t0
        total_rounds = self.total_trials * self.rounds
        done = min(total_rounds, sum(self.rounds_done.values()) + self.already_done * self.rounds)
        eta = (total_rounds - done) * elapsed / self.rounds_this_run if self.rounds_this_run else None
        running = [self.running[t] for t in sorted(self.running)]
        pending = max(0, self.total_trials - self.finished - self.errored - sum(r["size"] for r in running))
        width = width or max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        return live_lines(
            done=self.finished,
            running=running,
            pending=pending,
            failed=self.errored,
            rounds_done=done,
            rounds_total=total_rounds,
            elapsed=elapsed,
            eta=eta,
            width=width,
        )

    # -- Tune's callbacks ------------------------------------------------------------------
    def on_step(self, iteration, trials, **info):
        if self._is_live() and time.monotonic() - self._drawn_at >= REDRAW_S:
            self._redraw()

    def on_trial_start(self, iteration, trials, trial, **info):
        tid, size = _carry(trial)
        if tid in self.complete:
            return
        self.running[tid] = {"trial_id": tid, "size": size}
        self._say(f"trial {tid} RUNNING   ({self._count()})", live_too=False)
        self._redraw()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # a trial restarted after a failure says where it resumed (its saved state may be a round
        # behind the rows already reported: the repeated round gives the same row)
        resumed, (tid, size) = int(result.get("resumed_from", -1)), _carry(trial)
        if tid in self.recovering or (resumed >= 0 and self.rounds_done.get(tid, 0) < (resumed + 1) * size):
            self.recovering.discard(tid)
            self._say(
                f"trial {tid} resumed at round {resumed} from its saved state"
                if resumed >= 0
                else f"trial {tid} restarted at round 0 (it had no saved state yet)"
            )
        if "test_accuracy" in result:  # a round's report (every kind's rows have the round columns)
            rnd = int(result["round"])
            if rnd == 0:
                self._say(f"trial {tid} runs on node {result.get('node_id', '?')}", live_too=False)
            before = self.rounds_done.get(tid, 0)
            self.rounds_done[tid] = (rnd + 1) * size
            self.rounds_this_run += max(0, self.rounds_done[tid] - before)
            fields = _fields(trial)
            self.running[tid] = {
                "trial_id": tid,
                "size": size,
                "round": rnd,
                "rounds": self.rounds,
                "fields": fields,
                **{column: result.get(column, float("nan")) for column, _ in fields},
            }
            self._say(f"trial {tid} round {rnd}: {shown(self.running[tid], ', ')}   ({self._count()})", live_too=False)
            self._redraw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        tid, size = _carry(trial)
        self.running.pop(tid, None)
        if tid in self.complete:
            self._say(f"trial {tid} already complete on disk: not recomputed", live_too=False)
            return
        self.finished += size
        self._say(f"trial {tid} TERMINATED ({self._count()})")

    def on_trial_recover(self, iteration, trials, trial, **info):
        tid, _ = _carry(trial)
        self.recovering.add(tid)
        self._say(f"trial {tid} RECOVERING from its saved state after a failure")

    def on_trial_error(self, iteration, trials, trial, **info):
        tid, size = _carry(trial)
        self.running.pop(tid, None)
        self.errored += size
        self._say(f"trial {tid} ERROR ({self._count()})")

    def on_experiment_end(self, trials, **info):
        self._redraw()  # the final counts stay on the screen
        self._block.height = 0
