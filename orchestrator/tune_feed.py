"""How the driver hands Tune its trials: ``TrialFeed``, a Tune searcher that gives out the sweep's
Tune trials (``TrialCarry.to_dict()`` entries, ``grid_entries``) one at a time,
in order, then says it is finished; and ``LiveFIFO``, Tune's first-in-first-out choice of the next
trial to start, made among the live trials only.

Not a ``tune.grid_search`` over the entries: Tune's grid generator deep-copies the whole unresolved
``param_space`` (every entry) for every trial it makes, O(N) a trial and O(N²) a sweep; a trial here
costs one entry's copy whatever N. Tune asks for a trial only while fewer than
``max_concurrent_trials`` are live (its ``ConcurrencyLimiter`` around this searcher), as the grid
generator did. Its state is one index: every run of a sweep starts a fresh Tuner, and what a resume
depends on is the sweep directory, never Tune's checkpoint of this searcher.

Tune's ``FIFOScheduler`` walks every trial Tune holds (all that ever ran) on every step of its loop
to find one waiting: O(N) a step. ``LiveFIFO`` makes the same choice among Tune's live trials (at
most ``max_concurrent_trials`` of them here), by the order Tune added them.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from orchestrator.spec import seed_sets
from orchestrator.tune_trial import TrialCarry

__all__ = ["LiveFIFO", "TrialFeed", "grid_entries", "trial_name"]


def grid_entries(trials: list, batch_seeds: int) -> list[dict]:
    """One Tune trial per trial, or per chunk of ``batch_seeds`` seeds of one configuration, each
    a ``TrialCarry.to_dict()``."""
    if batch_seeds <= 1:
        return [TrialCarry.of([t]).to_dict() for t in trials]
    entries = []
    for members in seed_sets(trials).values():
        for i in range(0, len(members), batch_seeds):
            entries.append(TrialCarry.of(members[i : i + batch_seeds]).to_dict())
    return entries


def trial_name(trial) -> str:
    return TrialCarry.from_dict(trial.config["trial"]).trial_id


class TrialFeed(Searcher):
    """The Tune trials ``entries`` in order, each once: a trial's config is ``{"trial": entry}``
    (Tune adds the ``param_space``'s other keys)."""

    def __init__(self, entries: list[dict]):
        super().__init__()
        self.entries = entries
        self.handed = 0

    def __len__(self) -> int:
        return len(self.entries)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # the rest of the param_space is constant and merged into every trial's config by Tune
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if self.handed >= len(self.entries):
            return Searcher.FINISHED
        entry = self.entries[self.handed]
        self.handed += 1
        return {"trial": entry}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def get_state(self) -> dict:
        return {"handed": self.handed}

    def set_state(self, state: dict) -> None:
        self.handed = state["handed"]

    def save(self, checkpoint_path: str) -> None:
        # Tune's experiment checkpoint: the index, not the entries (O(1) whatever N)
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


class LiveFIFO(FIFOScheduler):
    """The waiting trial Tune added first (else the paused one), as ``FIFOScheduler`` chooses, from
    ``get_live_trials()`` (trials neither terminated nor errored) instead of every trial. A trial
    that Tune retries after a failure is added again, at the end, as Tune moves it in its list."""

    def __init__(self):
        super().__init__()
        self.added: dict[Trial, int] = {}
        self.count = itertools.count()

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self.added[trial] = next(self.count)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.added.pop(trial, None)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self.added.pop(trial, None)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self.added.pop(trial, None)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            ready = [t for t in live if t.status == status]
            if ready:
                return min(ready, key=lambda t: self.added.get(t, -1))
        return None
