"""One IMP trajectory (one seed, one dictionary, one τ) over all its rounds.

Round t: rewind → train over Span(D_t) → evaluate → sparsify into D_{t+1}. Round 0 is the
dense network. The whole state between rounds is a ``TrajectoryState``: save it after any
round, load it in another process, and the remaining rounds come out bit-identical on CPU.
Where a round starts and which steps it trains (and ``rewind_norm``): ``glth_core.rewind``; how
the next mask is chosen (controls, one-shot, layerwise, rounding): ``glth_core.pruning``; the
optional linear-mode-connectivity measurement of each round (``lmc_points``): ``glth_core.lmc``;
a round's row (per-layer density, FLOPs of the exported ticket): ``glth_core.records``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from glth_core import data as datasets
from glth_core import dictionaries, models
from glth_core.config import Config, SeededDictionary
from glth_core.experiment import Experiment, dictionary_columns, json_or_str
from glth_core.layer_views import mixing_part
from glth_core.lmc import LMC_COLUMNS, check_lmc, copy_generators, instability
from glth_core.pruning import CONTROLS, MaskRule, check_pruning
from glth_core.records import VIEW_COLUMNS, round_record
from glth_core.rewind import (
    REWIND_NORMS,
    REWINDS,
    TrainJob,
    check_rewind,
    check_rewind_norm,
    check_with_train,
    is_late,
    norm_segments,
    rewind_label,
    rewind_step,
    round_generator,
    round_jobs,
)
from glth_core.rounds import RoundRunner
from glth_core.schedule import Plan
from glth_core.sparsify import ROUNDINGS, sparsify
from glth_core.state import State
from glth_core.ticket import Ticket
from glth_core.train import Evaluation, Parameterization, TrainConfig, Weights, train

__all__ = ["TrajectoryConfig", "TrajectoryState", "Trajectory", "Ticket", "run_trajectory", "sparsify", "REWINDS",
           "REWIND_NORMS", "CONTROLS", "TrainJob", "round_generator", "rewind_label", "round_record"]

REINIT_SEED_OFFSET = 7919  # the fresh initialization of the reinit control uses seed + this


@dataclass(frozen=True)
class TrajectoryConfig(SeededDictionary, Config):
    """Everything that determines a trajectory; its identity hashes to the trial id. ``rewind``,
    ``rewind_norm``: see ``glth_core.rewind``; ``control``, ``prune_rounding``, ``pruning``,
    ``layer_tau``: see ``glth_core.pruning``; ``lmc_points``: see ``glth_core.lmc``."""

    KIND: ClassVar[str] = "imp"
    #: keys a sweep spec must give for this kind
    SPEC_REQUIRED: ClassVar[tuple[str, ...]] = ("rounds",)

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp_300_100"
    dictionary: dict = field(default_factory=lambda: {"kind": "canonical"})
    tau: float = 0.2
    rounds: int = 8
    seed: int = 0
    rewind: Any = "init"
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    split_seed: int = 0
    control: str = "none"
    device: str = "cpu"
    #: how many go each round: round(τ·n), ⌈τ·n⌉, or open_lth's sparse_global rule (``sparsify``)
    prune_rounding: str = "round"
    #: global: one ordering over the dictionary; layerwise: each scope tensor loses τ of its own
    pruning: str = "global"
    #: {scope tensor: τ} pruned at its own rate among its own coefficients (``glth_core.pruning``)
    layer_tau: dict[str, float] | None = None
    #: norm-preserving rewind: none, or rescale each scope tensor / each part to its initial norm
    rewind_norm: str = "none"
    #: linear mode connectivity per round: 0 (off) or the points on the path between two copies
    lmc_points: int = 0

    def check(self):
        if self.control not in CONTROLS:
            raise ValueError(f"control: {self.control!r} is not one of {', '.join(CONTROLS)}")
        if not 0.0 < self.tau < 1.0:
            raise ValueError(f"tau: must be in (0, 1), got {self.tau}")
        if self.rounds < 1:
            raise ValueError(f"rounds: must be ≥ 1, got {self.rounds}")
        if self.prune_rounding not in ROUNDINGS:
            raise ValueError(f"prune_rounding: {self.prune_rounding!r} is not one of {', '.join(ROUNDINGS)}")
        check_rewind(self.rewind)
        check_with_train(self.rewind, self.train)
        check_pruning(self)
        check_rewind_norm(self.rewind_norm, self.rewind)
        check_lmc(self.lmc_points)

    def extra_seeds(self) -> dict:
        return {
            # random masks, and the structured control's random order where the dictionary has none
            "random_mask": self.seed if self.control in ("random_mask", "structured") else None,
            "reinit": self.seed + REINIT_SEED_OFFSET if self.control == "reinit" else None,
            # the two LMC copies' data orders: round_generator(seed, round, streams 4 and 5)
            "lmc_data_orders": self.seed if self.lmc_points else None,
        }


@dataclass
class TrajectoryState(State):
    """All a trajectory needs between rounds. Small, plain tensors and lists."""

    round: int
    mask: torch.Tensor
    init: Weights
    rewind_point: Weights | None
    last: Weights | None
    records: list[dict] = field(default_factory=list)
    reinit: Weights | None = None
    #: the dense round's trained coefficients (``control: oneshot`` cuts every mask from them)
    dense_scores: torch.Tensor | None = None


def build_model(config: TrajectoryConfig, data: datasets.Dataset, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.build(config.model, data.input_shape, data.num_classes).to(config.device)


class Trajectory(RoundRunner):
    """Builds model, data and dictionary from a config, then runs rounds one at a time."""

    def __init__(self, config: TrajectoryConfig, data: datasets.Dataset | None = None, state: TrajectoryState | None = None,
                 *, shared: "Trajectory | None" = None):
        """``shared``: a trajectory on the same data and dictionary (another seed, as in
        ``glth_core.batched``) whose data, dictionary and prepared inputs this one reuses."""
        self.config = config
        self.data = shared.data if shared is not None else data or datasets.load(
            config.dataset, config.data_dir, val_fraction=config.val_fraction, split_seed=config.split_seed, device=config.device
        )
        self.model = build_model(config, self.data, config.seed)
        if shared is not None:
            self.dictionary = shared.dictionary
        else:
            self.dictionary = dictionaries.build(config.dictionary_spec, self.model, train_x=self.data.train_x)
        self.param = Parameterization(self.model, self.dictionary)
        self.inputs = shared.inputs if shared is not None else {
            split: self.param.prepare_inputs(getattr(self.data, f"{split}_x")) for split in ("train", "val", "test")
        }
        if state is None:
            init = self.param.weights_of(self.model)
            mask = torch.ones(self.dictionary.size, dtype=torch.bool, device=init.coeffs.device)
            state = TrajectoryState(round=0, mask=mask, init=init, rewind_point=None, last=None)
            if config.control == "reinit":
                fresh = build_model(config, self.data, config.seed + REINIT_SEED_OFFSET)
                state.reinit = self.param.weights_of(fresh)
        self.state = state
        self.mask_rule = MaskRule(config, self.dictionary)
        self.norm_segments = norm_segments(self.dictionary, config.rewind_norm)
        self._rewind_point: Weights | None = None
        self.ticket: Ticket | None = None  # set by each run_round

    @property
    def done(self) -> bool:
        return self.state.round >= self.config.rounds

    # -- one round ----------------------------------------------------------------------------
    def run_round(self) -> dict:
        t0 = time.perf_counter()
        jobs = self.round_jobs()
        results = [self._train(job) for job in jobs]
        seconds = time.perf_counter() - t0
        return self.finish_round(results, seconds, extra=self.lmc(jobs[0]) if self.config.lmc_points else None)

    def lmc(self, job: TrainJob) -> dict:
        """The round's linear mode connectivity (``glth_core.lmc``): two copies from the ticket
        job's start and steps under the round's mask. In round 0 of late rewinding the start is
        w_k, captured by the round's own training, and the copies train steps k…T."""
        cfg, t0 = self.config, time.perf_counter()
        start, plan = job.start, job.plan
        if self.state.round == 0 and is_late(cfg.rewind):
            k = rewind_step(cfg.rewind, cfg.train, self.inputs["train"].shape[0])
            start, plan = self._rewind_point, Plan(start_step=k)
        targets = {split: getattr(self.data, f"{split}_y") for split in ("train", "test")}
        out = instability(self.param, start, self.state.mask, self.inputs, targets, cfg.train,
                          copy_generators(cfg.seed, self.state.round), cfg.lmc_points, plan)
        return {**out, "lmc_seconds": time.perf_counter() - t0}

    def round_jobs(self) -> list[TrainJob]:
        """The trainings this round needs, in order: the ticket's own, then (reinit control) its
        mask from the fresh init (``glth_core.rewind.round_jobs``). ``finish_round`` takes their
        results; ``glth_core.batched`` runs each job for several seeds at once."""
        if self.done:
            raise RuntimeError("trajectory already finished")
        self._rewind_point = None
        return round_jobs(self.config, self.state, self.inputs["train"].shape[0], self._capture, self.norm_segments)

    def _capture(self, w: Weights) -> None:
        self._rewind_point = w  # kept by ``finish_round``: a round that fails leaves the state alone

    def finish_round(self, results: list[tuple[Weights, int]], seconds: float,
                     evaluations: dict[str, Evaluation] | None = None, extra: dict | None = None,
                     eval_seconds: float | None = None) -> dict:
        """Record, ticket and next mask from the (trained weights, steps) of each ``round_jobs``
        job; ``seconds`` is the round's training time; ``evaluations``: see ``round_record``;
        ``extra``: more columns of the record (the round's LMC)."""
        cfg, st = self.config, self.state
        (trained, _), (shown, steps) = results[0], results[-1]  # the record is of the shown training
        record = {**self._record(shown, steps, seconds, evaluations, eval_seconds), **(extra or {})}
        self.ticket = Ticket.of(st.round, st.mask, shown)
        if self._rewind_point is not None:
            st.rewind_point, self._rewind_point = self._rewind_point, None
        if st.round == 0 and cfg.control == "oneshot":
            st.dense_scores = trained.coeffs.detach().clone()
        st.records.append(record)
        st.last = trained
        st.round += 1
        if not self.done:
            st.mask = self.mask_rule.next_mask(st.mask, trained.coeffs, st.dense_scores, st.round)
        return record

    def _train(self, job: TrainJob):
        cfg = self.config
        return train(self.param, job.start, self.state.mask, self.inputs["train"], self.data.train_y, cfg.train,
                     round_generator(cfg.seed, job.data_round), plan=job.plan, on_step=job.on_step)

    def _record(self, w: Weights, steps: int, seconds: float, evaluations: dict[str, Evaluation] | None = None,
                eval_seconds: float | None = None) -> dict:
        return round_record(self.param, self.inputs, self.data, w, self.state.mask, self.state.round, steps,
                            self.config.train, seconds, evaluations, eval_seconds)


