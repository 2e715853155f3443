"""``random_mask``: IMP's counts, the survivors dropped at random (``RANDOM_MASK_STREAM`` of the round)."""

from glth_core.controls.base import Control


class RandomMask(Control):
    name = "random_mask"
    scores = "random"
    marker, line = "s", "--"

    @classmethod
    def extra_seeds(cls, config) -> dict:
        return {"random_mask": config.seed}
