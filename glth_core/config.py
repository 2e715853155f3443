"""One base for every trial kind's config: a frozen dataclass with a canonical dict, a content
hash and ``from_dict``, plus the seed policy every kind shares.

Identity. A config's *identity* is the dict of its fields that differ from their declared
defaults (nested configs the same way, recursively), less the fields that do not change what is
computed (``device``). The trial id is the first 12 hex digits of the SHA-256 of the canonical
JSON of ``{"kind": KIND, **identity}``. Because defaults are left out, adding a new knob with a
default never changes an existing id; because the kind is in the hash, two kinds never share an
id even when their fields look alike. ``tests/test_trial_ids.py`` pins literal ids.

Seeds. Every kind has one ``seed``; from it come the initialization, the data order and, for a
dictionary drawn at random, the dictionary (unless its spec gives its own ``seed``). The split of
the data comes from ``split_seed``. ``seeds()`` lists every seed a config uses; kinds add theirs
with ``extra_seeds``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from typing import Any, ClassVar

ID_LENGTH = 12
MISSING = dataclasses.MISSING


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def plain(value: Any) -> Any:
    """A field value as JSON-like data: configs as dicts, tuples as lists."""
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a config class's fields (``from __future__`` annotations)."""
    return typing.get_type_hints(cls)


def nested_config(hint: Any) -> type | None:
    """The Config subclass a field holds, or None."""
    return hint if isinstance(hint, type) and issubclass(hint, Config) else None


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config. Subclasses are frozen dataclasses and set ``KIND``."""

    #: the hash salt: the trial kind's name (empty for configs that are only ever nested)
    KIND: ClassVar[str] = ""
    #: fields that say where a computation runs, not what it computes: never in the identity
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("device",)

    def __post_init__(self):
        # nested configs given as dicts (from YAML, JSON or a state file) become configs
        for name, hint in hints(type(self)).items():
            sub = nested_config(hint)
            value = getattr(self, name, None)
            if sub is not None and isinstance(value, dict):
                object.__setattr__(self, name, sub.from_dict(value, prefix=f"{name}."))
        self.check()

    def check(self) -> None:
        """Raise ValueError (one line naming the field) for values out of range."""

    # -- the dict and the identity -----------------------------------------------------------
    def resolved(self) -> dict[str, Any]:
        """Field values as they are computed with (a kind may fill in derived values, such as a
        dictionary's seed); the base returns the fields as they are."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict:
        """Every field, as JSON-like data (``from_dict`` reads it back)."""
        return {k: plain(v) for k, v in self.resolved().items()}

    def identity(self) -> dict:
        """The fields that differ from their defaults, recursively; ``NOT_IDENTITY`` left out."""
        out = {}
        values = self.resolved()
        for f in dataclasses.fields(self):
            if f.name in self.NOT_IDENTITY:
                continue
            value, default = values[f.name], field_default(f)
            if isinstance(value, Config):
                sub = value.identity()
                if sub:
                    out[f.name] = sub
            elif default is MISSING or plain(value) != plain(default):
                out[f.name] = plain(value)
        return out

    def content_hash(self) -> str:
        """The trial id: a hash of the kind and the identity."""
        text = canonical_json({"kind": self.KIND, **self.identity()})
        return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]

    def seedless_key(self) -> str:
        """Equal for configs that differ only in ``seed`` (the seeds of one batch are such configs)."""
        return dataclasses.replace(self, seed=0).content_hash()  # type: ignore[call-arg]

    @classmethod
    def from_dict(cls, d: dict, prefix: str = ""):
        """The config of ``d`` (as ``to_dict`` writes it); unknown keys are refused in one line."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ValueError(f"{prefix}{unknown[0]}: unknown key; allowed: {', '.join(names)}")
        return cls(**d)

    # -- seeds ---------------------------------------------------------------------------------
    def seeds(self) -> dict:
        """Every seed the computation uses, recorded with its results."""
        seed = getattr(self, "seed", None)
        out = {"init": seed, "data_order": seed, "split": getattr(self, "split_seed", None)}
        spec = self.resolved().get("dictionary")
        if isinstance(spec, dict):
            out["dictionary"] = spec.get("seed")
        return {**out, **self.extra_seeds()}

    def extra_seeds(self) -> dict:
        return {}


class SeededDictionary:
    """Mixin for configs with a ``dictionary`` spec and a ``seed``: a dictionary drawn at random
    takes the trial's seed unless its spec gives one (``dictionaries.seeded``), and that resolved
    spec is what is hashed, recorded and built."""

    @property
    def dictionary_spec(self) -> dict:
        from glth_core import dictionaries

        return dictionaries.seeded(self.dictionary, self.seed)  # type: ignore[attr-defined]

    def resolved(self) -> dict:
        return {**super().resolved(), "dictionary": self.dictionary_spec}  # type: ignore[misc]
