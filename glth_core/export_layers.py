"""Physical removal, layer by layer: a ``Plan`` says which modules of the masked network to replace
by smaller ones so that the network computes the same function (``glth_core.export`` applies it).

Plans are built from the masked network before any is applied, and each replaces only modules it
read, so plans over disjoint modules (the parts of a composite) compose exactly.

* bottleneck on a Linear: ``factorized`` (Linear(d_in→m) with U_keptᵀ, then C_kept), or for U = I
  ``input-select`` / ``fold-previous`` (the previous Linear loses the dropped units).
* bottleneck on a Conv2d: ``factorized`` (a kh×kw conv to m channels holding U_keptᵀ, then a 1×1
  conv holding C_kept and the bias); for U = I, input channels whose every kh×kw position was
  pruned go (``input-select`` / ``fold-previous``), the other pruned positions stay as zeros.
* channels ``per: in``: the layer loses those input channels (``input-select``, or
  ``fold-previous``: the conv/Linear before it, through channelwise modules, loses those filters).
* channels ``per: out``: the layer loses those units or filters and the next layer (through
  modules that keep 0 at 0, and a Flatten) loses their inputs (``fold-next``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


class IndexSelect(nn.Module):
    """x ↦ x.index_select(dim, index): the inputs an identity bottleneck kept."""

    def __init__(self, index: torch.Tensor, dim: int = 1):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", index.detach().clone().long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(self.dim, self.index)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kept={self.index.numel()}"


#: modules that act elementwise: a unit dropped after them can be dropped before them
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SiLU, nn.Identity, nn.Dropout)
#: modules that act on each channel alone (a channel dropped after them can be dropped before)
CHANNELWISE = ELEMENTWISE + (nn.MaxPool2d, nn.AvgPool2d)
#: channelwise modules that map a channel of zeros to zeros (a removed unit stays removed)
ZERO_KEEPING = tuple(t for t in CHANNELWISE if t is not nn.Sigmoid)


@dataclass
class Plan:
    """Replace ``replace``'s modules (full names in the network) to get ``form``; ``info`` are the
    facts reported (layer, kept_groups, d_in, d_out, …); ``note`` says why nothing was removed."""

    form: str
    info: dict = field(default_factory=dict)
    replace: dict[str, nn.Module] = field(default_factory=dict)
    note: str = ""

    def apply(self, net: nn.Module) -> None:
        for name, module in self.replace.items():
            parent, leaf = parent_of(net, name)
            setattr(parent, leaf, module)


def parent_of(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    head, _, leaf = name.rpartition(".")
    return (root.get_submodule(head) if head else root), leaf


def _sibling(name: str, leaf: str) -> str:
    head, _, _ = name.rpartition(".")
    return f"{head}.{leaf}" if head else leaf


def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    return _filled(nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None), weight, bias)


def _filled(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """``layer`` holding ``weight`` (and ``bias``), on their device."""
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.to(weight.device)


def conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A Conv2d with ``conv``'s geometry (stride, padding, dilation) holding ``weight`` (out × in × kh × kw)."""
    layer = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
    )
    return _filled(layer, weight, bias)


