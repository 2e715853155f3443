"""IMP itself: drop the τ fraction of survivors with the smallest trained coefficients."""

from glth_core.controls.base import Control


class NoControl(Control):
    name = "none"
    marker, line = "o", "-"
