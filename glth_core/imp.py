"""One IMP trajectory (one seed, one dictionary, one τ) over all its rounds.

Round t: rewind → train over Span(D_t) → evaluate → sparsify into D_{t+1}. Round 0 is the
dense network. The whole state between rounds is a ``TrajectoryState``: save it after any
round, load it in another process, and the remaining rounds come out bit-identical on CPU.
Where a round starts and which steps it trains: ``glth_core.rewind``; how the next mask is
chosen (controls, one-shot, layerwise, rounding): ``glth_core.pruning``.
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
from glth_core.pruning import CONTROLS, MaskRule, check_pruning
from glth_core.rewind import REWINDS, TrainJob, check_with_train, check_rewind, rewind_label, round_generator, round_jobs
from glth_core.rounds import RoundRunner
from glth_core.sparsify import ROUNDINGS, sparsify
from glth_core.state import State
from glth_core.train import Evaluation, Parameterization, TrainConfig, Weights, evaluate, train

__all__ = ["TrajectoryConfig", "TrajectoryState", "Trajectory", "Ticket", "run_trajectory", "sparsify", "REWINDS",
           "CONTROLS", "TrainJob", "round_generator", "rewind_label"]

REINIT_SEED_OFFSET = 7919  # the fresh initialization of the reinit control uses seed + this


@dataclass(frozen=True)
class TrajectoryConfig(SeededDictionary, Config):
    """Everything that determines a trajectory; its identity hashes to the trial id. ``rewind``: see
    ``glth_core.rewind``; ``control``, ``prune_rounding``, ``pruning``, ``layer_tau``: see
    ``glth_core.pruning``."""

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

    def extra_seeds(self) -> dict:
        return {
            # random masks, and the structured control's random order where the dictionary has none
            "random_mask": self.seed if self.control in ("random_mask", "structured") else None,
            "reinit": self.seed + REINIT_SEED_OFFSET if self.control == "reinit" else None,
        }


@dataclass
class Ticket:
    """What one finished round leaves: the mask it trained under and the trained weights
    (coefficients stored only where the mask keeps them). Small enough to keep every round."""

    round: int
    mask: torch.Tensor
    kept_coeffs: torch.Tensor
    free: dict[str, torch.Tensor]

    @classmethod
    def of(cls, round_index: int, mask: torch.Tensor, w: Weights) -> "Ticket":
        return cls(round_index, mask.clone(), w.coeffs.detach()[mask].clone(), {k: v.detach().clone() for k, v in w.free.items()})

    def weights(self) -> Weights:
        coeffs = torch.zeros(self.mask.shape, dtype=self.kept_coeffs.dtype, device=self.kept_coeffs.device)
        coeffs[self.mask] = self.kept_coeffs
        return Weights(coeffs, dict(self.free))

    def to_dict(self) -> dict:
        return {"round": self.round, "mask": self.mask, "kept_coeffs": self.kept_coeffs, "free": self.free}

    @classmethod
    def from_dict(cls, d: dict) -> "Ticket":
        return cls(d["round"], d["mask"], d["kept_coeffs"], dict(d["free"]))


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


def round_record(param: Parameterization, inputs: dict, data: datasets.Dataset, w: Weights, mask: torch.Tensor,
                 round_index: int, steps: int, train_cfg: TrainConfig, seconds: float,
                 evaluations: dict[str, Evaluation] | None = None) -> dict:
    """One round's row: ``w`` under ``mask`` evaluated on every split. ``inputs`` are the splits as the
    parameterization sees them (``prepare_inputs``). Shared by IMP and the strong-ticket search.
    ``evaluations`` ({split: Evaluation}) are used instead when given (batched seeds evaluate together)."""
    dictionary = param.dictionary
    ev = evaluations or {
        split: evaluate(param, w, mask, inputs[split], getattr(data, f"{split}_y"), train_cfg.eval_batch_size)
        for split in ("train", "val", "test")
    }
    kept, total = int(mask.sum()), dictionary.size
    n_train = inputs["train"].shape[0]
    record = {
        "round": round_index,
        "kept": kept,
        "total": total,
        "density": kept / total,
        "compression": 1.0 - kept / total,
        "test_accuracy": ev["test"].accuracy,
        "test_loss": ev["test"].loss,
        "val_accuracy": ev["val"].accuracy,
        "train_accuracy": ev["train"].accuracy,
        "train_loss": ev["train"].loss,
        "epochs": steps * train_cfg.batch_size / n_train,
        "wall_seconds": seconds,
        "rank": None,
    }
    groups = dictionary.groups
    if groups is not None:
        kept_groups = torch.unique(groups[mask])
        record["rank"] = int(kept_groups.numel())
        if getattr(dictionary, "basis", None) == "identity":
            record["kept_inputs"] = kept_groups.tolist()
    return record


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
        self._rewind_point: Weights | None = None
        self.ticket: Ticket | None = None  # set by each run_round

    @property
    def done(self) -> bool:
        return self.state.round >= self.config.rounds

    # -- one round ----------------------------------------------------------------------------
    def run_round(self) -> dict:
        t0 = time.perf_counter()
        results = [self._train(job) for job in self.round_jobs()]
        return self.finish_round(results, time.perf_counter() - t0)

    def round_jobs(self) -> list[TrainJob]:
        """The trainings this round needs, in order: the ticket's own, then (reinit control) its
        mask from the fresh init (``glth_core.rewind.round_jobs``). ``finish_round`` takes their
        results; ``glth_core.batched`` runs each job for several seeds at once."""
        if self.done:
            raise RuntimeError("trajectory already finished")
        self._rewind_point = None
        return round_jobs(self.config, self.state, self.inputs["train"].shape[0], self._capture)

    def _capture(self, w: Weights) -> None:
        self._rewind_point = w  # kept by ``finish_round``: a round that fails leaves the state alone

    def finish_round(self, results: list[tuple[Weights, int]], seconds: float,
                     evaluations: dict[str, Evaluation] | None = None) -> dict:
        """Record, ticket and next mask from the (trained weights, steps) of each ``round_jobs``
        job; ``seconds`` is the round's training time; ``evaluations``: see ``round_record``."""
        cfg, st = self.config, self.state
        (trained, _), (shown, steps) = results[0], results[-1]  # the record is of the shown training
        record = self._record(shown, steps, seconds, evaluations)
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

    def _record(self, w: Weights, steps: int, seconds: float, evaluations: dict[str, Evaluation] | None = None) -> dict:
        return round_record(self.param, self.inputs, self.data, w, self.state.mask, self.state.round, steps,
                            self.config.train, seconds, evaluations)


def run_trajectory(config: TrajectoryConfig, on_round=None) -> list[dict]:
    return Trajectory(config).run(on_round)


def _batch(configs, states):
    from glth_core.batched import BatchedTrajectory

    return BatchedTrajectory(configs, states=states)


def _check_batch(configs):
    from glth_core.batched import check_batchable

    check_batchable(configs)


def pruning_label(c: TrajectoryConfig) -> str:
    """How the trajectory cuts, as a label suffix ("" for the defaults): -layerwise, -layertau, -ceil, -openlth."""
    parts = ["layerwise"] if c.pruning == "layerwise" else []
    parts += ["layertau"] if c.layer_tau else []
    parts += [c.prune_rounding.replace("_", "")] if c.prune_rounding != "round" else []
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


EXPERIMENT = Experiment(
    name="imp", config_cls=TrajectoryConfig, state_cls=TrajectoryState,
    runner=lambda config, state=None, data=None: Trajectory(config, data=data, state=state),
    run_name=_run_name, describe=_describe, batch=_batch, check_batch=_check_batch,
)
