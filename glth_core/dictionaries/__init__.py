"""Dictionaries: orthonormal bases over a model's parameters, one kind per file.

``build(spec, model)`` turns a spec such as ``{kind: bottleneck, layer: "1", basis: dct}`` into
a ``Dictionary``; ``validate`` checks a spec against a model without building anything heavy;
``label_of`` names a spec's dictionary in results. Adding a kind is one file plus one line in
``registry.PART_KINDS``.
"""

from __future__ import annotations

import torch
from torch import nn

from glth_core.dictionaries.base import Dictionary
from glth_core.dictionaries.composite import Composite
from glth_core.dictionaries.options import DictionarySpecError, Spec, parse
from glth_core.dictionaries.registry import PART_KINDS
from glth_core.dictionaries.scope import ScopeEntry, resolve_scope

__all__ = [
    "Dictionary",
    "DictionarySpecError",
    "ScopeEntry",
    "Spec",
    "KINDS",
    "build",
    "validate",
    "label_of",
    "resolve_scope",
    "seed_dependent",
    "varies_with_seed",
    "seeded",
    "transforms_inputs",
    "kind_of",
]

#: kind name → its class (the builder): every kind of ``registry.PART_KINDS``, and the composite of them
KINDS: dict[str, type] = {**PART_KINDS, "composite": Composite}


def kind_of(spec: dict) -> type[Dictionary]:
    """The class of a spec's kind (what the kind can do, asked without building anything); a
    missing or unknown kind: a one-line DictionarySpecError."""
    return parse(spec, KINDS)[0]


def label_of(spec: dict) -> str:
    """The dictionary's name in results (filesystem-safe): the spec's ``label`` or the kind's default."""
    cls, opts = parse(spec, KINDS)
    return opts["label"] or cls.label_for(opts)


def _parsed(spec: dict):
    try:
        return parse(spec, KINDS)
    except DictionarySpecError:
        return None, None  # an invalid spec is reported by ``validate``, not here


def seed_dependent(spec: dict) -> bool:
    """Whether the spec's basis is drawn from its seed: only such a spec takes the trial's seed
    when it gives none (``seeded``)."""
    cls, opts = _parsed(spec)
    return cls is not None and cls.draws_seed(opts)


def varies_with_seed(spec: dict) -> bool:
    """Whether trials that differ only in their seed prune different bases (drawn from the seed,
    or fitted to the seed's initialization): mask overlap across such seeds means nothing."""
    cls, opts = _parsed(spec)
    return cls is not None and (cls.draws_seed(opts) or cls.fitted_to_init(opts))


def transforms_inputs(spec: dict, model: nn.Module) -> bool:
    """Whether training on this dictionary sees the dataset transformed once (an input-layer
    bottleneck: flat vectors x U), not the images themselves."""
    cls, opts = parse(spec, KINDS)
    return cls.transforms_inputs(opts, model)


def seeded(spec: dict, seed: int) -> dict:
    """The spec with its seed resolved: a seed-dependent spec without a seed takes ``seed``."""
    from glth_core.dictionaries.random import without_default_version

    spec = dict(without_default_version(spec))  # version 1 written out is the spec without a version
    if seed_dependent(spec) and "seed" not in spec:
        spec["seed"] = seed
    return spec


def validate(spec: dict, model: nn.Module) -> None:
    """Raise DictionarySpecError if ``spec`` cannot be built on ``model`` (cheap: builds no basis;
    a pca bottleneck's need for training inputs is only checked by ``build``)."""
    cls, opts = parse(spec, KINDS)
    cls.check(opts, model)


def build(spec: dict, model: nn.Module, train_x: torch.Tensor | None = None) -> Dictionary:
    """The dictionary ``spec`` describes over ``model``'s parameters, on the model's device.
    ``train_x`` (training inputs, N×C×H×W) is needed only by the pca bottleneck."""
    cls, opts = parse(spec, KINDS)
    d = cls.build(opts, model, train_x)
    d.label = opts["label"] or cls.label_for(opts)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return d.to(device)
