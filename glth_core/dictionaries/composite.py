"""A composite dictionary: several dictionaries side by side, each over its own part of the model.

``{kind: composite, parts: [{kind: bottleneck, layer: "1", basis: dct}, {kind: canonical,
scope: ["3.weight", "5.weight"]}], seed: S}``. The whole is block-diagonal over the parts, hence
orthonormal. Its scope is the parts' scopes one after another (part 0's parameters first, each
part's in model order); parameters in no part train densely. Scopes must be disjoint. One part
whose kind covers every parameter by default (canonical, random, blockdiag) may leave out
``scope``: it takes every parameter no other part claims.

Pruning, by default, is one global ordering by the objective ‖w − Pw‖² = Σ dropped a_i²: when
any part has groups, the composite's groups are each part's groups (ids offset to stay unique)
and every element of an ungrouped part is a group of its own, so groups and single elements are
ranked together by their energy and τ counts both; with no grouped part, elements are ranked by
|a_i| as usual. A part may carry ``tau: 0.x``: it then loses that fraction of its own remaining
elements (or groups) every round, ranked among themselves, and the rest share the trajectory's τ
(``tau_segments``, applied by ``sparsify.sparsify_dictionary``).

A seed-drawn part without its own ``seed`` takes the composite's (which defaults to the trial's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glth_core.dictionaries.base import Dictionary, TauSegment
from glth_core.dictionaries.options import CHECKS, SEED, TAU, DictionarySpecError, Option, parse
from glth_core.dictionaries.registry import PART_KINDS
from glth_core.dictionaries.scope import ScopeEntry


@dataclass(frozen=True)
class Part:
    """One parsed part: its kind's class, options, own τ (or None) and whether it gave a seed."""

    cls: type
    opts: dict
    tau: float | None
    own_seed: bool

    @property
    def label(self) -> str:
        base = self.opts["label"] or self.cls.label_for(self.opts)
        return base if self.tau is None else f"{base}-tau{self.tau:g}"


def _in_part(i: int, err: DictionarySpecError) -> DictionarySpecError:
    """The part's error with its field named as ``dictionary.parts[i].<field>``."""
    msg = str(err)
    if msg.startswith("dictionary"):
        msg = f"dictionary.parts[{i}]" + msg[len("dictionary") :]
    return DictionarySpecError(msg)


