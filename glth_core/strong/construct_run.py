"""A constructive strong ticket as one trial: train the target with glth, then build and
evaluate the pruned random network that approximates it (SubsetSum construction).

Same protocol as ``glth_core.imp.Trajectory`` (``done``, ``run_round``, ``state``), so the
orchestrator runs it as a Tune trial; it has one round.

Like for like with Pensia et al. 2020: ``n`` defaults to their int(c·round(log2(1/ε))) (21 for
ε = 0.01, c = 3); the record's ``candidate_per_target`` is their count (random scalars the
construction can use per target weight, 21·(1 + d_out)/d_out ≈ 21 for their iid network; the dense
expansion's ``random_per_target`` is larger) and ``over_epsilon`` counts the target weights the
construction leaves more than ε away (Pensia's MIP refuses to proceed unless none is). ``signs``:
``iid`` is the paper's network; ``paired`` gives every subset-sum all n candidates, so every weight
is within ε (the headline); both are labelled (``basis``/``signs`` columns, run name).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from glth_core import data as datasets
from glth_core.config import Config
from glth_core.experiment import Experiment
from glth_core.imp import Trajectory
from glth_core.results_view import Shown, Table
from glth_core.schedule import TrainConfig
from glth_core.state import State
from glth_core.strong.construct import DISTRIBUTIONS, SIGNS, construct
from glth_core.strong.evaluate import evaluate, output_error
from glth_core.trajectory import TrajectoryConfig

TARGET_TRAIN = TrainConfig(epochs=3, batch_size=128, optimizer="adam", lr=1e-3)


@dataclass(frozen=True)
class ConstructConfig(Config):
    """Target (dataset, model, training) and construction (ε, n or c, distribution, seed)."""

    KIND: ClassVar[str] = "construct"

    dataset: str = "mnist"
    data_dir: str | None = None
    model: str = "mlp_500_nobias"
    epsilon: float = 0.01
    n: int | None = None
    c: float = 3.0
    distribution: str = "uniform"
    #: iid: the paper's network (u's of either sign); paired: n candidates for every subset-sum
    signs: str = "iid"
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TARGET_TRAIN)
    val_fraction: float = 0.1
    split_seed: int = 0
    #: per-channel normalization of every split (``glth_core.data.normalize``): train, none, {mean, std}
    normalize: Any = "train"
    device: str = "cpu"

    def check(self):
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"epsilon: must be in (0, 1), got {self.epsilon}")
        if self.n is not None and not 1 <= self.n <= 40:
            raise ValueError(f"n: must be in 1..40 candidates per weight, got {self.n}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution: {self.distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
        if self.signs not in SIGNS:
            raise ValueError(f"signs: {self.signs!r} is not one of {', '.join(SIGNS)}")
        datasets.check_normalize(self.normalize)

    rounds = 1

    @property
    def label(self) -> str:
        """subsetsum-<distribution>, with -paired for the paired-sign network (iid: the paper's, unmarked)."""
        return f"subsetsum-{self.distribution}" + ("-paired" if self.signs == "paired" else "")

    def extra_seeds(self) -> dict:
        return {"random_network": self.seed}

    def target_config(self) -> TrajectoryConfig:
        return TrajectoryConfig(
            dataset=self.dataset,
            data_dir=self.data_dir,
            model=self.model,
            rounds=1,
            seed=self.seed,
            train=self.train,
            val_fraction=self.val_fraction,
            split_seed=self.split_seed,
            normalize=self.normalize,
            device=self.device,
        )


def train_target(config: ConstructConfig, data: datasets.Dataset) -> tuple[nn.Module, dict]:
    """The target network trained by glth (the dense round of a canonical trajectory with the
    config's model, data, training and seed), and that round's record."""
    run = Trajectory(config.target_config(), data=data)
    record = run.run_round()
    target = run.model
    target.load_state_dict(run.scope_weights())
    return target, record


@dataclass
class ConstructState(State):
    round: int = 0
    records: list[dict] = field(default_factory=list)


class ConstructRun:
    def __init__(
        self, config: ConstructConfig, data: datasets.Dataset | None = None, state: ConstructState | None = None
    ):
        self.config = config
        self.data = data or datasets.load_for(config)
        self.state = state or ConstructState()
        self.ticket = None  # a construction is not a dictionary ticket
        self.construction = None

    @property
    def done(self) -> bool:
        return self.state.round >= 1

    def run_round(self) -> dict:
        cfg, d = self.config, self.data
        t0 = time.perf_counter()
        target, target_record = train_target(cfg, d)
        built = construct(
            target, epsilon=cfg.epsilon, n=cfg.n, c=cfg.c, distribution=cfg.distribution, signs=cfg.signs, seed=cfg.seed
        )
        self.construction = built
        pruned = built.pruned_net
        ev = {s: evaluate(pruned, getattr(d, f"{s}_x"), getattr(d, f"{s}_y")) for s in ("train", "val", "test")}
        out_max, out_mean = output_error(target, pruned, d.test_x)
        record = {
            "round": 0,
            "kept": built.kept_weights,
            "total": built.random_weights,
            "density": built.kept_weights / built.random_weights,
            "compression": 1.0 - built.kept_weights / built.random_weights,
            "test_accuracy": ev["test"][0],
            "test_loss": ev["test"][1],
            "val_accuracy": ev["val"][0],
            "train_accuracy": ev["train"][0],
            "train_loss": ev["train"][1],
            "epochs": target_record["epochs"],
            "wall_seconds": time.perf_counter() - t0,
            "rank": None,
            "target_accuracy": target_record["test_accuracy"],
            "accuracy_gap": ev["test"][0] - target_record["test_accuracy"],
            "max_weight_error": built.max_weight_error,
            "mean_weight_error": built.mean_weight_error,
            "max_output_error": out_max,
            "mean_output_error": out_mean,
            "kept_per_target": built.kept_per_target,
            "random_per_target": built.random_per_target,
            "candidate_per_target": built.candidate_per_target,
            "target_weights": built.target_weights,
            "over_epsilon": built.over_epsilon,
            "n": built.n,
            "epsilon": cfg.epsilon,
            "construct_seconds": built.wall_seconds,
            "solve_seconds": built.solve_seconds,
        }
        self.state.records.append(record)
        self.state.round = 1
        return record


def _describe(c: ConstructConfig) -> dict:
    return {
        "dictionary": c.label,
        "dictionary_kind": "subset_sum",
        "basis": c.signs,
        "tau": None,
        "rewind": "none",
        "control": "none",
        "distribution": c.distribution,
        "signs": c.signs,
    }


#: per sampling distribution × ε × n, mean and std over seeds; its weight error and cost against n
RESULTS = Table(
    keys=("distribution", "epsilon", "n"),
    metrics=(
        "test_accuracy",
        "target_accuracy",
        "max_weight_error",
        "mean_weight_error",
        "max_output_error",
        "kept_per_target",
        "random_per_target",
        "construct_seconds",
    ),
    derived={"accuracy_gap_points": lambda s: 100 * (s["test_accuracy_mean"] - s["target_accuracy_mean"])},
    shown=(
        Shown("pruned_acc", "test_accuracy_mean", "{:.2f}", scale=100, spread="test_accuracy_std"),
        Shown("target_acc", "target_accuracy_mean", "{:.2f}", scale=100),
        Shown("gap_pts", "accuracy_gap_points", "{:+.2f}"),
        Shown("max_w_err", "max_weight_error_mean", "{:.4f}"),
        Shown("mean_w_err", "mean_weight_error_mean", "{:.5f}"),
        Shown("kept/target", "kept_per_target_mean", "{:.2f}x"),
        Shown("random/target", "random_per_target_mean", "{:.1f}x"),
        Shown("seconds", "construct_seconds_mean", "{:.1f}"),
    ),
    figures=("construct_vs_n",),
)

EXPERIMENT = Experiment(
    name="construct",
    config_cls=ConstructConfig,
    state_cls=ConstructState,
    runner=lambda config, state=None, data=None: ConstructRun(config, data=data, state=state),
    run_name=lambda c: f"subsetsum-{c.distribution}-{c.signs}-eps{c.epsilon:g}-n{c.n or 'auto'}-c{c.c:g}-s{c.seed}",
    describe=_describe,
    results=RESULTS,
    columns={
        "distribution": str,
        "epsilon": float,
        "n": int,
        "target_accuracy": float,
        "accuracy_gap": float,
        "max_weight_error": float,
        "mean_weight_error": float,
        "max_output_error": float,
        "mean_output_error": float,
        "kept_per_target": float,
        "random_per_target": float,
        "candidate_per_target": float,
        "target_weights": int,
        "over_epsilon": int,
        "signs": str,
        "construct_seconds": float,
        "solve_seconds": float,
    },
)
