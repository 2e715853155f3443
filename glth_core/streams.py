"""Every random stream of a trajectory, named in one place.

A round's randomness is drawn from ``round_generator(seed, round, stream)``, which depends on
(seed, round, stream) alone, so a resumed round repeats exactly. Each use has its own stream;
the numbers are part of every stored row and mask (changing one changes results), so a new use
takes a new number here and no existing one moves.
"""

from __future__ import annotations

import torch

#: a round's data order (the batches of its training)
DATA_STREAM = 0
#: ``control: random_mask``: the random scores that choose round t's mask (t ≥ 1)
RANDOM_MASK_STREAM = 1
#: ``control: structured``: the seeded random order of units, drawn with round index 0, which no
#: random mask uses (those start at round 1)
STRUCTURED_STREAM = 1
#: the strong-ticket search (``glth_core.strong.edge_popup``): its score initialization
SCORE_STREAM = 2
#: the strong-ticket search: the kaiming_normal draw of its weights
INIT_STREAM = 3
#: linear mode connectivity (``glth_core.lmc``): the two copies' data orders
LMC_STREAMS = (4, 5)


def round_generator(seed: int, round_index: int, stream: int = DATA_STREAM) -> torch.Generator:
    """Randomness of round t (data order: stream 0, random masks: stream 1, edge-popup scores:
    stream 2, strong inits: 3, the two linear-mode-connectivity copies: 4 and 5) depends on (seed,
    t, stream) alone, so a resumed round repeats exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + round_index * 101 + stream)
