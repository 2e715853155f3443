"""The dictionary protocol: an orthonormal basis over the flattened *scope* of a model.

A dictionary D acts on the scope vector w (the scope parameters flattened row-major and
concatenated in ``model.named_parameters()`` order).  ``analyze(w) = Dᵀw`` gives the
coefficients a, ``synthesize(a) = D a`` gives back w.  Both are linear, differentiable
torch maps, so training can keep a as the leaf and synthesize w once per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glth_core.dictionaries.movable import Movable
from glth_core.dictionaries.scope import ScopeEntry, resolve_scope


@dataclass(frozen=True)
class TauSegment:
    """Elements ``[start, stop)`` of a dictionary pruned at rate ``tau`` among themselves, or
    (``tau`` None) together with every other ``tau``-None segment at the trajectory's τ."""

    start: int
    stop: int
    tau: float | None = None


class Dictionary(Movable):
    """Base class. Subclasses set ``kind``, ``label``, ``groups`` and implement the two maps.

    ``to(device)`` moves every tensor the dictionary holds; ``build`` already puts them on the
    model's device.
    """

    kind: str = "?"
    label: str = "?"
    #: name of the attribute reported as ``basis`` by ``describe()`` ("" when None)
    variant_attr: str | None = None

    # -- the spec side of a kind (see ``dictionaries.options``) ---------------------------
    #: the spec keys besides ``kind`` and ``label``: {key: options.Option} (plain data)
    FIELDS: dict = {}
    #: the default label, formatted with the spec's options
    LABEL: str = "?"

    @classmethod
    def label_for(cls, opts: dict) -> str:
        return cls.LABEL.format(**opts)

    @classmethod
    def check(cls, opts: dict, model: nn.Module):
        """Check a parsed spec against ``model`` without building a basis (cheap)."""
        return resolve_scope(model, opts.get("scope"))

    @classmethod
    def build(cls, opts: dict, model: nn.Module, train_x: torch.Tensor | None = None) -> "Dictionary":
        raise NotImplementedError

    # -- the seed policy of a kind (``dictionaries.seed_dependent`` / ``varies_with_seed``) ----
    @classmethod
    def draws_seed(cls, opts: dict) -> bool:
        """Whether the basis is drawn from the spec's ``seed`` (which then defaults to the trial's):
        by default, when the kind's variant (``variant_attr``: a block or basis) is ``random``."""
        return cls.variant_attr is not None and opts.get(cls.variant_attr) == "random"

    @classmethod
    def fitted_to_init(cls, opts: dict) -> bool:
        """Whether the basis is computed from the initialized network (so it changes with the
        trial's seed even when nothing is drawn), e.g. PCA of a hidden layer's inputs."""
        return False

    @classmethod
    def transforms_inputs(cls, opts: dict, model: nn.Module) -> bool:
        """Whether the trainer feeds the network transformed inputs (the dataset mapped once, so
        no longer images): an input-layer bottleneck does."""
        return False

    # -- what a part of a composite needs to know (``dictionaries.composite``) -----------------
    #: True when a spec without ``scope`` covers every parameter; inside a composite such a part
    #: takes the parameters no other part claims. False for kinds tied to one layer.
    SCOPE_DEFAULTS_TO_ALL: bool = True

    @classmethod
    def scope_of(cls, opts: dict, model: nn.Module) -> tuple[ScopeEntry, ...]:
        """The scope a parsed spec covers on ``model`` (after ``check``), cheaply."""
        return resolve_scope(model, opts.get("scope"))

    #: False for a kind made of other kinds' dictionaries (a composite), which cannot be a part
    CAN_BE_PART: bool = True

    # -- what a kind can do (asked by pruning, rewinding, export, the records and the figures) ----
    #: True when each coefficient belongs to one scope tensor whatever the scope (so per-tensor
    #: pruning, ``layer_tau`` and ``rewind_norm: tensor`` apply); a rotation of several tensors
    #: together mixes them
    TENSOR_ALIGNED: bool = False
    #: True when the coefficients are the scope parameters themselves (``synthesize`` is the
    #: identity): training then keeps each scope tensor as its own leaf (``Parameterization.leaves``)
    IDENTITY: bool = False

    @classmethod
    def mixes_tensors(cls, scope: tuple[ScopeEntry, ...]) -> bool:
        """Whether a dictionary of this kind over ``scope`` has coefficients spanning tensors."""
        return not cls.TENSOR_ALIGNED and len(scope) > 1

    @classmethod
    def spec_pieces(cls, opts: dict, model: nn.Module) -> list[tuple[str, type, tuple[ScopeEntry, ...]]]:
        """Cheaply, from a parsed spec: (what to call it in a message, its kind's class, its scope)
        for the dictionary itself, or for each part of a composite."""
        return [(f"kind {opts['kind']}", cls, cls.scope_of(opts, model))]

    @classmethod
    def input_columns_layer(cls, spec: dict) -> str | None:
        """The layer whose input columns (columns of U) this kind's groups are, read from the
        spec (a bottleneck's ``layer``); None for a kind whose groups are no such columns."""
        return None

    @classmethod
    def maps_input_pixels(cls, spec: dict) -> bool:
        """Whether, on the network's input layer, a ticket's kept groups are image coordinates or
        frequencies ``glth plot`` can draw (read from the spec; checked on the built dictionary
        with ``is_input_layer``)."""
        return False

    #: LongTensor (size,) mapping element → group id, or None when elements prune one by one.
    groups: torch.Tensor | None = None
    #: the dictionaries it is made of (a composite's parts, ``part_ranges``), or None
    parts: list | None = None
    #: coefficient ranges pruned with a τ of their own (a composite's parts with ``tau``), or None
    tau_segments: tuple | None = None
    #: True when the dictionary acts on the network's input layer and the trainer feeds it the
    #: transformed inputs (an input-layer bottleneck)
    is_input_layer: bool = False
    #: LongTensor of group ids fixed before training, the first most important (the structured
    #: control keeps them in this order), or None: the kind orders nothing
    group_order: torch.Tensor | None = None

    def __init__(self, scope: tuple[ScopeEntry, ...]):
        self.scope = scope
        self.size = sum(e.numel for e in scope)

    # -- the two maps (1-D tensors of length ``size``) ------------------------------------
    def analyze(self, w: torch.Tensor) -> torch.Tensor:  # a = Dᵀ w
        raise NotImplementedError

    def synthesize(self, a: torch.Tensor) -> torch.Tensor:  # w = D a
        raise NotImplementedError

    # -- helpers shared by every kind ------------------------------------------------------
    @property
    def scope_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.scope)

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scope parameters → scope vector."""
        return torch.cat([params[e.name].reshape(-1) for e in self.scope])

    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scope vector → {name: tensor of the parameter's shape} (views, differentiable).

        One ``split`` rather than a slice per tensor: its backward is one concatenation, where
        each slice's backward would fill a zero vector of the whole scope."""
        parts = w.split([e.numel for e in self.scope])
        return {e.name: p.view(e.shape) for e, p in zip(self.scope, parts)}

    def part_ranges(self) -> list[tuple["Dictionary", int, int]]:
        """(dictionary, start, stop) of each piece's coefficients: the dictionary itself, or a
        composite's parts."""
        return [(self, 0, self.size)]

    @property
    def groups_are_inputs(self) -> bool:
        """Whether the groups are the layer's input coordinates themselves (an identity
        bottleneck), not directions in a basis of them: a round's record then lists the kept ones
        as ``kept_inputs``, and ``glth plot`` draws them as kept pixels, not kept frequencies."""
        return False

    @property
    def varies_with_init(self) -> bool:
        """Whether this built dictionary depends on the seed's initialized network (so seeds
        cannot share it, e.g. a PCA of a hidden layer's inputs)."""
        return False

    def export_plan(
        self, net: nn.Module, coeffs: torch.Tensor, mask: torch.Tensor, factorize: str, fold_previous: bool
    ):
        """The physical form of this dictionary's ticket for ``glth export`` (an
        ``export_layers.ExportPlan`` on the masked network ``net``): by default masked-dense."""
        from glth_core.export_layers import ExportPlan

        return ExportPlan(
            "masked-dense", note=f"a {self.kind} dictionary has no structure to remove: its weights stay dense"
        )

    @property
    def num_groups(self) -> int | None:
        return None if self.groups is None else int(self.groups.max().item()) + 1

    def describe(self) -> dict:
        """Flat facts recorded with results (kind, basis, …)."""
        basis = getattr(self, self.variant_attr) if self.variant_attr else ""
        return {"dictionary": self.label, "dictionary_kind": self.kind, "basis": basis}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}: {self.size} elements over {', '.join(self.scope_names)}>"
