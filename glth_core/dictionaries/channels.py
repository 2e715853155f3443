"""Channel groups (the paper's "pruning units" special case): the canonical basis on one layer,
with every element of one input channel, or of one output unit, in one group.

``per: in``: the scope is the layer's weight; group i is input channel i of every filter (all
its kh×kw weights) of an nn.Conv2d, or input feature i of every unit of an nn.Linear (the same
as an identity bottleneck there). Removing it removes that channel from the layer's input.

``per: out``: the scope is the layer's weight *and its bias*; group k is filter (or unit) k with
its bias, so a removed unit outputs exactly 0 and the next layer's input k can go too. (Leaving
the bias out would leave a removed unit emitting a constant, which export could not drop exactly
past a zero-padded conv.)

``per: out`` is refused on a layer whose outputs reach a residual sum through channelwise modules
only (a ResNet block's ``conv2``, its shortcut conv, the stem conv): the skip connection would still
carry a removed channel. A block's ``conv1`` (its outputs are ``conv2``'s inputs) is allowed.

Coefficients are the parameters themselves: analyze and synthesize are the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from glth_core.dictionaries.base import Dictionary
from glth_core.dictionaries.options import LAYER, DictionarySpecError, one_of
from glth_core.dictionaries.residual import residual_sum
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
        if opts["per"] == "out" and (where := residual_sum(model, name)) is not None:
            raise DictionarySpecError(
                f"dictionary.layer: {name!r} (per: out) feeds the residual sum in {where!r}, whose "
                "skip connection would still carry a removed channel; use a layer whose outputs "
                "stay inside a block (a block's conv1)"
            )
        entries = [ScopeEntry(f"{name}.weight", tuple(layer.weight.shape), 0)]
        if opts["per"] == "out" and layer.bias is not None:
            entries.append(ScopeEntry(f"{name}.bias", tuple(layer.bias.shape), layer.weight.numel()))
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
        else:
            groups = [torch.arange(d_out, device=device).repeat_interleave(d_in * per_kernel)]
            if layer.bias is not None:
                groups.append(torch.arange(d_out, device=device))
            d.groups = torch.cat(groups)
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
