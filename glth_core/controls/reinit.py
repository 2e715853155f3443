"""``reinit``: IMP's masks; the record trains each round's mask from a fresh initialization (drawn
with seed + ``REINIT_SEED_OFFSET``), following the rewind mode as open_lth's
``randomly_reinitialize`` does (``glth_core.rewind.round_jobs``)."""

from glth_core.controls.base import Control

REINIT_SEED_OFFSET = 7919  # the fresh initialization uses seed + this


class Reinit(Control):
    name = "reinit"
    marker, line = "^", ":"

    @classmethod
    def extra_seeds(cls, config) -> dict:
        return {"reinit": cls.fresh_init_seed(config)}

    @classmethod
    def fresh_init_seed(cls, config) -> int:
        return config.seed + REINIT_SEED_OFFSET

    @classmethod
    def extra_starts(cls, state) -> list:
        return [state.reinit]
