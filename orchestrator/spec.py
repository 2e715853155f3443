"""YAML sweep spec → validated, expanded trial configs.

Validation happens here, at the boundary, before any Ray start: every problem becomes a
``SpecError`` whose message is one line naming the field and the allowed values.
Any list-valued axis (dataset, model, dictionary, tau, seeds, rewind, control, train.<key>)
expands into the grid; each combination is one trial running one trajectory.
"""

from __future__ import annotations

import dataclasses
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
from glth_core.strong.construct_run import ConstructConfig
from glth_core.strong.edge_popup import StrongConfig
from glth_core.train import TrainConfig

#: trial kind → the config class of what one trial runs (orchestrator.trial maps it to a runner)
CONFIGS = {"imp": TrajectoryConfig, "strong": StrongConfig, "construct": ConstructConfig}
TRIAL_KINDS = tuple(CONFIGS)


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
    kind: Literal["imp", "strong", "construct"] = "imp"
    dataset: DatasetSpec | str | list[DatasetSpec | str] = "digits"
    model: str | list[str] = "mlp_300_100"
    dictionary: dict | list[dict] = Field(default_factory=lambda: {"kind": "canonical"})
    tau: float | list[float] = 0.2
    seeds: list[int] = Field(min_length=1)
    rounds: int | None = Field(None, ge=1)  # required for kind imp
    # kind strong (edge-popup): the density levels, and top-k per scope tensor or global
    densities: list[float] = Field(default_factory=lambda: [1.0, 0.5, 0.3, 0.1], min_length=1)
    select: str | list[str] = "global"
    # kind construct (SubsetSum): per-weight error, candidates per weight (or c·log2(1/ε)), sampling
    epsilon: float | list[float] = 0.01
    n: int | None | list[int] = None
    c: float | list[float] = 3.0
    distribution: str | list[str] = "uniform"
    train: TrainSpec = Field(default_factory=TrainSpec)
    rewind: str | dict | list[str | dict] = "init"
    control: str | list[str] = "none"
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent: int = Field(2, ge=1)
    batch_seeds: int = Field(1, ge=1)  # kind imp: K seeds of one configuration trained at once (vmap)
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
    """One grid point: what one trial runs (an IMP trajectory, a strong-ticket search, or a
    construction), named by ``kind``."""

    trajectory: TrajectoryConfig | StrongConfig | ConstructConfig
    kind: str = "imp"

    @property
    def trial_id(self) -> str:
        """The content hash: the trial id, the MLflow tag and the dedupe key."""
        return self.trajectory.content_hash()

    @property
    def control(self) -> str:
        return getattr(self.trajectory, "control", "none")

    @property
    def dictionary_label(self) -> str:
        if self.kind == "construct":
            return self.trajectory.label
        return dictionaries.label_of(self.trajectory.dictionary_spec)

    @property
    def run_name(self) -> str:
        t = self.trajectory
        if self.kind == "strong":
            return f"{self.dictionary_label}-edgepopup-{t.select}-s{t.seed}"
        if self.kind == "construct":
            return f"{self.dictionary_label}-eps{t.epsilon:g}-n{t.n or 'auto'}-c{t.c:g}-s{t.seed}"
        ctl = "" if self.control == "none" else f"-{self.control}"
        return f"{self.dictionary_label}{ctl}-tau{t.tau:g}-{rewind_label(t.rewind)}-s{t.seed}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "trajectory": self.trajectory.to_dict(), "trial_id": self.trial_id}

    @classmethod
    def from_dict(cls, d: dict) -> "Trial":
        kind = d.get("kind", "imp")
        return cls(CONFIGS[kind].from_dict(d["trajectory"]), kind)


@dataclass(frozen=True)
class Sweep:
    spec: SweepSpec
    text: str
    trials: tuple[Trial, ...] = field(default_factory=tuple)
    #: the ``profiles:`` entry merged over the spec (None: the spec as written)
    profile: str | None = None

    @property
    def rounds(self) -> int:
        """Rows per trial (IMP rounds, edge-popup density levels, or 1 for a construction)."""
        return max(t.trajectory.rounds for t in self.trials)

    @property
    def sweep_id(self) -> str:
        h = hashlib.sha256(",".join(sorted(t.trial_id for t in self.trials)).encode()).hexdigest()[:8]
        return f"{self.spec.name}-{self.profile}-{h}" if self.profile else f"{self.spec.name}-{h}"


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


def _deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_PROFILE_LINE = re.compile(r"^profile:.*$", re.M)


def _apply_profile(raw: dict, text: str, profile: str | None) -> tuple[dict, str, str | None]:
    """Merge the chosen entry of ``profiles:`` (``profile`` argument, else the spec's ``profile:``
    key) over the spec. The returned text names the profile, so the sweep directory's spec.yaml
    parses back to the same sweep."""
    profiles = raw.pop("profiles", None) or {}
    chosen = profile if profile is not None else raw.pop("profile", None)
    raw.pop("profile", None)
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise SpecError("profiles: must map each profile name to a mapping of spec keys, e.g. {quick: {rounds: 4}}")
    if chosen is None:
        return raw, text, None
    if chosen not in profiles:
        allowed = ", ".join(map(str, profiles)) or "none (the spec has no profiles:)"
        raise SpecError(f"profile: {chosen!r} is not one of {allowed}")
    if profile is not None:
        line = f"profile: {chosen}  # chosen with --profile"
        text = _PROFILE_LINE.sub(line, text) if _PROFILE_LINE.search(text) else f"{text.rstrip()}\n{line}\n"
    return _deep_merge(raw, profiles[chosen]), text, str(chosen)


