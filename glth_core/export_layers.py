"""Physical removal, layer by layer: a ``ExportPlan`` says which modules of the masked network to replace
by smaller ones so that the network computes the same function (``glth_core.export`` applies it).

Plans are built from the masked network before any is applied, and each replaces only modules it
read, so plans over disjoint modules (the parts of a composite) compose exactly.

* bottleneck on a Linear: ``factorized`` (Linear(d_in→m) with U_keptᵀ, then C_kept), or for U = I
  ``input-select`` / ``fold-previous`` (the previous Linear loses the dropped units).
* bottleneck on a Conv2d: ``factorized`` (a kh×kw conv to m channels holding U_keptᵀ, then a 1×1
  conv holding C_kept and the bias); for U = I, input channels whose every kh×kw position was
  pruned go (``input-select`` / ``fold-previous``), the other pruned positions stay as zeros.
* channels ``per: in``: the layer loses those input channels (``input-select``, or
  ``fold-previous``: the conv/Linear whose output only this layer reads, through channelwise
  operations, loses those filters, and a BatchNorm between them those channels).
* channels ``per: out``: the layer loses those units or filters, any BatchNorm on the way loses
  those channels (the dictionary pruned its weight and bias with them), and the layers that read
  them (through operations that keep 0 at 0, and a flatten, in any ``torch.fx``-traceable model:
  ``dictionaries.channel_flow``) lose those inputs (``fold-next``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from glth_core.dictionaries.channel_flow import flow, producer


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


#: modules that act elementwise (kept importable; the walks export uses are in dictionaries.channel_flow)
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SiLU, nn.Identity, nn.Dropout)


@dataclass
class ExportPlan:
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


def drop_inputs(
    net: nn.Module, name: str, kept: torch.Tensor, weight: torch.Tensor, info: dict, fold_previous: bool
) -> ExportPlan:
    """Layer ``name`` keeps input channels ``kept`` (its new weight ``weight``): fold into the
    layer before it (``channel_flow.producer``: its output reaches only this layer, through
    channelwise operations), which loses those filters or units, and any BatchNorm between those
    channels; or select the kept inputs."""
    layer = net.get_submodule(name)
    found = producer(net, name) if fold_previous else None
    new = _like(layer, weight, _bias(layer))
    if found is None:
        return ExportPlan("input-select", info, {name: nn.Sequential(IndexSelect(kept), new)})
    prev, norms = found
    p = net.get_submodule(prev)
    replace = {prev: _like(p, p.weight.detach().index_select(0, kept), _bias(p, kept))}
    replace.update({n: sliced_norm(net.get_submodule(n), kept) for n in norms})
    replace[name] = new
    return ExportPlan("fold-previous", {**info, **({"norms": norms} if norms else {})}, replace)


def sliced_norm(norm: nn.Module, kept: torch.Tensor) -> nn.Module:
    """A BatchNorm like ``norm`` over the channels ``kept`` only (affine and running statistics)."""
    smaller = type(norm)(
        int(kept.numel()), norm.eps, norm.momentum, affine=norm.affine, track_running_stats=norm.track_running_stats
    )
    state = {k: (v if k == "num_batches_tracked" else v.index_select(0, kept)) for k, v in norm.state_dict().items()}
    smaller.load_state_dict(state)
    return smaller.to(kept.device).train(norm.training)


def drop_outputs(net: nn.Module, name: str, kept: torch.Tensor, info: dict, removed: tuple[str, ...]) -> ExportPlan:
    """Layer ``name`` keeps units ``kept`` (the others are exactly zero, bias included, and so are
    they after each BatchNorm on the way, whose parameters are in ``removed``, the dictionary's
    scope); those BatchNorms keep the same channels, and the layers that read the units (through
    operations that keep zeros at zero, and a flatten: ``channel_flow.flow``) lose the matching
    inputs. Masked-dense when something else reads them."""
    found = flow(net, name)
    layer = net.get_submodule(name)
    units = layer.weight.shape[0]
    if found is not None and not (found.sums or found.other) and (found.output or not found.consumers):
        return ExportPlan("masked-dense", info, note=f"no layer after {name!r} to drop the removed units' inputs from")
    if found is None or found.sums or found.other:
        why = (
            "the network does not trace (torch.fx)"
            if found is None
            else f"they reach {(found.sums + found.other)[0]!r}"
        )
        return ExportPlan("masked-dense", info, note=f"{name!r}'s removed units stay: {why}, which cannot lose them")
    constant = next((n for n in found.norms if f"{n}.weight" not in removed or f"{n}.bias" not in removed), None)
    if constant is not None:
        return ExportPlan(
            "masked-dense", info, note=f"{constant!r} maps {name!r}'s removed units to constants; they stay"
        )
    replace = {name: _like(layer, layer.weight.detach().index_select(0, kept), _bias(layer, kept))}
    replace.update({n: sliced_norm(net.get_submodule(n), kept) for n in found.norms})
    for consumer, flat in found.consumers:
        nxt = net.get_submodule(consumer)
        cols = kept
        if flat:
            per_channel, rest = divmod(nxt.in_features, units)
            if rest:
                return ExportPlan(
                    "masked-dense",
                    info,
                    note=f"{consumer!r} has {nxt.in_features} inputs, not a multiple of {units} channels",
                )
            cols = (kept[:, None] * per_channel + torch.arange(per_channel, device=kept.device)).flatten()
        replace[consumer] = _like(nxt, nxt.weight.detach().index_select(1, cols), _bias(nxt))
    consumers = [c for c, _ in found.consumers]
    extra = {"next": consumers[0] if len(consumers) == 1 else consumers}
    if found.norms:
        extra["norms"] = found.norms
    return ExportPlan("fold-next", {**info, **extra}, replace)


def plan_bottleneck(
    net: nn.Module, d, coeffs: torch.Tensor, mask: torch.Tensor, factorize: str, fold_previous: bool
) -> ExportPlan:
    """A bottleneck's plan (Linear or Conv2d); see the module doc."""
    name, d_in, d_out = d.layer, d.d_in, d.d_out
    layer = net.get_submodule(name)
    keep = mask.view(d_out, d_in).any(dim=0)
    kept = keep.nonzero().flatten()
    m = int(kept.numel())
    info = dict(layer=name, kept_groups=m, d_in=d_in, d_out=d_out)
    if m == d_in and factorize != "always":  # nothing pruned yet: the dense layer is the smallest form
        return ExportPlan("masked-dense", info, note="every column of U kept")
    if m == 0:  # possible for a part of a composite under one global ordering
        return ExportPlan("masked-dense", info, note="every column of U pruned: the weight is zero, the bias remains")
    conv = isinstance(layer, nn.Conv2d)
    if d.groups_are_inputs:  # U = I: the groups are the layer's inputs
        if not conv:  # U = I: W = C, so C_kept is W's kept input columns
            C_kept = coeffs.view(d_out, d_in).index_select(1, kept)
            return drop_inputs(net, name, kept, C_kept, info, fold_previous)
        c_in = layer.in_channels
        channels = keep.view(c_in, -1).any(dim=1).nonzero().flatten()
        info["kept_channels"] = int(channels.numel())
        if channels.numel() == c_in:
            return ExportPlan(
                "masked-dense", info, note="no input channel lost all its kernel positions; pruned ones stay zeros"
            )
        return drop_inputs(net, name, channels, layer.weight.detach().index_select(1, channels), info, fold_previous)
    smaller = m * (d_in + d_out) < d_in * d_out
    if factorize == "never" or (factorize == "auto" and not smaller):
        return ExportPlan("masked-dense", info, note=f"U_kept·C_kept ({m} columns) is not smaller than the dense layer")
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
    return ExportPlan("factorized", info, {name: nn.Sequential(first, second)})