def _like(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    return conv_like(layer, weight, bias) if isinstance(layer, nn.Conv2d) else linear(weight, bias)


def _bias(layer: nn.Module, index: torch.Tensor | None = None) -> torch.Tensor | None:
    if layer.bias is None:
        return None
    return layer.bias.detach() if index is None else layer.bias.detach().index_select(0, index)


def _previous(parent: nn.Module, leaf: str, kind: type) -> str | None:
    """In a Sequential, the ``kind`` layer feeding ``leaf`` through channelwise modules only."""
    if not isinstance(parent, nn.Sequential):
        return None
    names = list(parent._modules)
    passes = CHANNELWISE if kind is nn.Conv2d else ELEMENTWISE
    for name in reversed(names[: names.index(leaf)]):
        module = parent._modules[name]
        if type(module) is kind and getattr(module, "groups", 1) == 1:
            return name
        if not isinstance(module, passes):
            return None
    return None


def _next(parent: nn.Module, leaf: str, kind: type) -> tuple[str, bool] | None:
    """In a Sequential, (the layer that consumes ``leaf``'s units through modules that keep zeros,
    whether a Flatten lies between) — a Conv2d or Linear after a Conv2d, a Linear after a Linear."""
    if not isinstance(parent, nn.Sequential):
        return None
    names = list(parent._modules)
    flat = False
    for name in names[names.index(leaf) + 1 :]:
        module = parent._modules[name]
        if isinstance(module, nn.Linear) and (kind is nn.Linear or flat):
            return name, flat
        if isinstance(module, nn.Conv2d) and kind is nn.Conv2d and not flat and module.groups == 1:
            return name, flat
        if (
            kind is nn.Conv2d
            and not flat
            and isinstance(module, nn.Flatten)
            and module.start_dim == 1
            and module.end_dim == -1
        ):
            flat = True
            continue
        if not isinstance(module, ZERO_KEEPING):
            return None
    return None


def drop_inputs(
    net: nn.Module, name: str, kept: torch.Tensor, weight: torch.Tensor, info: dict, fold_previous: bool
) -> Plan:
    """Layer ``name`` keeps input channels ``kept`` (its new weight ``weight``): fold into the
    previous layer, which loses those units, or select the kept inputs."""
    parent, leaf = parent_of(net, name)
    layer = getattr(parent, leaf)
    prev = _previous(parent, leaf, type(layer)) if fold_previous else None
    new = _like(layer, weight, _bias(layer))
    if prev is not None:
        p = getattr(parent, prev)
        smaller = _like(p, p.weight.detach().index_select(0, kept), _bias(p, kept))
        return Plan("fold-previous", info, {_sibling(name, prev): smaller, name: new})
    return Plan("input-select", info, {name: nn.Sequential(IndexSelect(kept), new)})


def drop_outputs(net: nn.Module, name: str, kept: torch.Tensor, info: dict) -> Plan:
    """Layer ``name`` keeps units ``kept`` (the others are exactly zero, bias included); the next
    layer loses the matching inputs. Masked-dense when nothing consumes the layer's units."""
    parent, leaf = parent_of(net, name)
    layer = getattr(parent, leaf)
    found = _next(parent, leaf, type(layer))
    if found is None:
        return Plan("masked-dense", info, note=f"no layer after {name!r} to drop the removed units' inputs from")
    nxt_leaf, flat = found
    nxt = getattr(parent, nxt_leaf)
    cols = kept
    if flat:
        per_channel, rest = divmod(nxt.in_features, layer.out_channels)
        if rest:
            return Plan(
                "masked-dense",
                info,
                note=f"{nxt_leaf!r} has {nxt.in_features} inputs, not a multiple of {layer.out_channels} channels",
            )
        cols = (kept[:, None] * per_channel + torch.arange(per_channel, device=kept.device)).flatten()
    own = _like(layer, layer.weight.detach().index_select(0, kept), _bias(layer, kept))
    consumer = _like(nxt, nxt.weight.detach().index_select(1, cols), _bias(nxt))
    return Plan(
        "fold-next", {**info, "next": _sibling(name, nxt_leaf)}, {name: own, _sibling(name, nxt_leaf): consumer}
    )


def plan_bottleneck(
    net: nn.Module, d, coeffs: torch.Tensor, mask: torch.Tensor, factorize: str, fold_previous: bool
) -> Plan:
    """A bottleneck's plan (Linear or Conv2d); see the module doc."""
    name, d_in, d_out = d.layer, d.d_in, d.d_out
    layer = net.get_submodule(name)
    keep = mask.view(d_out, d_in).any(dim=0)
    kept = keep.nonzero().flatten()
    m = int(kept.numel())
    info = dict(layer=name, kept_groups=m, d_in=d_in, d_out=d_out)
    if m == d_in and factorize != "always":  # nothing pruned yet: the dense layer is the smallest form
        return Plan("masked-dense", info, note="every column of U kept")
    if m == 0:  # possible for a part of a composite under one global ordering
        return Plan("masked-dense", info, note="every column of U pruned: the weight is zero, the bias remains")
    conv = isinstance(layer, nn.Conv2d)
    if d.basis == "identity":
        if not conv:  # U = I: W = C, so C_kept is W's kept input columns
            C_kept = coeffs.view(d_out, d_in).index_select(1, kept)
            return drop_inputs(net, name, kept, C_kept, info, fold_previous)
        c_in = layer.in_channels
        channels = keep.view(c_in, -1).any(dim=1).nonzero().flatten()
        info["kept_channels"] = int(channels.numel())
        if channels.numel() == c_in:
            return Plan(
                "masked-dense", info, note="no input channel lost all its kernel positions; pruned ones stay zeros"
            )
        return drop_inputs(net, name, channels, layer.weight.detach().index_select(1, channels), info, fold_previous)
    smaller = m * (d_in + d_out) < d_in * d_out
    if factorize == "never" or (factorize == "auto" and not smaller):
        return Plan("masked-dense", info, note=f"U_kept·C_kept ({m} columns) is not smaller than the dense layer")
    C_kept = coeffs.view(d_out, d_in).index_select(1, kept)  # d_out × m
    U_kept = d.U.index_select(1, kept.to(d.U.device)).to(C_kept)  # d_in × m
    if conv:
        first = conv_like(layer, U_kept.T.reshape(m, *layer.weight.shape[1:]).contiguous(), None)
        second = nn.Conv2d(m, d_out, 1, bias=layer.bias is not None).to(C_kept.device)
        with torch.no_grad():
            second.weight.copy_(C_kept[:, :, None, None])
            if layer.bias is not None:
                second.bias.copy_(layer.bias)
    else:
        first, second = linear(U_kept.T.contiguous(), None), linear(C_kept, _bias(layer))
    return Plan("factorized", info, {name: nn.Sequential(first, second)})


def plan_channels(
    net: nn.Module, d, coeffs: torch.Tensor, mask: torch.Tensor, factorize: str, fold_previous: bool
) -> Plan:
    """A channels dictionary's plan: drop input channels (per: in) or units (per: out)."""
    kept = d.kept_channels(mask)
    total = d.d_in if d.per == "in" else d.d_out
    info = dict(layer=d.layer, kept_groups=int(kept.numel()), d_in=d.d_in, d_out=d.d_out)
    if kept.numel() == total:
        return Plan("masked-dense", info, note="every channel kept")
    if kept.numel() == 0:  # possible for a part of a composite under one global ordering
        return Plan("masked-dense", info, note="every channel pruned: the weight is zero")
    layer = net.get_submodule(d.layer)
    if d.per == "in":
        return drop_inputs(net, d.layer, kept, layer.weight.detach().index_select(1, kept), info, fold_previous)
    return drop_outputs(net, d.layer, kept, info)


def plan_for(
    net: nn.Module, d, coeffs: torch.Tensor, mask: torch.Tensor, factorize: str = "auto", fold_previous: bool = True
) -> Plan:
    """The plan for one (non-composite) dictionary's ticket on the masked network ``net``."""
    return d.export_plan(net, coeffs, mask, factorize, fold_previous)  # the kind's (``Dictionary.export_plan``)