def parse(text: str, overrides: dict | None = None, profile: str | None = None) -> Sweep:
    """Parse YAML text into a validated, expanded Sweep (raises SpecError). ``profile`` names an
    entry of the spec's ``profiles:`` mapping, deep-merged over the spec before validation."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise SpecError(f"spec: not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise SpecError("spec: must be a mapping of keys such as name, dataset, model, dictionary, tau, seeds, rounds")
    raw, text, chosen = _apply_profile(raw, text, profile)
    raw.update(overrides or {})
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_error(e, SweepSpec)) from None
    trials = expand(spec)
    if spec.batch_seeds > 1:
        _check_batches(spec, trials)
    return Sweep(spec=spec, text=text, trials=tuple(trials), profile=chosen)


def _check_batches(spec: SweepSpec, trials: list[Trial]) -> None:
    from glth_core.batched import check_batchable

    if spec.kind != "imp":
        raise SpecError(f"batch_seeds: only kind imp batches seeds (this spec is kind {spec.kind})")
    groups: dict[str, list] = {}
    for t in trials:
        groups.setdefault(dataclasses.replace(t.trajectory, seed=0).content_hash(), []).append(t.trajectory)
    for configs in groups.values():
        try:
            check_batchable(configs)
        except ValueError as e:
            raise SpecError(f"batch_seeds: {str(e).splitlines()[0]}") from None


def load(path: str | Path, overrides: dict | None = None, profile: str | None = None) -> Sweep:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec: {p} is not a file")
    return parse(p.read_text(), overrides, profile)


def _dataset(d: DatasetSpec | str) -> DatasetSpec:
    return DatasetSpec(name=d) if isinstance(d, str) else d


def _train_axes(train: TrainSpec) -> list[dict]:
    fixed = {k: v for k, v in train.model_dump().items() if k == "milestones" or not isinstance(v, list)}
    axes = {k: v for k, v in train.model_dump().items() if k != "milestones" and isinstance(v, list)}
    combos = itertools.product(*axes.values()) if axes else [()]
    return [{**fixed, **dict(zip(axes, c))} for c in combos]


def _kind_axes(spec: SweepSpec) -> dict[str, list]:
    """The grid axes that only one trial kind has."""
    if spec.kind == "imp":
        return {"tau": _as_list(spec.tau), "rewind": _as_list(spec.rewind), "control": _as_list(spec.control)}
    if spec.kind == "strong":
        return {"select": _as_list(spec.select)}
    return {"epsilon": _as_list(spec.epsilon), "n": _as_list(spec.n), "c": _as_list(spec.c),
            "distribution": _as_list(spec.distribution)}


def _config(spec: SweepSpec, ds: DatasetSpec, model: str, dic: dict, train: dict, seed: int, extra: dict):
    common = dict(dataset=ds.name, data_dir=ds.data_dir, model=model, seed=seed, train=TrainConfig(**train),
                  val_fraction=ds.val_fraction, split_seed=ds.split_seed, device=spec.device)
    if spec.kind == "imp":
        if spec.rounds is None:
            raise SpecError("rounds: required for kind imp (rows per trial, round 0 is the dense network)")
        return TrajectoryConfig(**common, dictionary=dict(dic), rounds=spec.rounds, tau=float(extra["tau"]),
                                rewind=extra["rewind"], control=extra["control"])
    if spec.kind == "strong":
        return StrongConfig(**common, dictionary=dict(dic), densities=tuple(spec.densities), select=extra["select"])
    return ConstructConfig(**common, epsilon=float(extra["epsilon"]), n=extra["n"], c=float(extra["c"]),
                           distribution=extra["distribution"])


def expand(spec: SweepSpec) -> list[Trial]:
    """The grid, checked point by point (names, τ, layers, bases, data directories)."""
    trials = []
    data_seen: dict[tuple, Any] = {}
    kind_axes = _kind_axes(spec)
    models_for_kind = _as_list(spec.model) if spec.kind != "construct" or "model" in spec.model_fields_set \
        else ["mlp_500_nobias"]
    for ds, model, dic, train, *extra, seed in itertools.product(
        [_dataset(d) for d in _as_list(spec.dataset)],
        models_for_kind,
        _as_list(spec.dictionary),
        _train_axes(spec.train),
        *kind_axes.values(),
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
            cfg = _config(spec, ds, model, dic, train, seed, dict(zip(kind_axes, extra)))
            net = models.build(model, info.input_shape, info.num_classes)
            dictionaries.validate(cfg.dictionary_spec, net)
        except (ValueError, TypeError) as e:
            raise SpecError(str(e).splitlines()[0]) from None
        trials.append(Trial(cfg, spec.kind))
    return trials
