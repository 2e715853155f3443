"""What a dictionary spec may hold (a small dict such as ``{kind: random, method: fast, seed: 3}``),
declared as plain data.

Every kind declares its keys as ``FIELDS = {key: Option}``. An ``Option`` is data, not code: its
type (one of ``TYPES``), its default (or ``REQUIRED``), its allowed values for a ``choice``, and a
line of help. Two readers interpret the same declarations:

- ``parse`` here, for the library (``dictionaries.build`` / ``validate`` on a plain dict, in a
  worker or a notebook): it returns the options with defaults filled in, or raises a one-line
  ``DictionarySpecError`` naming the field and what is allowed;
- ``orchestrator.spec.dictionary_schema``, which turns them into pydantic models (a union
  discriminated on ``kind``) for the sweep spec and its JSON Schema.

Checks that need the model (does the layer exist, does the scope match, is the input an image)
stay in each kind's ``check``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class DictionarySpecError(ValueError):
    """A dictionary spec that cannot be built; the message names the field and allowed values."""


REQUIRED = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()
#: the value types an option can have
TYPES = ("choice", "seed", "names", "layer", "label", "fraction", "parts")
LABEL_PATTERN = r"^[A-Za-z0-9._@-]+$"


class Spec(dict):
    """The type of a config field that holds a dictionary spec. At run time the value is a plain
    dict, as the user wrote it; the type tells the sweep spec's generator
    (``orchestrator.spec.schema``) to validate it with the kinds' generated models."""


@dataclass(frozen=True)
class Option:
    """One key of a kind's spec."""

    type: str
    default: Any = REQUIRED
    #: the allowed values of a ``choice``
    choices: tuple = ()
    #: what is allowed, in words (shown when the key is missing, and in the JSON Schema)
    doc: str = ""
    #: a ``parts`` option's reader ``(key, value) -> parts``, given by the kind that declares it
    read: Any = None

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"Option.type: {self.type!r} is not one of {', '.join(TYPES)}")


def one_of(*values, default=REQUIRED) -> Option:
    return Option("choice", default, tuple(values), f"one of {', '.join(map(str, values))}")


SEED = Option("seed", 0, doc="a non-negative integer")
SCOPE = Option("names", None, doc="a parameter name pattern (or preset: weights, weights_but_output) or a list of them")
#: a layer-bound kind's layer (bottleneck, channels)
LAYER = Option("layer", doc="the name of an nn.Linear or nn.Conv2d module, as in model.named_modules()")
#: a composite part's own τ
TAU = Option("fraction", None, doc="a number in (0, 1)")
#: every kind: ``label`` overrides the default label (to tell apart, say, two scopes)
COMMON = {"label": Option("label", None, doc="letters, digits and . _ @ -")}
#: the key a composite's part may add to its kind's keys
PART_KEYS = {"tau": TAU}


# -- the library's reading of the declarations ----------------------------------------------------
def _choice(key, value, option):
    # by type too: 2.0 == 2 and True == 1 in Python, but a spec that says 2.0 did not say 2
    if not any(type(value) is type(c) and value == c for c in option.choices):
        raise DictionarySpecError(f"dictionary.{key}: {value!r} is not one of {', '.join(map(str, option.choices))}")
    return value


def _seed(key, value, option):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DictionarySpecError(f"dictionary.{key}: must be a non-negative integer, got {value!r}")
    return value


def _names(key, value, option):
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise DictionarySpecError(
            f"dictionary.{key}: must be a parameter name pattern or a list of them, got {value!r}"
        )
    return list(names)


def _layer(key, value, option):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DictionarySpecError(f"dictionary.{key}: must be a module name such as '1', got {value!r}")
    return str(value)  # YAML reads `layer: 1` as an int


def _label(key, value, option):
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(LABEL_PATTERN, value):
        raise DictionarySpecError(f"dictionary.{key}: must be letters, digits and . _ @ -, got {value!r}")
    return value


def _fraction(key, value, option):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise DictionarySpecError(f"dictionary.{key}: must be a number in (0, 1), got {value!r}")
    return float(value)


def _parts(key, value, option):
    # the kind that declares a ``parts`` option reads them itself (composite: each part as its own kind)
    return option.read(key, value)


CHECKS = {
    "choice": _choice,
    "seed": _seed,
    "names": _names,
    "layer": _layer,
    "label": _label,
    "fraction": _fraction,
    "parts": _parts,
}


def parse(spec, kinds: dict) -> tuple[type, dict]:
    """(the kind's class, the options with defaults) for a spec, or DictionarySpecError."""
    if not isinstance(spec, dict):
        raise DictionarySpecError(f"dictionary: must be a mapping such as {{kind: canonical}}, got {spec!r}")
    names = ", ".join(kinds)
    if "kind" not in spec:
        raise DictionarySpecError(f"dictionary.kind: missing; one of {names}")
    if not isinstance(spec["kind"], str) or spec["kind"] not in kinds:
        raise DictionarySpecError(f"dictionary.kind: {spec['kind']!r} is not one of {names}")
    cls = kinds[spec["kind"]]
    fields = {**cls.FIELDS, **COMMON}
    for key in spec:
        if key != "kind" and key not in fields:
            raise DictionarySpecError(
                f"dictionary.{key}: not a key of kind {spec['kind']}; allowed: kind, {', '.join(fields)}"
            )
    opts = {"kind": spec["kind"]}
    for key, option in fields.items():
        if key in spec:
            opts[key] = CHECKS[option.type](key, spec[key], option)
        elif option.default is REQUIRED:
            raise DictionarySpecError(f"dictionary.{key}: missing for kind {spec['kind']}; {option.doc}")
        else:
            opts[key] = option.default
    return cls, opts
