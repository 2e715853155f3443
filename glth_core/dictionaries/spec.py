"""Checking a dictionary spec (a small dict such as ``{kind: random, method: fast, seed: 3}``).

Every kind declares its keys as ``FIELDS = {key: Field}``; ``parse`` checks a spec against
them and returns the options with defaults filled in. Errors are one line naming the field
and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from glth_core.dictionaries.base import DictionarySpecError

REQUIRED = object()
_LABEL = re.compile(r"^[A-Za-z0-9._@-]+$")


@dataclass(frozen=True)
class Field:
    check: Callable[[str, Any], Any]  # (key, value) → normalized value, or DictionarySpecError
    default: Any = REQUIRED
    allowed: str = ""  # shown when the key is missing


def one_of(*values: str, default=REQUIRED) -> Field:
    allowed = ", ".join(values)

    def check(key, value):
        if value not in values:
            raise DictionarySpecError(f"dictionary.{key}: {value!r} is not one of {allowed}")
        return value

    return Field(check, default, f"one of {allowed}")


def _seed(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DictionarySpecError(f"dictionary.{key}: must be a non-negative integer, got {value!r}")
    return value


def _scope(key, value):
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise DictionarySpecError(f"dictionary.{key}: must be a parameter name pattern or a list of them, got {value!r}")
    return list(names)


def _name(key, value):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DictionarySpecError(f"dictionary.{key}: must be a module name such as '1', got {value!r}")
    return str(value)  # YAML reads `layer: 1` as an int


def _label(key, value):
    if value is None:
        return None
    if not isinstance(value, str) or not _LABEL.match(value):
        raise DictionarySpecError(f"dictionary.{key}: must be letters, digits and . _ @ -, got {value!r}")
    return value


SEED = Field(_seed, 0, "a non-negative integer")
SCOPE = Field(_scope, None, "a parameter name pattern or a list of them")
LAYER = Field(_name, REQUIRED, "the name of an nn.Linear module, as in model.named_modules()")
#: a layer-bound kind that accepts both layer types (bottleneck, channels)
LAYER_ANY = Field(_name, REQUIRED, "the name of an nn.Linear or nn.Conv2d module, as in model.named_modules()")


def fraction(key, value):
    """A number strictly between 0 and 1 (a τ)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise DictionarySpecError(f"dictionary.{key}: must be a number in (0, 1), got {value!r}")
    return float(value)


#: every kind: ``label`` overrides the default label (to tell apart, say, two scopes)
COMMON = {"label": Field(_label, None)}


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
    for key, field in fields.items():
        if key in spec:
            opts[key] = field.check(key, spec[key])
        elif field.default is REQUIRED:
            raise DictionarySpecError(f"dictionary.{key}: missing for kind {spec['kind']}; {field.allowed}")
        else:
            opts[key] = field.default
    return cls, opts
