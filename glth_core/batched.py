"""K IMP trajectories that differ only in their seed, trained at once.

A ``BatchedTrajectory`` holds one ``Trajectory`` per seed (they share the data, the dictionary
and the prepared inputs) and runs their rounds in lockstep: each round's trainings run once for
all K seeds with ``torch.func.vmap`` over stacked coefficients [K, size], stacked free
parameters and one mask per seed, each seed drawing its batches from its own
``round_generator(seed, round)``. Everything else (start points, records, tickets, sparsify)
is the seed's own ``Trajectory``, so each seed's records, masks and ``TrajectoryState`` equal
those of a separate run and each state checkpoints and resumes like a separate trajectory's.

One optimizer over the stacked tensors is K optimizers (SGD and Adam update elementwise), and
the summed loss gives each seed its own gradient. With looped forwards (the CPU default for
models with convolutions, see ``prefers_vmap``) the results are bit-identical to separate runs;
vmapped matmuls and grouped convolutions sum in another order, so they agree to float rounding,
a difference that long training (Adam especially) can grow like any change of thread count.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import vmap

from glth_core import data as datasets
from glth_core.data.augment import Augment
from glth_core.dictionaries import seed_dependent
from glth_core.imp import Trajectory
from glth_core.loss import training_loss
from glth_core.records import evaluated_split
from glth_core.rewind import TrainJob
from glth_core.streams import round_generator
from glth_core.ticket import Ticket
from glth_core.train import (
    Evaluation,
    Parameterization,
    SchedulePlan,
    TrainConfig,
    Weights,
    batch_indices,
    batch_totals,
    dense_or_float,
    eval_batches,
    evaluation_of,
    forward_precision,
    matmul_precision,
    run_steps,
)
from glth_core.trajectory import TrajectoryConfig, TrajectoryState

__all__ = [
    "BatchedTrajectory",
    "check_batchable",
    "check_batchable_model",
    "evaluate_batched",
    "prefers_vmap",
    "train_batched",
]


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


def stack(weights: list[Weights]) -> Weights:
    """K trajectories' weights as one with a leading K dim (fresh tensors)."""
    return Weights(
        torch.stack([w.coeffs.detach() for w in weights]),
        {n: torch.stack([w.free[n].detach() for w in weights]) for n in weights[0].free},
    )


def unstack(w: Weights, k: int) -> Weights:
    """Trajectory ``k``'s weights out of stacked ones (views; clone to keep)."""
    return Weights(w.coeffs[k], {n: v[k] for n, v in w.free.items()})


def prefers_vmap(param: Parameterization, x: torch.Tensor) -> bool:
    """Whether one vmapped forward beats K forwards in a loop. vmap turns K convolutions into
    one grouped convolution, which CPU kernels run up to 2× slower than K plain ones; a CPU
    model with convolutions therefore loops (still sharing the optimizer step and backward)."""
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in param.model.modules())
    return x.device.type != "cpu" or not has_conv


def train_batched(
    param: Parameterization,
    starts: list[Weights],
    masks: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    generators: list[torch.Generator],
    *,
    plan: SchedulePlan = SchedulePlan(),
    on_steps: list[Callable[[int, Weights], None] | None] | None = None,
    names: list[str] | None = None,
    vectorize: bool | None = None,
    augment: Augment | None = None,
) -> tuple[list[Weights], int]:
    """``glth_core.train.train`` for K trajectories at once: trajectory k starts at ``starts[k]``,
    trains inside Span(``masks[k]``) on batches drawn from ``generators[k]``, every one over the
    steps of one ``plan``; returns each one's trained weights and the steps taken.
    ``on_steps[k](step, weights)`` sees trajectory k's steps.

    ``vectorize``: True runs the K forwards as one vmapped forward; False runs them one by one
    (the optimizer step and the backward call stay shared); None (default) picks
    ``prefers_vmap``. ``channels_last`` is not applied here (memory formats do not survive vmap).
    ``augment``: trajectory k's batches augmented from its own data stream, as ``train`` does."""
    w = stack(starts)
    m = torch.stack(masks)
    w.coeffs.mul_(m)
    leaves = [w.coeffs.requires_grad_(True), *(t.requires_grad_(True) for t in w.free.values())]
    total = cfg.total_steps(x.shape[0])
    # the input bottleneck keeps the union of the seeds' kept columns: a column a seed pruned
    # meets its zero coefficients, so each seed's output is unchanged
    kept = param.kept_columns(m.any(0))
    factors = dense_or_float(m, w.coeffs.dtype)
    streams = [batch_indices(x.shape[0], cfg.batch_size, g, x.device, start=plan.start_step) for g in generators]
    augmented = None if augment is None else [augment.stream(g) for g in generators]

    def loss(coeffs, free, mask, xb, yb):
        return training_loss(param.forward(Weights(coeffs, free), mask, xb, kept), yb)

    def one_by_one(coeffs, free, mask, xb, yb):
        # unbind, not indexing: its backward is one stack, where each index's would fill a zero [K, …]
        free = {n: v.unbind(0) for n, v in free.items()}
        masks = [None] * len(xb) if mask is None else mask.unbind(0)
        return torch.stack(
            [
                loss(c, {n: v[k] for n, v in free.items()}, f, xk, yk)
                for k, (c, f, xk, yk) in enumerate(zip(coeffs.unbind(0), masks, xb, yb))
            ]
        )

    if vectorize is None:
        vectorize = prefers_vmap(param, x)
    losses = vmap(loss, in_dims=(0, 0, None if factors is None else 0, 0, 0)) if vectorize else one_by_one

    def losses_at(step: int) -> torch.Tensor:
        idx = torch.stack([next(s) for s in streams])
        xb = x.index_select(0, idx.flatten()).unflatten(0, idx.shape)
        if augmented is not None:
            xb = torch.stack([apply(xk, step) for apply, xk in zip(augmented, xb)])
        with forward_precision(cfg, x):
            return losses(w.coeffs, w.free, factors, xb, y[idx])

    on_step = None
    if on_steps is not None and any(cb is not None for cb in on_steps):

        def on_step(step: int) -> None:
            for k, cb in enumerate(on_steps):
                if cb is not None:
                    cb(step, unstack(w, k))

    with matmul_precision(cfg, x):
        run_steps(
            leaves, cfg, total, losses_at, plan=plan, on_step=on_step, who=None if names is None else names.__getitem__
        )
    out = [
        Weights(w.coeffs[k].detach() * m[k], {n: v[k].detach().clone() for n, v in w.free.items()})
        for k in range(len(starts))
    ]
    return out, total - plan.start_step


@torch.no_grad()
def evaluate_batched(
    param: Parameterization,
    weights: list[Weights],
    masks: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 2048,
) -> list[Evaluation]:
    """``glth_core.train.evaluate`` of K trajectories on one split, with one vmapped forward per
    batch (every trajectory sees the same inputs)."""
    w, m = stack(weights), torch.stack(masks)
    kept = param.kept_columns(m.any(0))
    params = vmap(lambda c, f, mk: param.params(Weights(c, f), mk, kept))(w.coeffs, w.free, m)  # once per split
    totals = vmap(lambda p, xb, yb: batch_totals(param.apply(p, xb, kept), yb), in_dims=(0, None, None))
    per_batch = [totals(params, xb, yb) for xb, yb in eval_batches(x, y, batch_size)]
    return [evaluation_of([t[k] for t in per_batch], x.shape[0]) for k in range(len(weights))]


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