def plan_channels(
    net: nn.Module, d, coeffs: torch.Tensor, mask: torch.Tensor, factorize: str, fold_previous: bool
) -> ExportPlan:
    """A channels dictionary's plan: drop input channels (per: in) or units (per: out)."""
    kept = d.kept_channels(mask)
    total = d.d_in if d.per == "in" else d.d_out
    info = dict(layer=d.layer, kept_groups=int(kept.numel()), d_in=d.d_in, d_out=d.d_out)
    if kept.numel() == total:
        return ExportPlan("masked-dense", info, note="every channel kept")
    if kept.numel() == 0:  # possible for a part of a composite under one global ordering
        return ExportPlan("masked-dense", info, note="every channel pruned: the weight is zero")
    layer = net.get_submodule(d.layer)
    if d.per == "in":
        return drop_inputs(net, d.layer, kept, layer.weight.detach().index_select(1, kept), info, fold_previous)
    return drop_outputs(net, d.layer, kept, info, d.scope_names)


def plan_for(
    net: nn.Module, d, coeffs: torch.Tensor, mask: torch.Tensor, factorize: str = "auto", fold_previous: bool = True
) -> ExportPlan:
    """The plan for one (non-composite) dictionary's ticket on the masked network ``net``."""
    return d.export_plan(net, coeffs, mask, factorize, fold_previous)  # the kind's (``Dictionary.export_plan``)