def parse_parts(key, value) -> tuple[Part, ...]:
    """The parts of a composite spec, each parsed as its own kind (any kind but composite,
    ``registry.PART_KINDS``) with its optional ``tau`` (``options.PART_KEYS``)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise DictionarySpecError(f"dictionary.{key}: must be a non-empty list of dictionary specs, got {value!r}")
    parts = []
    for i, spec in enumerate(value):
        if not isinstance(spec, dict):
            raise DictionarySpecError(
                f"dictionary.{key}[{i}]: must be a mapping such as {{kind: canonical}}, got {spec!r}"
            )
        if spec.get("kind") == "composite":
            raise DictionarySpecError(f"dictionary.{key}[{i}].kind: a composite's parts cannot be composites")
        spec = dict(spec)
        tau = spec.pop("tau", None)
        try:
            tau = CHECKS[TAU.type]("tau", tau, TAU)
            cls, opts = parse(spec, PART_KINDS)
        except DictionarySpecError as e:
            raise _in_part(i, e) from None
        parts.append(Part(cls, opts, tau, "seed" in spec))
    return tuple(parts)


PARTS = Option(
    "parts",
    read=parse_parts,
    doc="a list of dictionary specs, e.g. [{kind: bottleneck, layer: '1', basis: dct}, {kind: canonical}]",
)


class Composite(Dictionary):
    kind = "composite"
    FIELDS = {"parts": PARTS, "seed": SEED}
    LABEL = "composite"
    SCOPE_DEFAULTS_TO_ALL = False
    CAN_BE_PART = False

    @classmethod
    def label_for(cls, opts: dict) -> str:
        return "composite-" + "+".join(p.label for p in opts["parts"])

    @classmethod
    def draws_seed(cls, opts: dict) -> bool:
        return any(p.cls.draws_seed(p.opts) and not p.own_seed for p in opts["parts"])

    @classmethod
    def fitted_to_init(cls, opts: dict) -> bool:
        return any(p.cls.fitted_to_init(p.opts) for p in opts["parts"])

    @classmethod
    def spec_pieces(cls, opts: dict, model: nn.Module) -> list[tuple[str, type, tuple[ScopeEntry, ...]]]:
        return [
            (f"part {i} (kind {p.opts['kind']})", p.cls, scope)
            for i, (p, _, scope) in enumerate(cls.resolved_parts(opts, model))
        ]

    @classmethod
    def resolved_parts(cls, opts: dict, model: nn.Module) -> list[tuple[Part, dict, tuple[ScopeEntry, ...]]]:
        """(part, its options with seed and scope filled in, its scope) for each part, checked:
        each part against the model, at most one part taking the rest, disjoint scopes."""
        parts: list[Part] = opts["parts"]
        resolved: list = [None] * len(parts)
        rest = [i for i, p in enumerate(parts) if p.cls.SCOPE_DEFAULTS_TO_ALL and p.opts.get("scope") is None]
        if len(rest) > 1:
            raise DictionarySpecError(
                f"dictionary.parts: parts {rest[0]} and {rest[1]} both leave out scope; "
                "only one part may take the parameters the others do not claim"
            )
        for i, p in enumerate(parts):
            if i in rest:
                continue
            popts = dict(p.opts)
            try:
                p.cls.check(popts, model)
                resolved[i] = (p, popts, p.cls.scope_of(popts, model))
            except DictionarySpecError as e:
                raise _in_part(i, e) from None
        owner: dict[str, int] = {}
        for i, item in enumerate(resolved):
            for e in item[2] if item is not None else ():
                if e.name in owner:
                    raise DictionarySpecError(
                        f"dictionary.parts: parts {owner[e.name]} and {i} both claim parameter "
                        f"{e.name!r}; part scopes must be disjoint"
                    )
                owner[e.name] = i
        for i in rest:
            left = [n for n, _ in model.named_parameters() if n not in owner]
            if not left:
                raise DictionarySpecError(
                    f"dictionary.parts[{i}].scope: no parameter is left for this part; the other parts claim them all"
                )
            popts = {**parts[i].opts, "scope": left}
            try:
                parts[i].cls.check(popts, model)
                resolved[i] = (parts[i], popts, parts[i].cls.scope_of(popts, model))
            except DictionarySpecError as e:
                raise _in_part(i, e) from None
        for p, popts, _ in resolved:
            if p.cls.draws_seed(popts) and not p.own_seed:
                popts["seed"] = opts["seed"]
        return resolved

    @classmethod
    def check(cls, opts: dict, model: nn.Module):
        return cls.resolved_parts(opts, model)

    @classmethod
    def build(cls, opts: dict, model: nn.Module, train_x: torch.Tensor | None = None) -> "Composite":
        parts, taus = [], []
        for i, (p, popts, _) in enumerate(cls.resolved_parts(opts, model)):
            try:
                d = p.cls.build(popts, model, train_x)
            except DictionarySpecError as e:
                raise _in_part(i, e) from None
            d.label = popts["label"] or p.cls.label_for(popts)
            parts.append(d)
            taus.append(p.tau)
        return cls(parts, taus, opts["seed"])

    def __init__(self, parts: list[Dictionary], taus: list[float | None], seed: int = 0):
        entries, offset, starts = [], 0, []
        for d in parts:
            starts.append(offset)
            entries += [ScopeEntry(e.name, e.shape, offset + e.offset) for e in d.scope]
            offset += d.size
        super().__init__(tuple(entries))
        self.parts, self.taus, self.seed = parts, list(taus), seed
        self.starts = starts
        self.sizes = [d.size for d in parts]
        self.groups = self._groups()
        self.tau_segments = (
            None
            if all(t is None for t in taus)
            else tuple(TauSegment(s, s + n, t) for s, n, t in zip(starts, self.sizes, taus))
        )

    def _groups(self) -> torch.Tensor | None:
        """Each part's groups offset past the previous parts', singletons for ungrouped parts;
        None when no part has groups."""
        if all(d.groups is None for d in self.parts):
            return None
        out, offset = [], 0
        for d in self.parts:
            g = torch.arange(d.size) if d.groups is None else d.groups.cpu()
            out.append(g + offset)
            offset += d.size if d.groups is None else d.num_groups
        return torch.cat(out)

    def part_ranges(self) -> list[tuple[Dictionary, int, int]]:
        """(part, start, stop) of each part's elements in the composite's vector."""
        return [(d, s, s + n) for d, s, n in zip(self.parts, self.starts, self.sizes)]

    def _map(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        pieces = x.split(self.sizes, -1)
        out = [getattr(d, direction)(p) for d, p in zip(self.parts, pieces)]
        return out[0] if len(out) == 1 else torch.cat(out, -1)

    def analyze(self, w: torch.Tensor) -> torch.Tensor:
        return self._map(w, "analyze")

    def synthesize(self, a: torch.Tensor) -> torch.Tensor:
        return self._map(a, "synthesize")

    def describe(self) -> dict:
        basis = "+".join(f"{d.kind}-{d.describe()['basis']}" if d.describe()["basis"] else d.kind for d in self.parts)
        return {"dictionary": self.label, "dictionary_kind": self.kind, "basis": basis}
