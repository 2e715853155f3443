"""The sweep spec's pydantic models, generated from the core config dataclasses.

Every field of a kind's config (``glth_core.kinds``) is a spec key of that kind, with the
config's default; a nested config (``train``) is a nested mapping whose keys are the nested
config's fields. A value may also be a list of values: a grid axis (for a field whose value is
itself a list, such as ``densities``, a list of lists). Nothing about a knob is written twice:
a field added to ``TrainConfig`` is accepted, validated (by the dataclass) and expanded here
without any edit to the orchestrator.

The keys every kind shares (``name``, ``experiment``, ``dataset``, ``seeds``, ``resources``, …)
are declared in ``SweepBase``; the config fields they supply (``dataset``, ``data_dir``,
``val_fraction``, ``split_seed``, ``normalize``, ``seed``, ``device``) are not repeated per kind.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model, field_validator

from glth_core import dictionaries, kinds
from glth_core.config import MISSING, field_default, hints, nested_config, plain
from orchestrator.spec import dictionary_schema

#: config fields that the shared spec keys supply
SUPPLIED = ("dataset", "data_dir", "val_fraction", "split_seed", "normalize", "seed", "device")
DEVICES = ("cpu", "cuda", "auto")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(Strict):
    name: str
    data_dir: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0
    #: per-channel normalization: train (the training split's own mean/std), none, or {mean: [...], std: [...]}
    normalize: str | dict = "train"


class ResourcesSpec(Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class SweepBase(Strict):
    """The keys every kind shares."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str = "glth"
    kind: str = kinds.DEFAULT
    dataset: DatasetSpec | str | list[DatasetSpec | str] = "digits"
    seeds: list[int] = Field(min_length=1)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent: int = Field(2, ge=1)
    batch_seeds: int = Field(1, ge=1)  # K seeds of one configuration trained at once (kinds that batch)
    max_failures: int = Field(5, ge=0)  # Tune retries per trial after a crash, each from its last round
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    #: where the sweep lives: a local directory, a shared filesystem path, or s3://bucket/prefix
    storage: str | None = None
    #: CPU/GPU utilization and memory of each trial's worker, as system/* metrics of its MLflow run
    system_metrics: bool = True

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


def _is_sequence(hint) -> bool:
    return typing.get_origin(hint) in (list, tuple) or hint in (list, tuple)


def _element(hint):
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    return args[0] if args else Any


#: config field types that have their own spec models: type → (() → the field's spec type, a grid axis included)
SPEC_TYPES = {dictionaries.Spec: dictionary_schema.axis_type}


def axis_type(hint):
    """``T or list[T]`` (a grid axis) for a field of type T; for a list-valued T, a list of them."""
    if hint is Any:
        return Any
    if hint in SPEC_TYPES:
        return SPEC_TYPES[hint]()
    if _is_sequence(hint):
        element = _element(hint)
        return Union[list[element], list[list[element]]]  # noqa: UP007 (built at run time from any hint)
    return Union[hint, list[hint]]  # noqa: UP007 (built at run time from any hint)


def is_axis(hint, value) -> bool:
    """Whether a spec value for a field of type ``hint`` is a grid axis (several values)."""
    if not isinstance(value, list):
        return False
    if _is_sequence(hint):
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


@functools.cache
def nested_model(config_cls: type, default: Any) -> type[BaseModel]:
    """A spec model for a nested config: each field ``T or list[T]``, defaults from ``default``."""
    fields = {}
    types = hints(config_cls)
    for f in dataclasses.fields(config_cls):
        fields[f.name] = (axis_type(types[f.name]), plain(getattr(default, f.name)))
    return create_model(f"{config_cls.__name__}Spec", __base__=Strict, **fields)


@functools.cache
def sweep_model(kind: str) -> type[BaseModel]:
    """The whole spec model of one trial kind."""
    config_cls = kinds.get(kind).config_cls
    required = getattr(config_cls, "SPEC_REQUIRED", ())
    types = hints(config_cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        if f.name in SUPPLIED:
            continue
        hint, default = types[f.name], field_default(f)
        sub = nested_config(hint)
        if sub is not None:
            model = nested_model(sub, default)
            fields[f.name] = (model, Field(default_factory=model))
            continue
        value = ... if f.name in required or default is MISSING else plain(default)
        fields[f.name] = (axis_type(hint), value)
    dataset_default = next(field_default(f) for f in dataclasses.fields(config_cls) if f.name == "dataset")
    fields["dataset"] = (DatasetSpec | str | list[DatasetSpec | str], dataset_default)
    fields["kind"] = (Literal[kind], kinds.DEFAULT if kind == kinds.DEFAULT else ...)
    return create_model(f"{config_cls.__name__}Sweep", __base__=SweepBase, **fields)


#: keys of a spec file that are read before validation (``spec.text``): profiles and overrides
FILE_KEYS = {
    "profiles": (
        Union[dict[str, dict[str, Any]], None],
        Field(None, description="name → spec keys merged over the spec by --profile NAME"),
    ),
    "profile": (Union[str, None], Field(None, description="the profile to use when --profile is not given")),
    "overrides": (Union[list[str], None], Field(None, description="PATH=VALUE overrides recorded by glth run")),
}


def spec_file_model() -> type[BaseModel]:
    """A sweep spec file of any kind: the kinds' models (``kind`` tells them apart; imp when left
    out) with the file's own keys (profiles, overrides). Its JSON Schema is ``glth schema``."""
    members = tuple(
        create_model(f"{sweep_model(k).__name__}File", __base__=sweep_model(k), **FILE_KEYS) for k in kinds.KINDS
    )
    return RootModel[Union[members]]


def kind_fields(kind: str) -> list[str]:
    """The spec keys a kind adds to ``SweepBase`` (its config's own fields)."""
    return [f.name for f in dataclasses.fields(kinds.get(kind).config_cls) if f.name not in SUPPLIED]
