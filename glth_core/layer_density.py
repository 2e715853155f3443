"""Per-layer density of a mask over a dictionary: which coefficients belong to which parameter
tensor, and the kept fraction of each tensor (the ``layer_density`` of every round row).

A coefficient *belongs to one tensor* when its dictionary element lives inside that tensor: every
element of the canonical, block-diagonal, bottleneck and channels kinds (a block or a bottleneck's
U never spans two tensors), and every element of any kind whose scope is a single tensor. A random
rotation over several tensors mixes them: each of its elements changes every tensor of its scope,
so "the kept fraction of tensor T" has no meaning there and such tensors are left out of the map
(absent, not a made-up number). Composite dictionaries are read part by part.

The kept fraction of a tensor is (kept coefficients that belong to it) / (its number of weights).
For the canonical and channels kinds that is the fraction of its weights that are nonzero in model
coordinates; for a rotation inside one tensor (bottleneck, block-diagonal, random on one tensor) the
weights W = D a are in general all nonzero, and the fraction counts the dimensions of the subspace
the tensor's weights are confined to. Parameters outside the dictionary's scope train densely: 1.
"""

from __future__ import annotations

import json

import torch
from torch import nn

__all__ = ["tensor_segments", "layer_density", "layer_density_json", "mixing_part"]


def tensor_segments(dictionary) -> dict[str, tuple[int, int] | None]:
    """Scope tensor name → the coefficients [start, stop) that belong to it, or None where the tensor's
    coefficients are shared with other tensors (a rotation mixing them)."""
    out: dict[str, tuple[int, int] | None] = {}
    for d, start, _ in dictionary.part_ranges():
        mixed = d.mixes_tensors(d.scope)
        for e in d.scope:
            out[e.name] = None if mixed else (start + e.offset, start + e.offset + e.numel)
    return out


def layer_density(dictionary, mask: torch.Tensor, model: nn.Module) -> dict[str, float]:
    """Parameter name → kept fraction, in model order (see the module doc; mixed tensors absent)."""
    segments = tensor_segments(dictionary)
    m = mask.detach().to(torch.bool).cpu()
    counts = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), m.long()]), 0)
    out = {}
    for name, _ in model.named_parameters():
        if name not in segments:
            out[name] = 1.0
        elif segments[name] is not None:
            start, stop = segments[name]
            out[name] = int(counts[stop] - counts[start]) / (stop - start)
    return out


def layer_density_json(dictionary, mask: torch.Tensor, model: nn.Module) -> str:
    """``layer_density`` as the JSON text of the row's ``layer_density`` column (model order)."""
    return json.dumps(layer_density(dictionary, mask, model))


def mixing_part(spec: dict, model: nn.Module) -> str | None:
    """Cheaply, from a dictionary spec (nothing built): a description of the first dictionary (or
    composite part) whose elements span several tensors, or None when every coefficient belongs to one."""
    from glth_core.dictionaries import KINDS
    from glth_core.dictionaries.options import parse

    cls, opts = parse(spec, KINDS)
    for what, kind, scope in cls.spec_pieces(opts, model):
        if kind.mixes_tensors(scope):
            return f"{what} mixes its {len(scope)} scope tensors"
    return None
