"""The imp trial kind: how ``glth_core.imp``'s trajectories are named, labelled, checked and
batched (``glth_core.batched`` runs K seeds at once), wired into one ``Experiment``."""

from __future__ import annotations

from glth_core import dictionaries
from glth_core.batched import BatchedTrajectory, check_batchable
from glth_core.controls import control_of
from glth_core.experiment import Experiment, dictionary_columns, json_or_str
from glth_core.imp import Trajectory
from glth_core.layer_density import mixing_part
from glth_core.lmc import LMC_COLUMNS
from glth_core.records import VIEW_COLUMNS
from glth_core.rewind import rewind_label
from glth_core.trajectory import TrajectoryConfig, TrajectoryState

__all__ = ["EXPERIMENT", "pruning_label"]


def _batch(configs, states, data=None):
    return BatchedTrajectory(configs, data, states=states)


def _check_batch(configs):
    check_batchable(configs)


def pruning_label(c: TrajectoryConfig) -> str:
    """How the trajectory cuts and restarts, as a label suffix ("" for the defaults): -layerwise,
    -layertau, -ceil, -openlth, -normtensor, -normpart."""
    parts = ["layerwise"] if c.pruning == "layerwise" else []
    parts += ["layertau"] if c.layer_tau else []
    parts += [c.prune_rounding.replace("_", "")] if c.prune_rounding != "round" else []
    parts += [f"norm{c.rewind_norm}"] if c.rewind_norm != "none" else []
    return "".join(f"-{p}" for p in parts)


def _describe(c: TrajectoryConfig) -> dict:
    """A non-default way of cutting is part of the curve's dictionary label (curves are keyed by it)."""
    columns = dictionary_columns(c.dictionary_spec)
    columns["dictionary"] += pruning_label(c)
    return {**columns, "tau": c.tau, "rewind": json_or_str(c.rewind), "control": c.control}


def _run_name(c: TrajectoryConfig) -> str:
    ctl = control_of(c.control).suffix()
    label = dictionaries.label_of(c.dictionary_spec) + pruning_label(c)
    return f"{label}{ctl}-tau{c.tau:g}-{rewind_label(c.rewind)}-s{c.seed}"


def _check_config(c: TrajectoryConfig, model) -> None:
    """``rewind_norm: tensor`` needs coefficients that belong to one tensor each (checked from the
    spec, before any basis is built)."""
    if c.rewind_norm == "tensor":
        why = mixing_part(c.dictionary_spec, model)
        if why is not None:
            raise ValueError(
                f"rewind_norm: tensor rescales each tensor's own coefficients; the dictionary's {why} "
                "(use rewind_norm part)"
            )


EXPERIMENT = Experiment(
    name="imp",
    config_cls=TrajectoryConfig,
    state_cls=TrajectoryState,
    runner=lambda config, state=None, data=None: Trajectory(config, data=data, state=state),
    run_name=_run_name,
    describe=_describe,
    batch=_batch,
    check_batch=_check_batch,
    columns={**VIEW_COLUMNS, **LMC_COLUMNS},
    check_config=_check_config,
)
