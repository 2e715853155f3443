"""Strong tickets by search: edge-popup (Ramanujan et al. 2020) over the elements of any dictionary.

The random network is never trained. Its coefficients a_0 = Dᵀ w_0 and the free parameters (outside the
scope) stay at their initialization; what is learned is one score s_i per dictionary element. The forward
pass uses the hard mask m = top-k(|s|) (or, for a grouped dictionary, the top-k groups by Σ|s| over the
group), the network's parameters are D (a_0 ⊙ m) plus the free ones (``parameterization.Parameterization``), and the
backward pass is straight-through: the gradient of the top-k is taken as the identity, so
∂L/∂|s_i| = ∂L/∂m_i = a_0,i · ∂L/∂a_i with a = a_0 ⊙ m (and a group's score gets the sum over its
elements). The straight-through estimate is applied to |s|, not s, as in the authors' code: the chain
through |·| multiplies by sign(s_i), so a negative score still grows in magnitude when its element helps.

One round = one density level: start the scores, train them for the round's epochs with TrainConfig's
optimizer, learning rate and schedule, then evaluate with the hard mask (``selection.MaskSelector``:
``select: global | per_layer | per_tensor``). ``scores: fresh`` (the default, as hidden-networks runs one
density per run): every level starts from the same initial scores and draws the same data order
(level 0's), so a level's result is what a search of that density alone gives from the same random
network. ``scores: carry``: each level starts from the previous level's trained scores (a warm start; the
data order is the level's own). Selection of anything (such as which level to keep) must use the
validation split, never test.

As in allenai/hidden-networks: the scores start as Kaiming-uniform draws of the coefficients' scale (their
``kaiming_uniform_(a=√5)`` of the layer), the top-k is taken of |s|, ``per_layer`` is their per-layer
``GetSubnet`` (``--prune-rate`` there is the fraction *kept*, our density), a weights-only search is the
dictionary scope preset ``weights`` (biases outside the scope stay at their random values; their networks
have none), and ``init: signed_constant`` is their ``--init signed_constant`` (every Linear/Conv2d weight
± gain/√fan_in with gain √2 and the sign of the default draw; ``kaiming_normal``: N(0, 2/fan_in), their
default ``--init``). They train with SGD and a cosine schedule; TrainConfig says what this search uses.

``StrongSearch`` follows the ``Trajectory`` protocol (``done``, ``run_round() -> record``, ``state`` with
save/load, ``ticket``), so the orchestrator runs it as a Tune trial; its state is the last trained scores
plus the records, and resuming after any level repeats the rest bit for bit on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from glth_core import data as datasets
from glth_core import dictionaries
from glth_core.config import Config, SeededDictionary
from glth_core.data.augment import augmenter, batch_stream
from glth_core.experiment import Experiment, dictionary_columns
from glth_core.loss import training_loss
from glth_core.parameterization import Parameterization
from glth_core.precision import forward_precision, input_format, matmul_precision
from glth_core.records import VIEW_COLUMNS, round_record
from glth_core.results_view import Curves
from glth_core.rounds import RoundRunner
from glth_core.schedule import TrainConfig
from glth_core.state import State
from glth_core.streams import INIT_STREAM, SCORE_STREAM, round_generator
from glth_core.strong.selection import SELECTS, MaskSelector, apportion, top_k
from glth_core.ticket import Ticket
from glth_core.train import batch_indices, run_steps
from glth_core.trajectory import build_model

__all__ = [
    "SELECTS",
    "SCORE_STARTS",
    "INITS",
    "StrongConfig",
    "StrongState",
    "StrongSearch",
    "MaskSelector",
    "top_k",
    "apportion",
    "run_search",
    "check_selection",
]

#: where each level's scores start: the same fresh scores for every level, or the previous level's
SCORE_STARTS = ("fresh", "carry")
#: the random network's Linear/Conv2d weights: PyTorch's default, or hidden-networks' inits
INITS = ("default", "kaiming_normal", "signed_constant")


@dataclass(frozen=True)
class StrongConfig(SeededDictionary, Config):
    """Everything that determines one search; its identity hashes to the trial id."""

    KIND: ClassVar[str] = "strong"

    dataset: str = "digits"
    data_dir: str | None = None
    model: str = "mlp_300_100"
    dictionary: dictionaries.Spec = field(default_factory=lambda: {"kind": "canonical"})
    densities: tuple[float, ...] = (1.0, 0.5, 0.3, 0.1)
    select: str = "global"
    scores: str = "fresh"
    init: str = "default"
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    split_seed: int = 0
    #: per-channel normalization of every split (``glth_core.data.normalize``): train, none, {mean, std}
    normalize: Any = "train"
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
        datasets.check_normalize(self.normalize)
        if self.scores not in SCORE_STARTS:
            raise ValueError(f"scores: {self.scores!r} is not one of {', '.join(SCORE_STARTS)}")
        if self.init not in INITS:
            raise ValueError(f"init: {self.init!r} is not one of {', '.join(INITS)}")

    @property
    def rounds(self) -> int:
        return len(self.densities)

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


class StrongSearch(RoundRunner):
    """Builds the random network, data and dictionary from a config, then searches one density per round."""

    def __init__(self, config: StrongConfig, data: datasets.Dataset | None = None, state: StrongState | None = None):
        self.config = config
        self.data = data or datasets.load_for(config)
        self.model = build_model(config, self.data, config.seed)
        apply_init(self.model, config.init, config.seed)
        self.dictionary = dictionaries.build(config.dictionary_spec, self.model, train_x=self.data.train_x)
        self.param = Parameterization(self.model, self.dictionary)
        self.augment = augmenter(config.train.augment, self.data, self.param.input_bottleneck)
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

    def initial_scores(self, level: int = 0) -> torch.Tensor:
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
        if cfg.scores == "carry":
            start = self.initial_scores(0) if st.scores is None else st.scores.to(self.init.coeffs.device)
            data_round = level
        else:  # every level from the same scores and data order: a search of that density alone
            start, data_round = self.initial_scores(0), 0
        scores, steps = self.train_scores(start, density, round_generator(cfg.seed, data_round))
        mask = self.selector.mask(scores, density)
        record = round_record(
            self.param, self.inputs, self.data, self.init, mask, level, steps, cfg.train, time.perf_counter() - t0
        )
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
        augmented = batch_stream(self.augment, generator)

        def losses_at(step: int) -> torch.Tensor:
            idx = next(batches)
            xb = augmented(x.index_select(0, idx), step)
            m = self.selector.soft_mask(s, density)
            with forward_precision(cfg, x):
                logits = self.param.forward(self.init, m, xb, memory_format=memory_format)
                return training_loss(logits, y.index_select(0, idx))

        with matmul_precision(cfg, x):
            run_steps([s], cfg, total, losses_at, who=lambda i: f"the scores of density {density}")
        return s.detach(), total


def apply_init(model: nn.Module, init: str, seed: int) -> None:
    """Re-initialize every nn.Linear / nn.Conv2d weight of ``model`` in place (``init``: see the module
    docstring; ``default`` leaves PyTorch's). Biases and other parameters keep their values."""
    if init == "default":
        return
    g = round_generator(seed, 0, stream=INIT_STREAM)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                std = nn.init.calculate_gain("relu") / math.sqrt(nn.init._calculate_correct_fan(m.weight, "fan_in"))
                if init == "signed_constant":
                    m.weight.copy_(m.weight.sign() * std)
                else:
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)


