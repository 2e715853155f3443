"""Where a finished trial's state and tickets live: its latest Tune checkpoint."""

from __future__ import annotations

from pathlib import Path

from glth_core.imp import Ticket, TrajectoryState
from orchestrator.trial import STATE_FILE, TICKETS_FILE, load_tickets, member_file


def latest_checkpoint(sweep_dir: Path, trial_id: str) -> Path:
    """The trial's newest checkpoint in this sweep, or in the sweep it was reused from; a trial
    run in a batch of seeds lives in its batch's checkpoints (``tickets-<trial_id>.pt``)."""
    sweep_dir = Path(sweep_dir)
    for trial_dir in [sweep_dir / "tune" / "trials" / trial_id, *sweep_dir.parent.glob(f"*/tune/trials/{trial_id}")]:
        ckpts = sorted(trial_dir.glob("checkpoint_*"))
        if ckpts:
            return ckpts[-1]
    for batch_dir in sorted(sweep_dir.parent.glob("*/tune/trials/batch-*")):
        ckpts = sorted(batch_dir.glob("checkpoint_*"))
        if ckpts and (ckpts[-1] / member_file(TICKETS_FILE, trial_id)).exists():
            return ckpts[-1]
    raise FileNotFoundError(f"trial {trial_id}: no checkpoint under {sweep_dir / 'tune' / 'trials'}")


def trial_tickets(sweep_dir: Path, trial_id: str) -> dict[int, Ticket]:
    """Every finished round's ticket (mask + trained weights) of one trial."""
    ckpt = latest_checkpoint(sweep_dir, trial_id)
    return load_tickets(ckpt) or load_tickets(ckpt, trial_id)


def trial_state(sweep_dir: Path, trial_id: str) -> TrajectoryState:
    return TrajectoryState.load(latest_checkpoint(sweep_dir, trial_id) / STATE_FILE)
