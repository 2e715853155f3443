"""What determines an IMP trajectory and what it carries between rounds: ``TrajectoryConfig``
(its identity hashes to the trial id), ``TrajectoryState`` (save it after any round, load it in
another process, and the remaining rounds come out bit-identical on CPU) and ``build_model``,
the seeded initialization of its network. The runner is ``glth_core.imp``; the kind's wiring
(run names, labels, batching) ``glth_core.imp_kind``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from glth_core import data as datasets
from glth_core import dictionaries, models
from glth_core.config import Config, SeededDictionary
from glth_core.controls import REINIT_SEED_OFFSET, control_of
from glth_core.lmc import check_lmc
from glth_core.parameterization import Weights
from glth_core.pruning import check_pruning
from glth_core.rewind import check_rewind, check_rewind_norm, check_with_train
from glth_core.schedule import TrainConfig
from glth_core.sparsify import ROUNDINGS
from glth_core.state import State

__all__ = ["TrajectoryConfig", "TrajectoryState", "build_model", "REINIT_SEED_OFFSET"]


@dataclass(frozen=True)
class TrajectoryConfig(SeededDictionary, Config):
    """Everything that determines a trajectory; its identity hashes to the trial id. ``rewind``,
    ``rewind_norm``: see ``glth_core.rewind``; ``control`` (``glth_core.controls``), ``prune_rounding``, ``pruning``,
    ``layer_tau``: see ``glth_core.pruning``; ``lmc_points``: see ``glth_core.lmc``."""

    KIND: ClassVar[str] = "imp"
    #: keys a sweep spec must give for this kind
    SPEC_REQUIRED: ClassVar[tuple[str, ...]] = ("rounds",)

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp_300_100"
    dictionary: dictionaries.Spec = field(default_factory=lambda: {"kind": "canonical"})
    tau: float = 0.2
    rounds: int = 8
    seed: int = 0
    rewind: Any = "init"
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    split_seed: int = 0
    #: per-channel normalization of every split (``glth_core.data.normalize``): train, none, {mean, std}
    normalize: Any = "train"
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
        control_of(self.control)  # an unknown name: one line listing ``CONTROLS``
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
        datasets.check_normalize(self.normalize)

    def extra_seeds(self) -> dict:
        return {
            # the control's draws (``glth_core.controls``): these two keys are always recorded
            "random_mask": None,
            "reinit": None,
            **control_of(self.control).extra_seeds(self),
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
    #: the dense round's trained coefficients (kept for a control that cuts every mask from them: oneshot)
    dense_scores: torch.Tensor | None = None


def build_model(config: TrajectoryConfig, data: datasets.Dataset, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.build(config.model, data.input_shape, data.num_classes).to(config.device)
