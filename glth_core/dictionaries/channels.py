"""Channel groups (the paper's "pruning units" special case): the canonical basis on one layer,
with every element of one input channel, or of one output unit, in one group.

``per: in``: the scope is the layer's weight; group i is input channel i of every filter (all
its kh×kw weights) of an nn.Conv2d, or input feature i of every unit of an nn.Linear (the same
as an identity bottleneck there). Removing it removes that channel from the layer's input.

``per: out``: the scope is the layer's weight *and its bias*; group k is filter (or unit) k with
its bias, so a removed unit outputs exactly 0 and the next layer's input k can go too. (Leaving
the bias out would leave a removed unit emitting a constant, which export could not drop exactly
past a zero-padded conv.) For the same reason, where the layer's outputs pass through a BatchNorm
on the way to the next layer (a ResNet block's ``conv1 → bn1``, a VGG ``conv → bn``), that
BatchNorm's weight and bias are in the scope too, entry k of each in group k: a removed channel
is removed after the BatchNorm as well (γ_k = β_k = 0, so it is exactly 0 there too, where
otherwise the BatchNorm would map its zeros to the constant β_k − γ_k·μ_k/σ_k). The group's score
(Σ a_i² over its kept elements) then counts γ_k² + β_k² with the filter's weights. The
BatchNorm's running statistics stay outside (buffers, not coefficients). Which BatchNorm that is
is read from the model's graph (``channel_flow.flow``).

``per: out`` is refused on a layer whose outputs reach a residual sum through channelwise modules
only (a ResNet block's ``conv2``, its shortcut conv, the stem conv): the skip connection would still
carry a removed channel. A block's ``conv1`` (its outputs are ``conv2``'s inputs) is allowed.

Coefficients are the parameters themselves: analyze and synthesize are the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from glth_core.dictionaries.base import Dictionary
from glth_core.dictionaries.channel_flow import flow
from glth_core.dictionaries.options import LAYER, DictionarySpecError, one_of
from glth_core.dictionaries.scope import ScopeEntry, layer_of


class Channels(Dictionary):
    kind = "channels"
    TENSOR_ALIGNED = True
    variant_attr = "per"
    FIELDS = {"layer": LAYER, "per": one_of("in", "out")}
    LABEL = "channels-{per}"
    SCOPE_DEFAULTS_TO_ALL = False

    @classmethod
    def scope_of(cls, opts: dict, model: nn.Module) -> tuple[ScopeEntry, ...]:
        name, layer = opts["layer"], layer_of(model, opts["layer"])
        entries = [ScopeEntry(f"{name}.weight", tuple(layer.weight.shape), 0)]
        if opts["per"] == "in":
            return tuple(entries)
        found = flow(model, name)
        if found is not None and found.sums:
            raise DictionarySpecError(
                f"dictionary.layer: {name!r} (per: out) feeds the residual sum in {found.sums[0]!r}, whose "
                "skip connection would still carry a removed channel; use a layer whose outputs "
                "stay inside a block (a block's conv1)"
            )
        removed_with = [(f"{name}.bias", layer.bias)]  # a removed unit outputs 0: its bias goes with it
        for norm in found.norms if found is not None else ():  # and its constant after a BatchNorm
            module = model.get_submodule(norm)
            removed_with += [(f"{norm}.weight", module.weight), (f"{norm}.bias", module.bias)]
        for tensor_name, tensor in removed_with:
            if tensor is not None:
                entries.append(ScopeEntry(tensor_name, tuple(tensor.shape), entries[-1].offset + entries[-1].numel))
        return tuple(entries)

    @classmethod
    def check(cls, opts: dict, model: nn.Module):
        return cls.scope_of(opts, model)

    @classmethod
    def build(cls, opts: dict, model: nn.Module, train_x: torch.Tensor | None = None) -> "Channels":
        layer = layer_of(model, opts["layer"])
        d = cls(cls.scope_of(opts, model))
        d_out, d_in = layer.weight.shape[:2]
        per_kernel = layer.weight[0, 0].numel()  # kh·kw for a Conv2d, 1 for a Linear
        device = layer.weight.device
        if opts["per"] == "in":
            d.groups = torch.arange(d_in, device=device).repeat_interleave(per_kernel).repeat(d_out)
        else:  # the filter's weights, then one element a unit of each 1-D tensor removed with it
            units = torch.arange(d_out, device=device)
            d.groups = torch.cat([units.repeat_interleave(d_in * per_kernel)] + [units] * (len(d.scope) - 1))
        d.layer, d.per, d.d_in, d.d_out = opts["layer"], opts["per"], int(d_in), int(d_out)
        d.is_conv = isinstance(layer, nn.Conv2d)
        d.has_bias = opts["per"] == "out" and layer.bias is not None
        return d

    def analyze(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def synthesize(self, a: torch.Tensor) -> torch.Tensor:
        return a

    def export_plan(self, net, coeffs, mask, factorize, fold_previous):
        """Drop the pruned input channels (per: in) or units (per: out): ``export_layers.plan_channels``."""
        from glth_core.export_layers import plan_channels

        return plan_channels(net, self, coeffs, mask, factorize, fold_previous)

    def kept_channels(self, mask: torch.Tensor) -> torch.Tensor:
        """Indices of the input channels (per: in) or units (per: out) with any kept element."""
        alive = torch.zeros(self.d_in if self.per == "in" else self.d_out, dtype=torch.bool, device=mask.device)
        alive[self.groups.to(mask.device)[mask.to(torch.bool)]] = True
        return alive.nonzero().flatten()
