"""The sweep directory, owned by glth, on any storage (``orchestrator.storage``)::

    <storage>/<sweep_id>/
      sweep.json                      layout version, sweep id, the MLflow tracking URI (written first)
      spec.yaml                       the spec as run (profile and overrides recorded)
      rounds/dictionary=<label>/<trial_id>.parquet   one row per round (orchestrator.sinks.parquet)
      rounds/dictionary=<label>/part-<n>.parquet     finished trials' rows merged (sinks.parquet_compact)
      tickets/<trial_id>/round-<r>.pt  each finished round's mask and trained weights
      state/<batch_id>.pt              a Tune trial's resume state: its members' states, failed rows
      lease.json                       the driver running the sweep now (orchestrator.lease)
      tune/                            Ray Tune's own bookkeeping (the driver's; never read by glth)
      analysis.parquet, plots/         written by `glth results` / `glth plot`

Workers write tickets and state (before they report the round), the driver writes the rest. Every
write is atomic on every backend (see ``Storage.write_bytes``). A directory written by an older
glth (no ``sweep.json``: tickets inside Tune's checkpoints, other trial ids) is refused by what
needs its tickets, with a one-line message naming the cause.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from glth_core.ticket import Ticket
from orchestrator.storage import Storage

LAYOUT = 2
MARKER = "sweep.json"
SPEC = "spec.yaml"
ROUNDS = "rounds"
TUNE = "tune"
_TICKET_NAME = re.compile(r"round-(\d+)\.pt")


class LayoutError(ValueError):
    """A sweep directory this glth cannot read (one line naming the cause)."""


class UnreadableState(ValueError):
    """A resume state that cannot be decoded (truncated, overwritten): one line naming the file."""


def _save(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _load(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


@dataclass
class BatchState:
    """What a Tune trial (one trial, or a batch of seeds) leaves between rounds."""

    states: dict = field(default_factory=dict)  # trial_id → the runner's state (glth_core.state.State)
    failed: dict = field(default_factory=dict)  # trial_id → its failed row(s)


class SweepDir:
    """One sweep's directory on its storage."""

    def __init__(self, storage: Storage, sweep_id: str):
        self.storage, self.sweep_id = storage, sweep_id
        self.store = storage.child(sweep_id)

    def __repr__(self):
        return f"SweepDir({self.store.uri!r})"

    @classmethod
    def at(cls, location) -> "SweepDir":
        """The sweep directory at a path or URI (``glth-runs/<sweep_id>``, ``s3://b/p/<sweep_id>``):
        for the entry points that are given one (the CLI, ``run_sweep``); what they call takes the
        ``SweepDir`` itself."""
        if isinstance(location, SweepDir):
            return location
        text = str(location).rstrip("/")
        parent, _, name = text.rpartition("/")
        if "://" not in text:
            path = Path(text).expanduser().resolve()
            parent, name = str(path.parent), path.name
        return cls(Storage.resolve(parent), name)

    @classmethod
    def under(cls, storage, sweep_id: str) -> "SweepDir":
        """The sweep ``sweep_id`` under ``storage``: a ``Storage``, or a storage setting (a path or
        URI; None: ``$GLTH_STORAGE``, else ``./glth-runs``). For entry points, as ``at``."""
        root = storage if isinstance(storage, Storage) else Storage.resolve(None if storage is None else str(storage))
        return cls(root, sweep_id)

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def location(self) -> Path | str:
        """Where it is, as a person names it: a local Path, or the URI on an object store."""
        return Path(self.store.root) if self.store.is_local else self.store.uri

    def siblings(self) -> Iterator["SweepDir"]:
        """The other sweeps on the same storage that have rows (where a finished trial is reused from)."""
        for name in self.storage.list():
            if name != self.sweep_id and self.storage.exists(f"{name}/{ROUNDS}"):
                yield SweepDir(self.storage, name)

    # -- the sweep --------------------------------------------------------------------------
    def create(self, spec_text: str, tracking_uri: str | None = None) -> None:
        """Write ``sweep.json`` (with where the run logs to MLflow, for the commands that read the
        sweep later) and ``spec.yaml``."""
        marker = {
            "layout": LAYOUT,
            "sweep_id": self.sweep_id,
            **({"tracking_uri": tracking_uri} if tracking_uri else {}),
        }
        self.store.write_text(MARKER, json.dumps(marker) + "\n")
        self.store.write_text(SPEC, spec_text)

    def tracking_uri(self) -> str | None:
        """The MLflow tracking URI the sweep last ran with (None for a sweep.json without one)."""
        try:
            value = json.loads(self.store.read_text(MARKER)).get("tracking_uri")
        except (OSError, ValueError, AttributeError):
            return None
        return str(value) if value else None

    def exists(self) -> bool:
        return self.store.exists(SPEC)

    def check_layout(self) -> None:
        """Raise LayoutError unless this directory was written with the current layout."""
        if not self.store.exists(MARKER):
            raise LayoutError(
                f"sweep {self.sweep_id}: written by an older glth (no {MARKER}: its tickets live in "
                f"Tune's checkpoints under other trial ids); rerun its spec.yaml to get layout {LAYOUT}"
            )
        layout = json.loads(self.store.read_text(MARKER)).get("layout")
        if layout != LAYOUT:
            raise LayoutError(f"sweep {self.sweep_id}: layout {layout} is not {LAYOUT}; rerun its spec.yaml")

    def spec_text(self) -> str:
        return self.store.read_text(SPEC)

    # -- tickets ----------------------------------------------------------------------------
    @staticmethod
    def _ticket(trial_id: str, round_index: int) -> str:
        return f"tickets/{trial_id}/round-{round_index:04d}.pt"

    def save_ticket(self, trial_id: str, ticket: Ticket) -> None:
        self.store.write_bytes(self._ticket(trial_id, ticket.round), _save(ticket.to_dict()))

    def tickets(self, trial_id: str) -> dict[int, Ticket]:
        """Every finished round's ticket of a trial ({} when it has none)."""
        out = {}
        for name in self.store.list(f"tickets/{trial_id}", suffix=".pt"):
            ticket = Ticket.from_dict(_load(self.store.read_bytes(f"tickets/{trial_id}/{name}")))
            out[ticket.round] = ticket
        return dict(sorted(out.items()))

    def ticket_rounds(self, trial_id: str) -> set[int]:
        """The rounds a trial has a ticket of (one listing; no ticket read)."""
        names = self.store.list(f"tickets/{trial_id}", suffix=".pt")
        return {int(m.group(1)) for name in names if (m := _TICKET_NAME.fullmatch(name))}

    def ticket(self, trial_id: str, round_index: int) -> Ticket:
        """One round's ticket of a trial: what reads the tickets of thousands of trials holds one
        round of each at a time, not every round (``seed_overlap``, ``baseline_overlap``)."""
        return Ticket.from_dict(_load(self.store.read_bytes(self._ticket(trial_id, round_index))))

    def ticket_trials(self) -> set[str]:
        """The trials with a tickets directory: one listing, however many trials the sweep has."""
        return set(self.store.list("tickets"))

    def copy_tickets(self, other: "SweepDir", trial_id: str) -> None:
        """Copy a trial's tickets from another sweep (a finished trial reused, not recomputed)."""
        for ticket in other.tickets(trial_id).values():
            self.save_ticket(trial_id, ticket)

    # -- resume state -------------------------------------------------------------------------
    @staticmethod
    def _state(batch_id: str) -> str:
        return f"state/{batch_id}.pt"

    def save_batch_state(self, batch_id: str, batch: BatchState) -> None:
        payload = {"states": {tid: s.to_dict() for tid, s in batch.states.items()}, "failed": batch.failed}
        self.store.write_bytes(self._state(batch_id), _save(payload))

    def has_batch_state(self, batch_id: str) -> bool:
        return self.store.exists(self._state(batch_id))

    def load_batch_state(self, batch_id: str, state_cls) -> BatchState:
        """The seed batch's saved state (empty when it has none); UnreadableState, one line naming the
        file, when what is there cannot be decoded (its trial then restarts from round 0)."""
        rel = self._state(batch_id)
        if not self.store.exists(rel):
            return BatchState()
        data = self.store.read_bytes(rel)  # a storage error is not the file's fault: raised as it is
        try:
            payload = _load(data)
            return BatchState(
                {tid: state_cls.from_dict(d) for tid, d in payload["states"].items()}, dict(payload["failed"])
            )
        except Exception as e:  # torch's zip reader, its unpickler or the state class: each refuses damage its way
            cause = " ".join(str(e).split())[:200] or type(e).__name__
            raise UnreadableState(f"resume state {self.store.uri_of(rel)} unreadable ({cause})") from None

    def clear_states(self) -> None:
        """Forget every resume state (``--force`` recomputes from round 0)."""
        self.store.delete_dir("state")
