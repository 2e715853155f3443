"""K IMP trajectories that differ only in their seed, trained at once.

A ``BatchedTrajectory`` holds one ``Trajectory`` per seed (they share the data, the dictionary
and the prepared inputs) and runs their rounds in lockstep: each round's trainings run once for
all K seeds with ``torch.func.vmap`` over stacked coefficients [K, size], stacked free
parameters and one mask per seed, each seed drawing its batches from its own
``round_generator(seed, round)``. Everything else (start points, records, tickets, sparsify)
is the seed's own ``Trajectory``, so each seed's records, masks and ``TrajectoryState`` equal
those of a separate run and each state checkpoints and resumes like a separate trajectory's.

The trainings and evaluations of K seeds at once are ``glth_core.batched_train``'s (one optimizer
over stacked tensors, looped or vmapped forwards); with looped forwards the results are
bit-identical to separate runs, with vmapped ones they agree to float rounding, a difference
that long training (Adam especially) can grow like any change of thread count.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from torch import nn

from glth_core import data as datasets
from glth_core.batched_train import evaluate_batched, prefers_vmap, train_batched
from glth_core.dictionaries import seed_dependent
from glth_core.imp import Trajectory
from glth_core.parameterization import Weights
from glth_core.records import evaluated_split
from glth_core.rewind import TrainJob
from glth_core.streams import round_generator
from glth_core.ticket import Ticket
from glth_core.trajectory import TrajectoryConfig, TrajectoryState

__all__ = ["BatchedTrajectory", "check_batchable", "check_batchable_model"]


def check_batchable_model(model: nn.Module) -> None:
    """Raise ValueError (one line) for a model with buffers (BatchNorm's running statistics): batched
    seeds would need per-seed running statistics, which this trainer does not carry."""
    buffers = [n for n, _ in model.named_buffers()]
    if buffers:
        raise ValueError(
            f"batch_seeds: the model has running statistics (BatchNorm: {buffers[0]}, …), which batched "
            "seeds do not carry per seed; leave batch_seeds out (seeds then run as separate trials)"
        )


def check_batchable(configs: list[TrajectoryConfig]) -> None:
    """Raise ValueError (naming the field) unless ``configs`` differ only in seed and share one
    dictionary: a seed-drawn dictionary needs an explicit ``dictionary.seed``."""
    if not configs:
        raise ValueError("configs: a batch needs at least one trajectory")
    seeds = [c.seed for c in configs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seed: the seeds of a batch must differ, got {seeds}")
    first = configs[0]
    if first.lmc_points:
        raise ValueError(
            "lmc_points: linear mode connectivity trains two extra copies per seed, which batched seeds "
            "do not run; leave batch_seeds out (or lmc_points: 0)"
        )
    for c in configs[1:]:
        for f in dataclasses.fields(TrajectoryConfig):
            if f.name != "seed" and getattr(c, f.name) != getattr(first, f.name):
                raise ValueError(
                    f"{f.name}: batched trajectories may differ only in seed; "
                    f"got {getattr(first, f.name)!r} and {getattr(c, f.name)!r}"
                )
    if seed_dependent(first.dictionary) and "seed" not in first.dictionary:
        raise ValueError(
            "dictionary.seed: this dictionary is drawn from its seed, which defaults to each "
            "trajectory's; batching seeds needs an explicit dictionary.seed (one dictionary for all)"
        )


class BatchedTrajectory:
    """K trajectories (``configs`` differing only in seed) run round by round together.

    ``states`` (one per config, or None) resumes each seed from its own checkpoint, which must
    all be at the same round. Each round's ``wall_seconds`` is the batch's training time / K,
    so summing rows still gives the compute spent. ``vectorize``: see ``train_batched``.
    """

    def __init__(
        self,
        configs: list[TrajectoryConfig],
        data: datasets.Dataset | None = None,
        states: list[TrajectoryState | None] | None = None,
        *,
        vectorize: bool | None = None,
    ):
        check_batchable(configs)
        states = [None] * len(configs) if states is None else list(states)
        if len(states) != len(configs):
            raise ValueError(f"states: {len(states)} given for {len(configs)} configs")
        rounds = {s.round for s in states if s is not None}
        if len(rounds) > 1 or (rounds and None in states):
            raise ValueError(
                f"states: every seed must resume from the same round, got {[s and s.round for s in states]}"
            )
        first = Trajectory(configs[0], data, states[0])
        check_batchable_model(first.model)
        d = first.dictionary
        if d.varies_with_init:
            raise ValueError(
                "dictionary.basis: pca on a layer past the input depends on each seed's "
                "initialization, so its seeds cannot share one dictionary"
            )
        self.configs = list(configs)
        self.members = [first] + [Trajectory(c, state=s, shared=first) for c, s in zip(configs[1:], states[1:])]
        self.vectorize = prefers_vmap(first.param, first.inputs["train"]) if vectorize is None else vectorize

    @property
    def done(self) -> bool:
        return self.members[0].done

    @property
    def states(self) -> list[TrajectoryState]:
        return [t.state for t in self.members]

    @property
    def tickets(self) -> list[Ticket | None]:
        return [t.ticket for t in self.members]

    def run_round(self) -> list[dict]:
        """One round for every seed; one record per seed, in the order of ``configs``."""
        t0 = time.perf_counter()
        jobs = [t.round_jobs() for t in self.members]
        results = [self._train([seed_jobs[j] for seed_jobs in jobs]) for j in range(len(jobs[0]))]
        seconds = (time.perf_counter() - t0) / len(self.members)
        t1 = time.perf_counter()
        evaluations = self._evaluate([r[-1][0] for r in zip(*results)])
        shared = (time.perf_counter() - t1) / len(self.members) if evaluations[0] is not None else None
        return [
            t.finish_round([r[k] for r in results], seconds, ev, eval_seconds=shared)
            for k, (t, ev) in enumerate(zip(self.members, evaluations))
        ]

    def _evaluate(self, shown: list[Weights]) -> list[dict | None]:
        """Each seed's {split: Evaluation} of its shown weights, vmapped on an accelerator; None
        per seed (each evaluates itself) on CPU, where a vmapped evaluation's bmm + bias + ReLU
        over K × batch activations ran ~1.7× slower than K fused ``addmm`` passes (mlp_300_100)."""
        first = self.members[0]
        if not self.vectorize or first.inputs["train"].device.type == "cpu":
            return [None] * len(self.members)
        masks = [t.state.mask for t in self.members]
        cfg = first.config.train
        per_split = {
            split: evaluate_batched(
                first.param, shown, masks, *evaluated_split(first.inputs, first.data, split, cfg), cfg.eval_batch_size
            )
            for split in ("train", "val", "test")
        }
        return [{split: ev[k] for split, ev in per_split.items()} for k in range(len(self.members))]

    def _train(self, jobs: list[TrainJob]) -> list[tuple[Weights, int]]:
        first = self.members[0]
        shared = {(j.plan, j.data_round) for j in jobs}
        assert len(shared) == 1, "seeds of one batch share their schedule and data round"
        plan, data_round = shared.pop()
        trained, steps = train_batched(
            first.param,
            [j.start for j in jobs],
            [t.state.mask for t in self.members],
            first.inputs["train"],
            first.data.train_y,
            first.config.train,
            [round_generator(t.config.seed, data_round) for t in self.members],
            plan=plan,
            on_steps=[j.on_step for j in jobs],
            names=[f"the trajectory of seed {c.seed}" for c in self.configs],
            vectorize=self.vectorize,
            augment=first.augment,
        )
        return [(w, steps) for w in trained]

    def run(self, on_round: Callable[[list[dict], "BatchedTrajectory"], None] | None = None) -> list[list[dict]]:
        """All remaining rounds; each seed's records."""
        while not self.done:
            records = self.run_round()
            if on_round is not None:
                on_round(records, self)
        return [s.records for s in self.states]