def run_trajectory(config: TrajectoryConfig, on_round=None) -> list[dict]:
    return Trajectory(config).run(on_round)


def _batch(configs, states):
    from glth_core.batched import BatchedTrajectory

    return BatchedTrajectory(configs, states=states)


def _check_batch(configs):
    from glth_core.batched import check_batchable

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
    ctl = "" if c.control == "none" else f"-{c.control}"
    label = dictionaries.label_of(c.dictionary_spec) + pruning_label(c)
    return f"{label}{ctl}-tau{c.tau:g}-{rewind_label(c.rewind)}-s{c.seed}"


def _check_config(c: TrajectoryConfig, model) -> None:
    """``rewind_norm: tensor`` needs coefficients that belong to one tensor each (checked from the
    spec, before any basis is built)."""
    if c.rewind_norm == "tensor":
        why = mixing_part(c.dictionary_spec, model)
        if why is not None:
            raise ValueError(f"rewind_norm: tensor rescales each tensor's own coefficients; the dictionary's {why} "
                             "(use rewind_norm part)")


EXPERIMENT = Experiment(
    name="imp", config_cls=TrajectoryConfig, state_cls=TrajectoryState,
    runner=lambda config, state=None, data=None: Trajectory(config, data=data, state=state),
    run_name=_run_name, describe=_describe, batch=_batch, check_batch=_check_batch,
    columns={**VIEW_COLUMNS, **LMC_COLUMNS}, check_config=_check_config,
)
