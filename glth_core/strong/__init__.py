"""Strong lottery tickets: subnetworks of random networks that work without any training."""

from glth_core.strong.construct import construct
from glth_core.strong.construction import Construction, effective_weights
from glth_core.strong.edge_popup import StrongConfig, StrongSearch, StrongState  # noqa: F401  (edge-popup search)
from glth_core.strong.evaluate import evaluate, output_error

__all__ = ["Construction", "construct", "effective_weights", "evaluate", "output_error"]
