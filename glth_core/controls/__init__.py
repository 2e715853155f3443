"""The controls a trajectory's curve is compared against (``control:`` in a spec), one class per
module (``glth_core.controls.base.Control`` says what a control declares). Adding one: a module
with its ``Control`` subclass and one line in ``CONTROLS``."""

from __future__ import annotations

import math

from glth_core.controls.base import Control
from glth_core.controls.none import NoControl
from glth_core.controls.oneshot import OneShot
from glth_core.controls.random_mask import RandomMask
from glth_core.controls.reinit import REINIT_SEED_OFFSET, Reinit
from glth_core.controls.structured import Structured

__all__ = ["CONTROLS", "REINIT_SEED_OFFSET", "Control", "control_of", "is_imp", "label", "suffix"]

CONTROLS: dict[str, type[Control]] = {c.name: c for c in (NoControl, RandomMask, Reinit, Structured, OneShot)}


def control_of(name) -> type[Control]:
    """The control called ``name``; a missing value (None, NaN: rows written before the column
    existed) is IMP itself. An unknown name: a one-line ``ValueError`` naming ``control``."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return NoControl
    try:
        return CONTROLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"control: {name!r} is not one of {', '.join(CONTROLS)}") from None


def is_imp(name) -> bool:
    """Whether a row's ``control`` value is IMP's own curve (not a control of it)."""
    return control_of(name).is_imp()


def suffix(name) -> str:
    """The run-name tag of the control called ``name`` (empty for IMP)."""
    return control_of(name).suffix()


def label(name) -> str:
    """The legend/table tag of the control called ``name`` (empty for IMP)."""
    return control_of(name).label()
