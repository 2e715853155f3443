"""From spec text to the raw mapping the models validate: YAML, the chosen profile, overrides,
and one-line messages for pydantic's errors.

The returned text is what the sweep directory's ``spec.yaml`` gets: it names the profile chosen
with ``--profile`` and records the command line's overrides, so it parses back to the same sweep.
"""

from __future__ import annotations

import re

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator import overrides as spec_overrides
from orchestrator.yaml_depth import MAX_DEPTH, too_deep


class SpecError(ValueError):
    """A spec that cannot run. ``str(e)`` is one line naming the field and allowed values."""


#: errors that only say a value is not the type of one member of a union (``T or list[T]``)
BRANCH_MISMATCH = ("list_type", "model_attributes_type", "dict_type", "model_type")


def first_error(err: ValidationError) -> dict:
    """The error to report: the first field's, preferring one from the union member that matches
    the value's shape (a list's own error over "not a mapping", say)."""
    errors = err.errors()
    field = [e for e in errors if e["loc"][:1] == errors[0]["loc"][:1]]
    inside = [e for e in field if not (len(e["loc"]) == 2 and e["type"] in BRANCH_MISMATCH)]
    return (inside or field)[0]


def format_error(err: ValidationError, model: type[BaseModel]) -> str:
    from orchestrator.spec.dictionary_schema import message

    e = first_error(err)
    own = message(e)
    if own is not None:
        return own
    # pydantic's own union/type locations (``list[nullable[dict[str,float]]]``, nested) are not fields
    loc = ".".join(
        str(p) for p in e["loc"] if not isinstance(p, int) and not re.fullmatch(r"(list|dict|nullable)\[.*\]", str(p))
    )
    loc = re.sub(r"\.?(str|int|float|bool|dict|none|(list|dict)\[[^\]]*\]|\w+Spec)(?=\.|$)", "", loc) or "spec"
    loc = loc if loc.isprintable() and loc.strip() == loc else repr(loc)  # a key such as 'a\x0cb' or ' ' quoted
    if e["type"] == "extra_forbidden":
        owner = model
        for part in loc.split(".")[:-1]:
            ann = owner.model_fields.get(part)
            inner = getattr(ann, "annotation", None)
            owner = next(
                (a for a in getattr(inner, "__args__", (inner,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                inner if isinstance(inner, type) and issubclass(inner, BaseModel) else owner,
            )
        return f"{loc}: unknown key; allowed: {', '.join(owner.model_fields)}"
    if e["type"] == "missing":
        return f"{loc}: required"
    return f"{loc}: {e['msg']} (got {e.get('input')!r})"


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_PROFILE_LINE = re.compile(r"^profile:.*$", re.M)


def _apply_profile(raw: dict, text: str, profile: str | None) -> tuple[dict, str, str | None]:
    """Merge the chosen entry of ``profiles:`` (``profile`` argument, else the spec's ``profile:``
    key) over the spec."""
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
    return deep_merge(raw, profiles[chosen]), text, str(chosen)


def raw_spec(text: str, profile: str | None = None, items: list[str] | None = None) -> tuple[dict, str, str | None]:
    """(the raw mapping to validate, the text to record, the profile chosen). ``items`` are
    command-line overrides (``tau=0.1,0.2``), applied after the profile and the spec's own
    recorded ``overrides:``."""
    try:
        if too_deep(text):
            raise SpecError(f"spec: not valid YAML (nested more than {MAX_DEPTH} levels deep)")
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"spec: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise SpecError("spec: not valid YAML (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise SpecError("spec: must be a mapping of keys such as name, dataset, model, dictionary, tau, seeds, rounds")
    raw, text, chosen = _apply_profile(raw, text, profile)
    try:
        recorded = raw.pop(spec_overrides.KEY, None) or []
        if not isinstance(recorded, list):
            raise spec_overrides.OverrideError(f"{spec_overrides.KEY}: must be a list of PATH=VALUE strings")
        raw = spec_overrides.apply(raw, spec_overrides.parse([*recorded, *(items or [])]))
        text = spec_overrides.record(text, items or [])
    except spec_overrides.OverrideError as e:
        raise SpecError(str(e)) from None
    return raw, text, chosen
