"""A sweep's trials: one grid point each, of one trial kind (``glth_core.kinds``)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from glth_core import kinds
from glth_core.config import canonical_json


@dataclass(frozen=True)
class Trial:
    """One grid point: the config of what one trial runs, and its kind."""

    config: Any
    kind: str = kinds.DEFAULT

    @property
    def experiment(self):
        return kinds.get(self.kind)

    @functools.cached_property  # a frozen config: hashed once (a sweep asks for it per trial, many times)
    def trial_id(self) -> str:
        """The content hash: the trial id, the MLflow tag and the dedupe key."""
        return self.config.content_hash()

    @property
    def run_name(self) -> str:
        return self.experiment.run_name(self.config)

    @property
    def rows_expected(self) -> int:
        """How many ok rows make the trial complete (IMP rounds, density levels, 1 construction)."""
        return int(self.config.rounds)

    @property
    def describe(self) -> dict:
        """The columns that describe the trial in each of its rows (dictionary, τ, …)."""
        return self.experiment.describe(self.config)

    @property
    def dictionary_label(self) -> str:
        return self.describe["dictionary"]

    def meta(self, sweep_id: str) -> dict:
        """Columns shared by every row of the trial."""
        c = self.config
        return {
            "kind": self.kind,
            "sweep_id": sweep_id,
            "trial_id": self.trial_id,
            "run_name": self.run_name,
            "rows_expected": self.rows_expected,
            "seed": c.seed,
            "dataset": c.dataset,
            "model": c.model,
            **self.describe,
            # the flat config: MLflow params (``params.tau``) and the Parquet config column
            "config": canonical_json({**c.to_dict(), "seeds": c.seeds(), "trial_id": self.trial_id}),
        }

    def to_dict(self) -> dict:
        return {"kind": self.kind, "config": self.config.to_dict(), "trial_id": self.trial_id}

    @classmethod
    def from_dict(cls, d: dict) -> "Trial":
        kind = d.get("kind", kinds.DEFAULT)
        return cls(kinds.get(kind).config_cls.from_dict(d["config"]), kind)

    def plan_entry(self) -> dict:
        """What ``orchestrator.dry_run.plan`` reads."""
        return {
            "trial_id": self.trial_id,
            "kind": self.kind,
            "run_name": self.run_name,
            "rows_expected": self.rows_expected,
            "config": self.config.to_dict(),
        }


@dataclass(frozen=True)
class Sweep:
    spec: Any  # the validated pydantic model of the spec
    text: str
    trials: tuple[Trial, ...] = field(default_factory=tuple)
    #: the ``profiles:`` entry merged over the spec (None: the spec as written)
    profile: str | None = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def experiment(self):
        return kinds.get(self.spec.kind)

    @property
    def rounds(self) -> int:
        """Rows per trial at most (IMP rounds, edge-popup density levels, or 1 for a construction)."""
        return max(t.rows_expected for t in self.trials)

    @functools.cached_property  # asked per trial (``t.meta(sweep.sweep_id)``): computed once, not N² hashes
    def sweep_id(self) -> str:
        h = hashlib.sha256(",".join(sorted(t.trial_id for t in self.trials)).encode()).hexdigest()[:8]
        return f"{self.spec.name}-{self.profile}-{h}" if self.profile else f"{self.spec.name}-{h}"