def check_selection(config: StrongConfig, model: nn.Module) -> None:
    """Refuse, cheaply and before any trial runs, a per-tensor ``select`` on a dictionary whose
    coefficients mix tensors (one line naming ``select``)."""
    if config.select == "global":
        return
    try:
        d = dictionaries.build(config.dictionary_spec, model)
    except dictionaries.DictionarySpecError:
        return  # the spec's own problem (e.g. pca needing training inputs) is ``validate``'s to report
    MaskSelector(d, config.select)


def run_search(config: StrongConfig, on_round=None) -> list[dict]:
    return StrongSearch(config).run(on_round)


def variant_label(c: StrongConfig, select: bool = True) -> str:
    """The search's non-default settings as a label suffix (curves are keyed by the dictionary label)."""
    parts = [c.select.replace("_", "")] if c.select != "global" and select else []
    parts += [c.scores] if c.scores != "fresh" else []
    parts += [c.init.replace("_", "")] if c.init != "default" else []
    return "".join(f"-{p}" for p in parts)


def _describe(c: StrongConfig) -> dict:
    columns = dictionary_columns(c.dictionary_spec)
    columns["dictionary"] += variant_label(c)
    return {**columns, "tau": None, "rewind": "none", "control": "none"}


EXPERIMENT = Experiment(
    name="strong",
    config_cls=StrongConfig,
    state_cls=StrongState,
    runner=lambda config, state=None, data=None: StrongSearch(config, data=data, state=state),
    run_name=lambda c: (
        f"{dictionaries.label_of(c.dictionary_spec)}{variant_label(c, select=False)}-edgepopup-{c.select}-s{c.seed}"
    ),
    describe=_describe,
    results=Curves(threshold=False, title="Strong tickets (edge-popup, no weight training)"),
    check_config=check_selection,
    columns=VIEW_COLUMNS,
)
