"""``oneshot``: one-shot pruning beside iterative. Every round's mask is cut in one step from the
*dense* round's trained coefficients to the density IMP reaches at that round, so one trajectory
gives the one-shot curve at the densities of the iterative one (Frankle & Carbin 2019, Fig. 4); a
single target density is one of its rounds. The ticket trains as configured."""

from glth_core.controls.base import Control


class OneShot(Control):
    name = "oneshot"
    scores = "dense"
