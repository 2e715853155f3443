"""How a trajectory chooses the mask of its next round: IMP's magnitudes, or a control's rule.

``control`` (one per trajectory): IMP itself (``none``) or one of ``glth_core.controls``, each a
class that says whose scores cut the next mask (trained, the dense round's, random) or brings a
rule of its own (``structured``'s fixed order), and any trainings it adds (``reinit``).

How IMP cuts: ``prune_rounding`` (``sparsify.ROUNDINGS``); ``pruning: global`` (one ordering
over the whole dictionary, or a composite's per-part τ) or ``layerwise`` (each scope tensor loses
τ of its own survivors); ``layer_tau: {tensor: τ}`` gives named tensors their own rate (Frankle &
Carbin prune the output layer at half the rate), the others pruned as ``pruning`` says. Per-tensor
rates need coefficients that belong to one tensor each (``sparsify.tensor_index``).
"""

from __future__ import annotations

from glth_core.config import Config
from glth_core.controls import CONTROLS, Control, control_of
from glth_core.sparsify import Segment, tensor_index

PRUNINGS = ("global", "layerwise")


def check_pruning(config: Config) -> None:
    """The dictionary-independent checks of a trajectory's pruning options (one line each)."""
    if config.pruning not in PRUNINGS:
        raise ValueError(f"pruning: {config.pruning!r} is not one of {', '.join(PRUNINGS)}")
    if config.layer_tau is not None:
        if not isinstance(config.layer_tau, dict) or not config.layer_tau:
            raise ValueError(f"layer_tau: must be a mapping such as {{'5.weight': 0.1}}, got {config.layer_tau!r}")
        for name, tau in config.layer_tau.items():
            if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < tau < 1.0:
                raise ValueError(f"layer_tau.{name}: must be a number in (0, 1), got {tau!r}")
    control_of(config.control).check(config)


def layer_segments(config: Config, dictionary) -> tuple | None:
    """The segments ``sparsify_segments`` prunes by: None for one global ordering, a composite's
    ``tau_segments``, or one segment per scope tensor for layerwise pruning / ``layer_tau``."""
    own = dictionary.tau_segments
    if config.pruning == "global" and not config.layer_tau:
        return own or None
    if own:
        raise ValueError(
            "layer_tau: this composite dictionary gives its parts their own tau; give per-tensor rates "
            "there (or leave pruning: global and layer_tau out)"
        )
    field = "layer_tau" if config.pruning == "global" else "pruning"
    tensor_index(dictionary, field)  # refuses coefficients that mix tensors
    rates = dict(config.layer_tau or {})
    names = [e.name for e in dictionary.scope]
    unknown = [n for n in rates if n not in names]
    if unknown:
        raise ValueError(f"layer_tau.{unknown[0]}: not a tensor of the dictionary's scope; scope: {', '.join(names)}")
    default = config.tau if config.pruning == "layerwise" else None
    return tuple(Segment(e.offset, e.offset + e.numel, rates.get(e.name, default)) for e in dictionary.scope)


def mask_rule(config: Config, dictionary) -> Control:
    """The next-mask rule of one trajectory (config and dictionary fixed): its control, built over
    the segments it prunes by."""
    return control_of(config.control)(config, dictionary, layer_segments(config, dictionary))


__all__ = ["CONTROLS", "PRUNINGS", "check_pruning", "layer_segments", "mask_rule"]
