"""Progress a person can read: trial state changes and a live count of rounds and trials."""

from __future__ import annotations

import sys
import time

from ray.tune import Callback


def _tid(trial) -> str:
    """Our content-hash trial id (Tune's own id changes between runs of a sweep)."""
    return trial.config["trial"]["trial_id"]


def _size(trial) -> int:
    """How many trajectories a Tune trial runs (K for a batch of seeds)."""
    return len(trial.config["trial"].get("batch", [None]))


class Progress(Callback):
    """A Tune callback that prints state changes and counts; it pickles with Tune's state."""

    def __init__(self, total_trials: int, rounds: int, already_done: int = 0, complete=()):
        self.total_trials, self.rounds, self.already_done = total_trials, rounds, already_done
        self.complete = set(complete)  # complete on disk (counted in already_done); a restore may list them again
        self.t0 = time.monotonic()
        self.rounds_done: dict[str, int] = {}
        self.finished = already_done
        self.recovering: set[str] = set()  # restarted after a failure; their next result says from where

    def _say(self, text: str) -> None:
        print(f"[glth {time.monotonic() - self.t0:6.0f}s] {text}", file=sys.stderr, flush=True)

    def _count(self) -> str:
        total_rounds = self.total_trials * self.rounds
        done = sum(self.rounds_done.values()) + self.already_done * self.rounds
        return f"{done}/{total_rounds} rounds, {self.finished}/{self.total_trials} trials done"

    def on_trial_start(self, iteration, trials, trial, **info):
        if _tid(trial) in self.complete:
            return
        self._say(f"trial {_tid(trial)} RUNNING   ({self._count()})")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Tune passes a result to callbacks before it registers the result's checkpoint, so a
        # trial killed just then resumes a round earlier than the rows already reported
        resumed, tid = int(result.get("resumed_from", -1)), _tid(trial)
        if tid in self.recovering or (resumed >= 0 and self.rounds_done.get(tid, 0) < (resumed + 1) * _size(trial)):
            self.recovering.discard(tid)
            self._say(f"trial {tid} resumed at round {resumed} from its checkpoint" if resumed >= 0
                      else f"trial {tid} restarted at round 0 (it had no checkpoint yet)")
        if "test_accuracy" in result:
            if int(result["round"]) == 0:
                self._say(f"trial {_tid(trial)} runs on node {result.get('node_id', '?')}")
            self.rounds_done[_tid(trial)] = (int(result["round"]) + 1) * _size(trial)
            self._say(f"trial {_tid(trial)} round {int(result['round'])}: test acc {result['test_accuracy']:.4f}, "
                      f"density {result['density']:.4f}   ({self._count()})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        if _tid(trial) in self.complete:
            self._say(f"trial {_tid(trial)} already complete on disk: not recomputed")
            return
        self.finished += _size(trial)
        self._say(f"trial {_tid(trial)} TERMINATED ({self._count()})")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recovering.add(_tid(trial))
        self._say(f"trial {_tid(trial)} RECOVERING from its last checkpoint after a failure")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"trial {_tid(trial)} ERROR ({self._count()})")
