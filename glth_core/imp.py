"""One IMP trajectory (one seed, one dictionary, one τ) over all its rounds.

Round t: rewind → train over Span(D_t) → evaluate → sparsify into D_{t+1}. Round 0 is the
dense network. What determines a trajectory and the whole state between rounds (save it after
any round, load it in another process, and the remaining rounds come out bit-identical on CPU):
``glth_core.trajectory``; the kind's wiring (run names, labels, batching): ``glth_core.imp_kind``.
Where a round starts and which steps it trains (and ``rewind_norm``): ``glth_core.rewind``; how
the next mask is chosen (controls, one-shot, layerwise, rounding): ``glth_core.pruning``; the
optional linear-mode-connectivity measurement of each round (``lmc_points``): ``glth_core.lmc``;
a round's row (per-layer density, FLOPs of the exported ticket): ``glth_core.records``.
"""

from __future__ import annotations

import time

import torch

from glth_core import data as datasets
from glth_core import dictionaries
from glth_core.controls import control_of
from glth_core.data.augment import augmenter
from glth_core.evaluation import Evaluation
from glth_core.lmc import copy_generators, instability
from glth_core.parameterization import Parameterization, Weights
from glth_core.pruning import mask_rule
from glth_core.records import round_record
from glth_core.rewind import TrainJob, is_late, norm_segments, rewind_step, round_jobs
from glth_core.rounds import RoundRunner
from glth_core.schedule import SchedulePlan
from glth_core.streams import round_generator
from glth_core.ticket import Ticket
from glth_core.train import train
from glth_core.trajectory import TrajectoryConfig, TrajectoryState, build_model

__all__ = ["Trajectory", "run_trajectory"]


class Trajectory(RoundRunner):
    """Builds model, data and dictionary from a config, then runs rounds one at a time."""

    def __init__(
        self,
        config: TrajectoryConfig,
        data: datasets.Dataset | None = None,
        state: TrajectoryState | None = None,
        *,
        shared: "Trajectory | None" = None,
    ):
        """``shared``: a trajectory on the same data and dictionary (another seed, as in
        ``glth_core.batched``) whose data, dictionary and prepared inputs this one reuses."""
        self.config = config
        self.data = shared.data if shared is not None else data or datasets.load_for(config)
        self.model = build_model(config, self.data, config.seed)
        if shared is not None:
            self.dictionary = shared.dictionary
        else:
            self.dictionary = dictionaries.build(config.dictionary_spec, self.model, train_x=self.data.train_x)
        self.param = Parameterization(self.model, self.dictionary)
        self.augment = augmenter(config.train.augment, self.data, self.param.input_bottleneck)
        self.inputs = (
            shared.inputs
            if shared is not None
            else {
                split: self.param.prepare_inputs(getattr(self.data, f"{split}_x")) for split in ("train", "val", "test")
            }
        )
        if state is None:
            init = self.param.weights_of(self.model)
            mask = torch.ones(self.dictionary.size, dtype=torch.bool, device=init.coeffs.device)
            state = TrajectoryState(round=0, mask=mask, init=init, rewind_point=None, last=None)
            fresh_seed = control_of(config.control).fresh_init_seed(config)
            if fresh_seed is not None:  # a control that trains from a fresh initialization (reinit)
                state.reinit = self.param.weights_of(build_model(config, self.data, fresh_seed))
        self.state = state
        self.mask_rule = mask_rule(config, self.dictionary)
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
            start, plan = self._rewind_point, SchedulePlan(start_step=k)
        targets = {split: getattr(self.data, f"{split}_y") for split in ("train", "test")}
        out = instability(
            self.param,
            start,
            self.state.mask,
            self.inputs,
            targets,
            cfg.train,
            copy_generators(cfg.seed, self.state.round),
            cfg.lmc_points,
            plan,
            self.augment,
        )
        return {**out, "lmc_seconds": time.perf_counter() - t0}

    def round_jobs(self) -> list[TrainJob]:
        """The trainings this round needs, in order: the ticket's own, then the control's
        extra ones (reinit: its mask from the fresh init; ``glth_core.rewind.round_jobs``).
        ``finish_round`` takes their results; ``glth_core.batched`` runs each job for several seeds at once."""
        if self.done:
            raise RuntimeError("trajectory already finished")
        self._rewind_point = None
        return round_jobs(self.config, self.state, self.inputs["train"].shape[0], self._capture, self.norm_segments)

    def _capture(self, w: Weights) -> None:
        self._rewind_point = w  # kept by ``finish_round``: a round that fails leaves the state alone

    def finish_round(
        self,
        results: list[tuple[Weights, int]],
        seconds: float,
        evaluations: dict[str, Evaluation] | None = None,
        extra: dict | None = None,
        eval_seconds: float | None = None,
    ) -> dict:
        """Record, ticket and next mask from the (trained weights, steps) of each ``round_jobs``
        job; ``seconds`` is the round's training time; ``evaluations``: see ``round_record``;
        ``extra``: more columns of the record (the round's LMC)."""
        st = self.state
        (trained, _), (shown, steps) = results[0], results[-1]  # the record is of the shown training
        record = {**self._record(shown, steps, seconds, evaluations, eval_seconds), **(extra or {})}
        self.ticket = Ticket.of(st.round, st.mask, shown)
        if self._rewind_point is not None:
            st.rewind_point, self._rewind_point = self._rewind_point, None
        if st.round == 0 and self.mask_rule.keeps_dense_scores():
            st.dense_scores = trained.coeffs.detach().clone()
        st.records.append(record)
        st.last = trained
        st.round += 1
        if not self.done:
            st.mask = self.mask_rule.next_mask(st.mask, trained.coeffs, st.dense_scores, st.round)
        return record

    def _train(self, job: TrainJob):
        cfg = self.config
        return train(
            self.param,
            job.start,
            self.state.mask,
            self.inputs["train"],
            self.data.train_y,
            cfg.train,
            round_generator(cfg.seed, job.data_round),
            plan=job.plan,
            on_step=job.on_step,
            augment=self.augment,
        )

    def _record(
        self,
        w: Weights,
        steps: int,
        seconds: float,
        evaluations: dict[str, Evaluation] | None = None,
        eval_seconds: float | None = None,
    ) -> dict:
        return round_record(
            self.param,
            self.inputs,
            self.data,
            w,
            self.state.mask,
            self.state.round,
            steps,
            self.config.train,
            seconds,
            evaluations,
            eval_seconds,
        )


def run_trajectory(config: TrajectoryConfig, on_round=None) -> list[dict]:
    return Trajectory(config).run(on_round)
