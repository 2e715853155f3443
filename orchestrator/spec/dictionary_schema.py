"""The pydantic models of a dictionary spec, generated from what each kind declares.

Each kind of ``glth_core.dictionaries.KINDS`` declares its keys as plain data
(``glth_core.dictionaries.options.Option``); here each becomes a pydantic model with
``kind: Literal[name]`` and one field per key, typed and constrained by the option (a ``choice``
becomes a ``Literal`` of its values, a seed a non-negative strict int, …). The kinds form a union
discriminated on ``kind``; a composite's parts are the same union less the composite, each with an
optional ``tau``. Nothing about a key is written twice: a kind that adds a key adds it to its
``FIELDS`` and the spec, its errors and its JSON Schema follow.

What a model cannot know (does the layer exist, does the scope match a parameter) is checked
against the built model when the grid expands (``glth_core.dictionaries.validate``).
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, WrapValidator, create_model

from glth_core import dictionaries
from glth_core.dictionaries.options import CHECKS, COMMON, LABEL_PATTERN, PART_KEYS, REQUIRED, Option


class KindSpec(BaseModel):
    """A dictionary spec of one kind: unknown keys refused."""

    model_config = ConfigDict(extra="forbid")


def _type(option: Option) -> Any:
    """The pydantic type of an option's values."""
    if option.type == "choice":
        return Literal[option.choices]
    if option.type == "seed":
        return Annotated[StrictInt, Field(ge=0)]
    if option.type == "names":
        return Union[StrictStr, Annotated[list[StrictStr], Field(min_length=1)]]
    if option.type == "layer":
        return Union[StrictStr, StrictInt]  # YAML reads `layer: 1` as an int
    if option.type == "label":
        return Annotated[StrictStr, Field(pattern=LABEL_PATTERN)]
    if option.type == "fraction":
        within = Field(gt=0, lt=1)
        return Union[Annotated[StrictFloat, within], Annotated[StrictInt, within]]
    if option.type == "parts":
        return Annotated[list[part_union()], Field(min_length=1)]
    raise ValueError(f"Option.type: {option.type!r} has no pydantic type")


def _field(option: Option) -> tuple[Any, Any]:
    hint = _type(option)
    if option.default is REQUIRED:
        return hint, Field(..., description=option.doc)
    return (hint if option.default is not None else Union[hint, None]), Field(option.default, description=option.doc)


def _model(kind: str, extra: dict[str, Option], suffix: str) -> type[BaseModel]:
    cls = dictionaries.KINDS[kind]
    options = {**cls.FIELDS, **COMMON, **extra}
    fields = {key: _field(option) for key, option in options.items()}
    name = f"{cls.__name__}{suffix}"
    return create_model(
        name,
        __base__=KindSpec,
        __doc__=(cls.__doc__ or "").strip().split("\n")[0] or None,
        kind=(Literal[kind], ...),
        **fields,
    )


@functools.cache
def kind_model(kind: str) -> type[BaseModel]:
    """The spec model of one dictionary kind."""
    return _model(kind, {}, "Spec")


@functools.cache
def part_union() -> Any:
    """A composite's part: any kind but composite, with its optional ``tau``."""
    models = [_model(k, PART_KEYS, "Part") for k, cls in dictionaries.KINDS.items() if cls.CAN_BE_PART]
    return Annotated[Union[tuple(models)], Field(discriminator="kind")]


@functools.cache
def spec_union() -> Any:
    """One dictionary spec: a union of the kinds' models, discriminated on ``kind``."""
    return Annotated[Union[tuple(kind_model(k) for k in dictionaries.KINDS)], Field(discriminator="kind")]


def _as_given(value, handler):
    """Validate, then keep the spec as written: the trial's config (and its id) holds the spec as
    the user gave it, with no defaults filled in."""
    handler(value)
    return value


@functools.cache
def axis_type() -> Any:
    """A spec's ``dictionary:`` value: one spec, or a list of them (a grid axis), kept as given."""
    one = spec_union()
    return Annotated[Union[one, list[one]], WrapValidator(_as_given)]


# -- one-line errors, phrased as the library phrases them (``options.parse``) ---------------------
def _is_marker(part, prefix: str) -> bool:
    return isinstance(part, str) and part.startswith(prefix)


_TYPE_MARKER = re.compile(r"^(str|int|float|bool|none|literal\[.*\]|function-\w+\[.*\]|constrained-.*)$")


def _walk(loc: tuple) -> tuple[str, str | None, bool]:
    """(the field as ``dictionary.parts[0].tau``, the kind whose key it is, whether it is in a part).
    A union member shows in ``loc`` as its tag (the kind), after the union's marker or a list index."""
    path, kind, in_part, expect_tag = [str(loc[0])], None, False, False
    for part in loc[1:]:
        if _is_marker(part, "tagged-union["):
            expect_tag = True
        elif _is_marker(part, "list[") or (isinstance(part, str) and _TYPE_MARKER.match(part)):
            continue  # a member of a value's own union (``str or list[str]``), not a key
        elif isinstance(part, int):
            if path[-1] == "parts":
                path[-1], in_part = f"parts[{part}]", True
            elif len(path) > 1:
                continue  # an index into a value (a scope's names), not into a list of specs
            kind, expect_tag = None, True
        elif expect_tag:
            kind, expect_tag = str(part), False
        else:
            path.append(str(part))
    return ".".join(path), kind, in_part


def message(err: dict) -> str | None:
    """The one-line message of a pydantic error inside a dictionary spec, or None for any other."""
    loc = err["loc"]
    if len(loc) < 2 or not (_is_marker(loc[1], "tagged-union[") or _is_marker(loc[1], "list[tagged-union[")):
        return None
    field, kind, in_part = _walk(loc)
    names = [k for k, cls in dictionaries.KINDS.items() if cls.CAN_BE_PART or not in_part]
    kind_cls = dictionaries.KINDS.get(kind) if kind is not None else None
    typ, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if typ == "union_tag_invalid":
        tag_cls = dictionaries.KINDS.get(ctx.get("tag"))
        if in_part and tag_cls is not None and not tag_cls.CAN_BE_PART:
            return f"{field}.kind: a composite's parts cannot be composites"
        return f"{field}.kind: {ctx.get('tag')!r} is not one of {', '.join(names)}"
    if typ == "union_tag_not_found":
        return f"{field}.kind: missing; one of {', '.join(names)}"
    if kind_cls is None or "." not in field:
        return f"{field}: must be a mapping such as {{kind: canonical}}, got {value!r}"
    key = field.rsplit(".", 1)[1]
    options = {**kind_cls.FIELDS, **COMMON}
    option = options.get(key) or PART_KEYS.get(key)
    if typ == "extra_forbidden" or option is None:
        return f"{field}: not a key of kind {kind}; allowed: kind, {', '.join(options)}"
    if typ == "missing":
        return f"{field}: missing for kind {kind}; {option.doc}"
    head = field.rsplit(".", 1)[0]
    try:
        CHECKS[option.type](key, value, option)
    except dictionaries.DictionarySpecError as e:  # the library's words for the value
        return f"{head}.{str(e).removeprefix('dictionary.')}"
    return f"{field}: {err['msg']} (got {value!r})"
