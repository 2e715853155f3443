"""The experiment protocol: what one trial kind is, declared once.

An ``Experiment`` names a kind's config class (a ``glth_core.config.Config``), its state class
(``glth_core.state.State``) and its runner, and says what its rows look like, how its trials are
named and how its results are read. The orchestrator knows kinds only through this protocol and
the registry (``glth_core.kinds``), and reads its results through what it declares
(``results``: ``glth_core.results_view``); adding a kind is one file that defines an ``EXPERIMENT`` and
one line in the registry.

A runner has ``done``, ``run_round() -> record``, ``state`` (saved between rounds) and ``ticket``
(the last finished round's, or None). A *seed batch* runs several runners of one kind that differ
only in seed in lockstep (``glth_core.batched`` trains K seeds at once); a single trial is a batch
of one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from glth_core import dictionaries
from glth_core.data.augment import check_images
from glth_core.results_view import Curves, Results
from glth_core.train import DivergedError

#: every round row, whatever the kind (``glth_core.records.round_record`` makes them)
ROUND_COLUMNS: dict[str, type] = {
    "round": int,
    "kept": int,
    "total": int,
    "density": float,
    "compression": float,
    "test_accuracy": float,
    "test_loss": float,
    "val_accuracy": float,
    "train_accuracy": float,
    "train_loss": float,
    "epochs": float,
    "wall_seconds": float,  # the round's training (or search) time
    "eval_seconds": float,  # its evaluation of the three splits
    "rank": int,  # kept groups; null for ungrouped dictionaries
}
#: the row columns that time a round: they differ between two runs of one trial, nothing else may
TIMING_COLUMNS = ("wall_seconds", "eval_seconds", "lmc_seconds")
#: what describes a trial in each of its rows (``Experiment.describe``)
DESCRIBE_COLUMNS: dict[str, type] = {
    "dictionary": str,
    "dictionary_kind": str,
    "basis": str,
    "tau": float,
    "rewind": str,
    "control": str,
}


def dictionary_columns(spec: dict) -> dict[str, Any]:
    """The describe columns of a dictionary spec: its label, kind and variant."""
    variant = spec.get("basis") or spec.get("method") or spec.get("block") or ""
    return {"dictionary": dictionaries.label_of(spec), "dictionary_kind": spec["kind"], "basis": str(variant)}


class BatchOfOne:
    """One runner as a seed batch of one (the same interface as ``glth_core.batched.BatchedTrajectory``)."""

    def __init__(self, runner):
        self.runner = runner

    @property
    def done(self) -> bool:
        return self.runner.done

    @property
    def states(self) -> list:
        return [self.runner.state]

    @property
    def tickets(self) -> list:
        return [self.runner.ticket]

    def run_round(self) -> list[dict]:
        try:
            return [self.runner.run_round()]
        except DivergedError as e:
            e.index = 0
            raise


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type
    state_cls: type
    #: (config, state=None, data=None) → runner
    runner: Callable[..., Any]
    #: (config) → the MLflow run name and progress label of a trial
    run_name: Callable[[Any], str]
    #: (config) → the DESCRIBE_COLUMNS values (and any of ``columns``) shared by a trial's rows
    describe: Callable[[Any], dict]
    #: row columns this kind adds to ROUND_COLUMNS and DESCRIBE_COLUMNS, with their types
    columns: dict[str, type] = field(default_factory=dict)
    #: (configs, states, data=None) → a batch runner for K > 1 configs differing only in seed; None: no batching
    batch: Callable[..., Any] | None = None
    #: (configs) → raise ValueError unless they can run as one batch
    check_batch: Callable[[list], None] | None = None
    #: how its results are read: summary, figures, progress fields (``glth_core.results_view``)
    results: Results = Curves()
    #: (config, model) → raise ValueError: a kind's own check beyond its dictionary spec
    check_config: Callable[[Any, Any], None] | None = None

    def batch_runner(self, configs: list, states: list | None = None, batched: bool = False, data=None):
        """A seed-batch runner over ``configs`` (with their saved states, or None to start); ``batched``
        keeps the batch runner for what is left of a batch (one member, say) so that it goes on
        as it began. ``data``: the loaded dataset the configs name (one for a batch: its members
        differ only in seed), handed to the runner instead of its own ``data.load_for``."""
        states = states or [None] * len(configs)
        given = {} if data is None else {"data": data}  # a kind without a dataset is never handed one
        if len(configs) == 1 and not (batched and self.batch is not None):
            return BatchOfOne(self.runner(configs[0], state=states[0], **given))
        if self.batch is None:
            raise ValueError(f"batch_seeds: kind {self.name} does not batch seeds")
        return self.batch(configs, states, **given)

    def check(self, config, model) -> None:
        """Check a config against its built model (cheap; raises ValueError in one line)."""
        spec = config.resolved().get("dictionary")
        if isinstance(spec, dict):
            dictionaries.validate(spec, model)
        augment = getattr(getattr(config, "train", None), "augment", "none")
        if augment != "none":  # crop_flip needs images: the model's input, as the trainer feeds it
            check_images(
                augment,
                getattr(model, "input_shape", None),
                input_transformed=isinstance(spec, dict) and dictionaries.transforms_inputs(spec, model),
            )
        if self.check_config is not None:
            self.check_config(config, model)

    def all_columns(self) -> dict[str, type]:
        return {**DESCRIBE_COLUMNS, **ROUND_COLUMNS, **self.columns}


def json_or_str(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
