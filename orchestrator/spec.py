"""YAML sweep spec → validated, expanded trial configs.

Validation happens here, at the boundary, before any Ray start: every problem becomes a
``SpecError`` whose message is one line naming the field and the allowed values.
Any list-valued axis (dataset, model, dictionary, tau, seeds, rewind, control, train.<key>)
expands into the grid; each combination is one trial running one trajectory.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from glth_core import data as datasets
from glth_core import dictionaries, models
from glth_core.imp import TrajectoryConfig, rewind_label
from glth_core.train import TrainConfig

TRIAL_KINDS = ("imp",)


class SpecError(ValueError):
    """A spec that cannot run. ``str(e)`` is one line naming the field and allowed values."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    name: str
    data_dir: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0


Scalar = Union[int, float, str, bool, None]


class TrainSpec(_Strict):
    """TrainConfig's fields; any value may be a list, which becomes a grid axis."""

    epochs: int | list[int] = 1
    steps: int | None | list[int] = None
    batch_size: int | list[int] = 64
    optimizer: str | list[str] = "sgd"
    lr: float | list[float] = 0.05
    momentum: float | list[float] = 0.9
    weight_decay: float | list[float] = 0.0
    schedule: str | list[str] = "constant"
    milestones: list[float] = [0.5, 0.75]
    gamma: float = 0.1
    eval_batch_size: int = 2048


class ResourcesSpec(_Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str = "glth"
    kind: Literal["imp"] = "imp"
    dataset: DatasetSpec | str | list[DatasetSpec | str] = "digits"
    model: str | list[str] = "mlp_300_100"
    dictionary: dict | list[dict] = Field(default_factory=lambda: {"kind": "canonical"})
    tau: float | list[float] = 0.2
    seeds: list[int] = Field(min_length=1)
    rounds: int = Field(ge=1)
    train: TrainSpec = Field(default_factory=TrainSpec)
    rewind: str | dict | list[str | dict] = "init"
    control: str | list[str] = "none"
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent: int = Field(2, ge=1)
    max_failures: int = Field(5, ge=0)  # Tune retries per trial after a crash, each from its last round
    device: str = "cpu"

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


@dataclass(frozen=True)
class Trial:
    """One grid point: a trajectory config plus how the sweep treats it."""

    trajectory: TrajectoryConfig

    @property
    def trial_id(self) -> str:
        """The content hash: the trial id, the MLflow tag and the dedupe key."""
        return self.trajectory.content_hash()

    @property
    def control(self) -> str:
        return self.trajectory.control

    @property
    def dictionary_label(self) -> str:
        return dictionaries.label_of(self.trajectory.dictionary_spec)

    @property
    def run_name(self) -> str:
        t = self.trajectory
        ctl = "" if self.control == "none" else f"-{self.control}"
        return f"{self.dictionary_label}{ctl}-tau{t.tau:g}-{rewind_label(t.rewind)}-s{t.seed}"

    def to_dict(self) -> dict:
        return {"trajectory": self.trajectory.to_dict(), "trial_id": self.trial_id}

    @classmethod
    def from_dict(cls, d: dict) -> "Trial":
        return cls(TrajectoryConfig.from_dict(d["trajectory"]))


@dataclass(frozen=True)
class Sweep:
    spec: SweepSpec
    text: str
    trials: tuple[Trial, ...] = field(default_factory=tuple)

    @property
    def sweep_id(self) -> str:
        h = hashlib.sha256(",".join(sorted(t.trial_id for t in self.trials)).encode()).hexdigest()[:8]
        return f"{self.spec.name}-{h}"


# -- parsing --------------------------------------------------------------------------------
def _format_error(err: ValidationError, model: type[BaseModel]) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int) and p not in ("list[...]",))
    loc = re.sub(r"\.?(str|int|float|dict|list\[[^\]]*\]|DatasetSpec|none)(?=\.|$)", "", loc) or "spec"
    if e["type"] == "extra_forbidden":
        owner = model
        for part in loc.split(".")[:-1]:
            ann = owner.model_fields.get(part)
            inner = getattr(ann, "annotation", None)
            owner = next((a for a in getattr(inner, "__args__", (inner,)) if isinstance(a, type) and issubclass(a, BaseModel)), owner)
        return f"{loc}: unknown key; allowed: {', '.join(owner.model_fields)}"
    if e["type"] == "missing":
        return f"{loc}: required"
    return f"{loc}: {e['msg']} (got {e.get('input')!r})"


def _as_list(v) -> list:
    return list(v) if isinstance(v, list) else [v]


def parse(text: str, overrides: dict | None = None) -> Sweep:
    """Parse YAML text into a validated, expanded Sweep (raises SpecError)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise SpecError(f"spec: not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise SpecError("spec: must be a mapping of keys such as name, dataset, model, dictionary, tau, seeds, rounds")
    raw.update(overrides or {})
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_error(e, SweepSpec)) from None
    return Sweep(spec=spec, text=text, trials=tuple(expand(spec)))


def load(path: str | Path, overrides: dict | None = None) -> Sweep:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec: {p} is not a file")
    return parse(p.read_text(), overrides)


def _dataset(d: DatasetSpec | str) -> DatasetSpec:
    return DatasetSpec(name=d) if isinstance(d, str) else d


def _train_axes(train: TrainSpec) -> list[dict]:
    fixed = {k: v for k, v in train.model_dump().items() if k == "milestones" or not isinstance(v, list)}
    axes = {k: v for k, v in train.model_dump().items() if k != "milestones" and isinstance(v, list)}
    combos = itertools.product(*axes.values()) if axes else [()]
    return [{**fixed, **dict(zip(axes, c))} for c in combos]


def expand(spec: SweepSpec) -> list[Trial]:
    """The grid, checked point by point (names, τ, layers, bases, data directories)."""
    if spec.kind not in TRIAL_KINDS:
        raise SpecError(f"kind: {spec.kind!r} is not one of {', '.join(TRIAL_KINDS)}")
    trials = []
    data_seen: dict[tuple, Any] = {}
    for ds, model, dic, tau, rewind, train, control, seed in itertools.product(
        [_dataset(d) for d in _as_list(spec.dataset)],
        _as_list(spec.model),
        _as_list(spec.dictionary),
        _as_list(spec.tau),
        _as_list(spec.rewind),
        _train_axes(spec.train),
        _as_list(spec.control),
        spec.seeds,
    ):
        key = (ds.name, ds.data_dir)
        if key not in data_seen:
            try:
                data_seen[key] = datasets.check(ds.name, ds.data_dir)
            except datasets.DatasetError as e:
                raise SpecError(str(e)) from None
        info = data_seen[key]
        try:
            cfg = TrajectoryConfig(
                dataset=ds.name, data_dir=ds.data_dir, model=model, dictionary=dict(dic), tau=float(tau),
                rounds=spec.rounds, seed=seed, rewind=rewind, train=TrainConfig(**train),
                val_fraction=ds.val_fraction, split_seed=ds.split_seed, control=control, device=spec.device,
            )
            net = models.build(model, info.input_shape, info.num_classes)
            dictionaries.validate(cfg.dictionary_spec, net)
        except (ValueError, TypeError) as e:
            raise SpecError(str(e).splitlines()[0]) from None
        trials.append(Trial(cfg))
    return trials
