"""What one Tune trial carries: ``TrialCarry``, written into Tune's ``param_space`` by the driver
(``orchestrator.tune_feed.grid_entries``) and read back by the trainable (``orchestrator.trainable``)
and the progress display (``orchestrator.progress``), so the three agree on one shape.

A Tune trial runs a seed batch: one trial, or ``batch_seeds: K`` seeds of one configuration trained
at once. Its id is the member's trial id for a batch of one, else ``batch-`` and a hash of the
members' ids (the name of its resume state, ``state/<id>.pt``: it must not change).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from orchestrator.spec import Trial

__all__ = ["TrialCarry"]


@dataclass(frozen=True)
class TrialCarry:
    """A Tune trial's id and the trials it runs (``members``, one per seed of a batch)."""

    trial_id: str
    members: tuple[Trial, ...]

    @classmethod
    def of(cls, members: list[Trial]) -> TrialCarry:
        """The Tune trial that runs ``members`` (one trial, or seeds of one configuration)."""
        ids = [t.trial_id for t in members]
        batch_id = ids[0] if len(ids) == 1 else "batch-" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:8]
        return cls(batch_id, tuple(members))

    @property
    def size(self) -> int:
        """How many trajectories the Tune trial runs (K for a batch of K seeds)."""
        return len(self.members)

    def to_dict(self) -> dict:
        """Plain data for Tune's ``param_space`` (it copies and serializes configs)."""
        return {"trial_id": self.trial_id, "members": [t.to_dict() for t in self.members]}

    @classmethod
    def from_dict(cls, d: dict) -> TrialCarry:
        return cls(d["trial_id"], tuple(Trial.from_dict(m) for m in d["members"]))

    @staticmethod
    def member_ids(d: dict) -> list[str]:
        """The member trial ids of a ``to_dict()``, without rebuilding the trials' configs."""
        return [m["trial_id"] for m in d["members"]]
