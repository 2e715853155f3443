"""A dictionary's scope: which parameters of a model it covers, flattened in model order.

``resolve_scope`` turns a spec's ``scope`` (fnmatch patterns or presets, ``SCOPE_PRESETS``) into
``ScopeEntry``s (name, shape, offset into the scope vector); without one, every parameter but those
of normalization layers. ``layer_of`` finds the one layer a layer-bound kind (bottleneck,
channels) acts on. Every refusal is a one-line ``DictionarySpecError`` naming the field.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from torch import nn

from glth_core.dictionaries.options import DictionarySpecError


@dataclass(frozen=True)
class ScopeEntry:
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


#: scope presets of the lottery-ticket papers (open_lth's ``prunable_layer_names``): ``weights`` is
#: the weight of every nn.Linear and nn.Conv2d (no biases, no normalization parameters);
#: ``weights_but_output`` leaves out the last of them, the output layer (``pruning_layers_to_ignore``)
SCOPE_PRESETS = ("weights", "weights_but_output")


def preset_names(model: nn.Module, preset: str) -> list[str]:
    """The parameter names a scope preset stands for on ``model``, in model order."""
    names = [
        f"{n}.weight" if n else "weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    if not names:
        raise DictionarySpecError(
            f"dictionary.scope: {preset!r} needs an nn.Linear or nn.Conv2d layer; the model has none"
        )
    if preset == "weights_but_output":
        if len(names) < 2:
            raise DictionarySpecError(
                f"dictionary.scope: {preset!r} leaves nothing: the model's only weight is {names[0]}"
            )
        names = names[:-1]
    return names


#: normalization layers, whose parameters train densely outside the default scope (as in open_lth)
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def normalization_names(model: nn.Module) -> set[str]:
    """The parameter names of ``model``'s normalization layers (``NORM_TYPES``)."""
    return {
        f"{m}.{p}" if m else p
        for m, module in model.named_modules()
        if isinstance(module, NORM_TYPES)
        for p, _ in module.named_parameters(recurse=False)
    }


def resolve_scope(model: nn.Module, patterns: list[str] | None) -> tuple[ScopeEntry, ...]:
    """Parameter names matching any pattern (fnmatch), in model order; if None, every parameter
    but those of normalization layers (BatchNorm's weights and biases train densely outside it).
    A pattern may be a preset (``SCOPE_PRESETS``), which stands for its parameter names."""
    entries, offset = [], 0
    names = [n for n, _ in model.named_parameters()]
    outside = normalization_names(model) if patterns is None else set()
    if patterns is not None:
        if isinstance(patterns, str):
            patterns = [patterns]
        expanded = []
        for p in patterns:
            expanded += preset_names(model, p) if p in SCOPE_PRESETS and p not in names else [p]
        patterns = expanded
        for p in patterns:
            if not any(fnmatch.fnmatchcase(n, p) for n in names):
                raise DictionarySpecError(
                    f"dictionary.scope: {p!r} matches no parameter; allowed: {', '.join(SCOPE_PRESETS + tuple(names))}"
                )
    for name, p in model.named_parameters():
        if name in outside:
            continue
        if patterns is None or any(fnmatch.fnmatchcase(name, pat) for pat in patterns):
            entries.append(ScopeEntry(name, tuple(p.shape), offset))
            offset += p.numel()
    if not entries:
        raise DictionarySpecError("dictionary.scope: empty; name at least one parameter")
    return tuple(entries)


#: the layer types that the layer-bound kinds (bottleneck, channels) act on
LAYER_TYPES = (nn.Linear, nn.Conv2d)


def layer_of(model: nn.Module, name: str) -> nn.Linear | nn.Conv2d:
    """The nn.Linear or nn.Conv2d (groups = 1) called ``name``, or a one-line DictionarySpecError."""
    modules = dict(model.named_modules())
    layer = modules.get(name)
    if not isinstance(layer, LAYER_TYPES):
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        what = "is not in the model" if layer is None else f"is a {type(layer).__name__}, not an nn.Linear or nn.Conv2d"
        listing = f"Linear layers: {', '.join(linears) or 'none'}" + (
            f"; Conv2d layers: {', '.join(convs)}" if convs else ""
        )
        raise DictionarySpecError(f"dictionary.layer: {name!r} {what}; {listing}")
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise DictionarySpecError(
            f"dictionary.layer: {name!r} is a grouped Conv2d (groups={layer.groups}); only groups=1 is supported"
        )
    return layer
