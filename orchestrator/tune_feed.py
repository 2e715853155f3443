"""How the driver hands Tune its trials: ``TrialFeed``, a Tune searcher that gives out the sweep's
Tune trials (``TrialCarry.to_dict()`` entries, ``orchestrator.sweep.grid_entries``) one at a time,
in order, then says it is finished.

Not a ``tune.grid_search`` over the entries: Tune's grid generator deep-copies the whole unresolved
``param_space`` (every entry) for every trial it makes, O(N) a trial and O(N²) a sweep; a trial here
costs one entry's copy whatever N. Tune asks for a trial only while fewer than
``max_concurrent_trials`` are live (its ``ConcurrencyLimiter`` around this searcher), as the grid
generator did. Its state is one index: every run of a sweep starts a fresh Tuner, and what a resume
depends on is the sweep directory, never Tune's checkpoint of this searcher.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.search import Searcher

__all__ = ["TrialFeed"]


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
