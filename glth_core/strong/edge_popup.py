"""Strong tickets by search: edge-popup (Ramanujan et al. 2020) over the elements of any dictionary.

The random network is never trained. Its coefficients a_0 = Dᵀ w_0 and the free parameters (outside the
scope) stay at their initialization; what is learned is one score s_i per dictionary element. The forward
pass uses the hard mask m = top-k(|s|) (or, for a grouped dictionary, the top-k groups by Σ|s| over the
group), the network's parameters are D (a_0 ⊙ m) plus the free ones (``train.Parameterization``), and the
backward pass is straight-through: the gradient of the top-k is taken as the identity, so
∂L/∂|s_i| = ∂L/∂m_i = a_0,i · ∂L/∂a_i with a = a_0 ⊙ m (and a group's score gets the sum over its
elements). The straight-through estimate is applied to |s|, not s, as in the authors' code: the chain
through |·| multiplies by sign(s_i), so a negative score still grows in magnitude when its element helps.

One round = one density level: start the scores (``scores: carry`` from the previous level's trained
scores, the default, a warm start that also makes the dense level 1.0 informative; ``fresh``: new random
scores per level, levels independent), train them for the round's epochs with TrainConfig's optimizer,
learning rate and schedule, data order from ``round_generator(seed, level)``, then evaluate with the hard
mask. Selection of anything (such as which level to keep) must use the validation split, never test.

``StrongSearch`` follows the ``Trajectory`` protocol (``done``, ``run_round() -> record``, ``state`` with
save/load, ``ticket``), so the orchestrator runs it as a Tune trial; its state is the last trained scores
plus the records, and resuming after any level repeats the rest bit for bit on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from glth_core import data as datasets
from glth_core import dictionaries
from glth_core.dictionaries import Dictionary
from glth_core.config import Config
from glth_core.experiment import Experiment, dictionary_columns
from glth_core.imp import Ticket, build_model, round_generator, round_record
from glth_core.state import State
from glth_core.rounds import RoundRunner
from glth_core.train import (Parameterization, TrainConfig, batch_indices, forward_precision, input_format, matmul_precision,
                             run_steps)

__all__ = ["SELECTS", "SCORE_STARTS", "StrongConfig", "StrongState", "StrongSearch", "MaskSelector", "top_k", "run_search"]

#: global: one top-k over all elements (or groups) of the scope; per_tensor: a top-k inside each scope
#: tensor's slice of the coefficient vector (the dictionary's ``scope`` offsets), k apportioned so the
#: total is still round(density × size).
SELECTS = ("global", "per_tensor")
#: where each level's scores start: the previous level's trained scores, or fresh random ones
SCORE_STARTS = ("carry", "fresh")
SCORE_STREAM = 2  # round_generator stream of the score initialization (0: data order, 1: IMP's random masks)


@dataclass(frozen=True)
class StrongConfig(Config):
    """Everything that determines one search; its identity hashes to the trial id."""

    KIND: ClassVar[str] = "strong"

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp_300_100"
    dictionary: dict = field(default_factory=lambda: {"kind": "canonical"})
    densities: tuple[float, ...] = (1.0, 0.5, 0.3, 0.1)
    select: str = "global"
    scores: str = "carry"
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    split_seed: int = 0
    device: str = "cpu"

    def check(self):
        if isinstance(self.densities, (int, float)):
            object.__setattr__(self, "densities", (self.densities,))
        object.__setattr__(self, "densities", tuple(float(d) for d in self.densities))
        if not self.densities:
            raise ValueError("densities: give at least one density in (0, 1]")
        bad = [d for d in self.densities if not 0.0 < d <= 1.0]
        if bad:
            raise ValueError(f"densities: each must be in (0, 1], got {bad[0]}")
        if self.select not in SELECTS:
            raise ValueError(f"select: {self.select!r} is not one of {', '.join(SELECTS)}")
        if self.scores not in SCORE_STARTS:
            raise ValueError(f"scores: {self.scores!r} is not one of {', '.join(SCORE_STARTS)}")

    @property
    def rounds(self) -> int:
        return len(self.densities)

    @property
    def dictionary_spec(self) -> dict:
        """The dictionary spec with its seed resolved (defaults to the search's seed)."""
        return dictionaries.seeded(self.dictionary, self.seed)

    def resolved(self) -> dict:
        return {**super().resolved(), "dictionary": self.dictionary_spec}

    def extra_seeds(self) -> dict:
        return {"scores": self.seed}


@dataclass
class StrongState(State):
    """All a search needs between levels: the last level's trained scores and mask, and the records.
    The random network itself is rebuilt from the config's seed (it is never trained)."""

    round: int = 0
    scores: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    records: list[dict] = field(default_factory=list)


class _StraightThrough(torch.autograd.Function):
    """Forward: the given hard 0/1 mask; backward: the gradient passes to the scores unchanged."""

    @staticmethod
    def forward(ctx, unit_scores: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        return hard.to(unit_scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def apportion(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` over parts proportionally to ``sizes`` (largest remainder, ties to the earlier part),
    so per-part counts are as close to density × size as possible and still sum to ``total``."""
    n = sum(sizes)
    exact = [total * s / n for s in sizes]
    ks = [math.floor(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - ks[i]), i))
    for i in order[: total - sum(ks)]:
        ks[i] += 1
    return ks


def top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest ``values``, ties to the lower index (as a stable sort would give),
    in O(n): a k-th-largest threshold, then the lowest-index ties fill up to k (5–10× a full sort)."""
    n = values.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=values.device)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=values.device)
    threshold = torch.kthvalue(values, n - k + 1).values
    keep = values > threshold
    ties = (values == threshold).nonzero().flatten()
    keep[ties[: k - int(keep.sum())]] = True
    return keep


class MaskSelector:
    """Scores → hard mask of a given density in one dictionary, and the straight-through soft version.

    Units are elements, or groups when ``dictionary.groups`` is set (a group's score is Σ|s| over it).
    The mask keeps exactly round(density × units) units (at least one): one top-k over all units
    (``global``) or one per scope tensor (``per_tensor``; a group belongs to the tensor of its elements).
    Ties go to the lower index, as in IMP's ``sparsify``.
    """

    def __init__(self, dictionary: Dictionary, select: str = "global", device: torch.device | str | None = None):
        if select not in SELECTS:
            raise ValueError(f"select: {select!r} is not one of {', '.join(SELECTS)}")
        groups = dictionary.groups
        device = torch.device(device) if device is not None else (groups.device if groups is not None else torch.device("cpu"))
        self.groups = None if groups is None else groups.to(device)
        self.num_units = dictionary.size if groups is None else dictionary.num_groups
        if select == "global" or len(dictionary.scope) == 1:
            parts = [torch.arange(self.num_units)]
        else:
            entry = torch.empty(dictionary.size, dtype=torch.long)  # element → its scope tensor
            for i, e in enumerate(dictionary.scope):
                entry[e.offset : e.offset + e.numel] = i
            if groups is not None:  # group → its scope tensor, which must be the same for all its elements
                g = groups.cpu()
                high = torch.full((self.num_units,), -1).scatter_reduce(0, g, entry, reduce="amax", include_self=False)
                low = torch.full((self.num_units,), -1).scatter_reduce(0, g, entry, reduce="amin", include_self=False)
                if not torch.equal(high, low):
                    raise ValueError("select: per_tensor needs every group inside one scope tensor; use global")
                entry = high
            parts = [(entry == i).nonzero().flatten() for i in range(len(dictionary.scope))]
        self.parts = [p.to(device) for p in parts if p.numel()]
        self.sizes = [int(p.numel()) for p in self.parts]

    def counts(self, density: float) -> list[int]:
        """Units kept per part at ``density``."""
        total = min(self.num_units, max(1, round(density * self.num_units)))
        return apportion(total, self.sizes)

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        if self.groups is None:
            return scores.abs()
        return torch.zeros(self.num_units, dtype=scores.dtype, device=scores.device).index_add(0, self.groups, scores.abs())

    def hard_units(self, unit_scores: torch.Tensor, density: float) -> torch.Tensor:
        keep = torch.zeros(self.num_units, dtype=torch.bool, device=unit_scores.device)
        values = unit_scores.detach()
        for part, k in zip(self.parts, self.counts(density)):
            keep[part[top_k(values[part], k)]] = True
        return keep

    def _expand(self, units: torch.Tensor) -> torch.Tensor:
        return units if self.groups is None else units[self.groups]

    def mask(self, scores: torch.Tensor, density: float) -> torch.Tensor:
        """The hard boolean mask over elements."""
        return self._expand(self.hard_units(self.unit_scores(scores), density))

    def soft_mask(self, scores: torch.Tensor, density: float) -> torch.Tensor:
        """The same mask as floats, differentiable in ``scores`` by the straight-through estimate."""
        u = self.unit_scores(scores)
        return self._expand(_StraightThrough.apply(u, self.hard_units(u, density)))


class StrongSearch(RoundRunner):
    """Builds the random network, data and dictionary from a config, then searches one density per round."""

    def __init__(self, config: StrongConfig, data: datasets.Dataset | None = None, state: StrongState | None = None):
        self.config = config
        self.data = data or datasets.load(
            config.dataset, config.data_dir, val_fraction=config.val_fraction, split_seed=config.split_seed, device=config.device
        )
        self.model = build_model(config, self.data, config.seed)
        self.dictionary = dictionaries.build(config.dictionary_spec, self.model, train_x=self.data.train_x)
        self.param = Parameterization(self.model, self.dictionary)
        self.inputs = {
            split: self.param.prepare_inputs(getattr(self.data, f"{split}_x")) for split in ("train", "val", "test")
        }
        self.init = self.param.weights_of(self.model)  # a_0 and the free parameters: never changed
        self.selector = MaskSelector(self.dictionary, config.select, self.init.coeffs.device)
        self.state = state if state is not None else StrongState()
        self.ticket: Ticket | None = None  # set by each run_round

    @property
    def done(self) -> bool:
        return self.state.round >= self.config.rounds

    @property
    def density(self) -> float:
        """The density of the next round."""
        return self.config.densities[self.state.round]

    def initial_scores(self, level: int) -> torch.Tensor:
        """Seeded U(-b, b) with b = √3·rms(a_0): scores as large as the coefficients they rank, so the
        learning rate means for scores about what it means for weights (hidden-networks draws scores
        from the layer's Kaiming-uniform init the same way). Equal scales everywhere: the first global
        top-k is uniformly random across tensors."""
        a = self.init.coeffs
        bound = math.sqrt(3.0) * float(a.double().square().mean().sqrt()) or 1.0
        g = round_generator(self.config.seed, level, stream=SCORE_STREAM)
        u = torch.rand(a.shape, generator=g, dtype=torch.float32)
        return ((2.0 * u - 1.0) * bound).to(device=a.device, dtype=a.dtype)

    def run_round(self) -> dict:
        if self.done:
            raise RuntimeError("search already finished")
        cfg, st = self.config, self.state
        t0 = time.perf_counter()
        level, density = st.round, self.density
        if cfg.scores == "carry" and st.scores is not None:
            start = st.scores.to(self.init.coeffs.device)
        else:
            start = self.initial_scores(level)
        scores, steps = self.train_scores(start, density, round_generator(cfg.seed, level))
        mask = self.selector.mask(scores, density)
        record = round_record(self.param, self.inputs, self.data, self.init, mask, level, steps, cfg.train,
                              time.perf_counter() - t0)
        self.ticket = Ticket.of(level, mask, self.init)
        st.scores, st.mask = scores, mask
        st.records.append(record)
        st.round += 1
        return record

    def train_scores(self, start: torch.Tensor, density: float, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """Train the scores for one round's steps under the hard top-k mask (``train.run_steps``: the same
        optimizer, schedule, batches and precision as weight training); the network stays a_0 (and the
        free parameters at init). Returns (trained scores, steps)."""
        cfg = self.config.train
        s = start.detach().clone().requires_grad_(True)
        x, y = self.inputs["train"], self.data.train_y
        total = cfg.total_steps(x.shape[0])
        batches = batch_indices(x.shape[0], cfg.batch_size, generator, x.device)
        memory_format = input_format(cfg, x)

        def losses_at(step: int) -> torch.Tensor:
            idx = next(batches)
            m = self.selector.soft_mask(s, density)
            with forward_precision(cfg, x):
                logits = self.param.forward(self.init, m, x.index_select(0, idx), memory_format=memory_format)
                return F.cross_entropy(logits.float(), y.index_select(0, idx))

        with matmul_precision(cfg, x):
            run_steps([s], cfg, total, losses_at, who=lambda i: f"the scores of density {density}")
        return s.detach(), total


def run_search(config: StrongConfig, on_round=None) -> list[dict]:
    return StrongSearch(config).run(on_round)


def _describe(c: StrongConfig) -> dict:
    return {**dictionary_columns(c.dictionary_spec), "tau": None, "rewind": "none", "control": "none"}


EXPERIMENT = Experiment(
    name="strong", config_cls=StrongConfig, state_cls=StrongState,
    runner=lambda config, state=None, data=None: StrongSearch(config, data=data, state=state),
    run_name=lambda c: f"{dictionaries.label_of(c.dictionary_spec)}-edgepopup-{c.select}-s{c.seed}",
    describe=_describe, has_threshold=False,
)
