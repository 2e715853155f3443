"""YAML sweep spec → validated, expanded trials.

Validation happens here, at the boundary, before any Ray start: every problem becomes a
``SpecError`` whose message is one line naming the field and the allowed values. The spec's keys
are generated from the core configs (``schema``); any list-valued key is a grid axis (``grid``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from glth_core import kinds
from orchestrator.spec.grid import check_batches, expand, seed_sets
from orchestrator.spec.schema import sweep_model
from orchestrator.spec.text import SpecError, raw_spec
from orchestrator.spec.trials import Sweep, Trial

__all__ = ["SpecError", "Sweep", "Trial", "parse", "load", "seed_sets", "sweep_model"]


def parse(text: str, overrides: list[str] | None = None, profile: str | None = None) -> Sweep:
    """Parse YAML text into a validated, expanded Sweep (raises SpecError). ``profile`` names an
    entry of the spec's ``profiles:`` mapping, deep-merged over the spec before validation;
    ``overrides`` are command-line ``PATH=VALUE`` items applied after it and recorded in the text."""
    try:
        return _parse(text, overrides, profile)
    except RecursionError:  # a value nested hundreds of levels deep, past what YAML itself refuses
        raise SpecError("spec: a value is nested too deeply") from None


def _parse(text: str, overrides: list[str] | None, profile: str | None) -> Sweep:
    raw, text, chosen = raw_spec(text, profile, overrides)
    kind = raw.get("kind", kinds.DEFAULT)
    if not isinstance(kind, str) or kind not in kinds.KINDS:
        raise SpecError(f"kind: {kind!r} is not one of {', '.join(kinds.KINDS)}")
    model = sweep_model(kind)
    try:
        spec = model.model_validate(raw)
    except ValidationError as e:
        from orchestrator.spec.text import format_error

        raise SpecError(format_error(e, model)) from None
    trials = expand(spec, kind)
    if spec.batch_seeds > 1:
        check_batches(spec, kind, trials)
    return Sweep(spec=spec, text=text, trials=tuple(trials), profile=chosen)


def load(path: str | Path, overrides: list[str] | None = None, profile: str | None = None) -> Sweep:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec: {p} is not a file")
    return parse(p.read_text(), overrides, profile)
