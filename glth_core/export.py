"""A trained ticket as a plain PyTorch network, pruned for real where the dictionary allows it.

* **bottleneck** (paper eq. 1, W = U' C'): the layer becomes ``Linear(d_in → m, no bias)`` holding
  the m kept columns of U (weight U_keptᵀ) followed by ``Linear(m → d_out)`` with C_kept and the
  original bias. With U = I the first op is ``IndexSelect`` (keep m input coordinates, no
  multiply); if a Linear feeds the layer through elementwise activations only (a hidden layer),
  the dropped inputs are units of that Linear, which loses those rows instead (paper §3: "we can
  also remove hidden neurons from the previous dense layer"). On a Conv2d: a kh×kw conv to m
  channels (U_keptᵀ) then a 1×1 conv (C_kept, bias); with U = I, the input channels it pruned
  entirely go (``glth_core.export_layers``).
* **channels**: Conv2d/Linear layers with fewer input channels (and the previous layer with fewer
  filters) or fewer output units (and the next layer with fewer inputs).
* **composite**: each part as its kind is, on the same network (``Exported.parts`` says how);
  a part whose change would touch a module an earlier part already changes stays masked-dense.
* **any other dictionary** (canonical, random, block-diagonal): the masked dense network, i.e. the
  model with the synthesized weights W = D a (zeros where a canonical ticket pruned).

Pure torch: ``torch.save`` of the result needs only torch and glth_core (``IndexSelect``, defined in
``glth_core.export_layers`` and importable from here too) to load again.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from glth_core.dictionaries import Dictionary
from glth_core.export_layers import ELEMENTWISE, ExportPlan, IndexSelect, plan_for  # noqa: F401  (ELEMENTWISE: kept importable here)

__all__ = ["IndexSelect", "Exported", "masked_model", "export", "count_parameters", "latency"]


@dataclass
class Exported:
    """The exported network and what was done to get it (``form``: factorized | input-select |
    fold-previous | fold-next | masked-dense | composite). ``extra``: form-specific facts (e.g.
    ``kept_channels``, ``next``); ``parts``: for a composite, one such description per part."""

    module: nn.Module
    form: str
    layer: str | None = None
    kept_groups: int | None = None
    d_in: int | None = None
    d_out: int | None = None
    extra: dict = field(default_factory=dict)
    parts: list[dict] | None = None

    def describe(self) -> dict:
        out = {
            "form": self.form,
            "layer": self.layer,
            "kept_groups": self.kept_groups,
            "d_in": self.d_in,
            "d_out": self.d_out,
            **self.extra,
            "parameters": count_parameters(self.module),
        }
        if self.parts is not None:
            out["parts"] = self.parts
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def network_params(dictionary: Dictionary, ticket) -> dict[str, torch.Tensor]:
    """The ticket's full parameter dict in the model's own coordinates (W = D a, zeros pruned)."""
    w = ticket.weights()
    return {**w.free, **dictionary.unflatten(dictionary.synthesize(w.coeffs))}


@torch.no_grad()
def masked_model(model: nn.Module, dictionary: Dictionary, ticket) -> nn.Module:
    """A copy of ``model`` holding the ticket's weights (and running statistics): the same architecture
    as round 0, in eval mode."""
    net = copy.deepcopy(model).eval()
    params = network_params(dictionary, ticket)
    own = dict(net.named_parameters())
    missing = set(own) - set(params)
    if missing:
        raise ValueError(f"ticket lacks parameters {sorted(missing)}")
    for name, p in own.items():
        p.copy_(params[name].detach().reshape(p.shape))
    for name, b in net.named_buffers():  # BatchNorm's running statistics, which tickets carry
        if name in params:
            b.copy_(params[name].detach().reshape(b.shape))
    return net


_CORE = ("layer", "kept_groups", "d_in", "d_out")


def _exported(net: nn.Module, plan: ExportPlan) -> Exported:
    core = {k: plan.info.get(k) for k in _CORE}
    extra = {k: v for k, v in plan.info.items() if k not in _CORE}
    if plan.note:
        extra["note"] = plan.note
    return Exported(net, plan.form, **core, extra=extra)


@torch.no_grad()
def export(
    model: nn.Module, dictionary: Dictionary, ticket, factorize: str = "auto", fold_previous: bool = True
) -> Exported:
    """The ticket as a pruned plain-PyTorch network (see the module doc).

    ``factorize`` (bottlenecks with U ≠ I): "auto" factors the layer only when that has fewer
    parameters than the dense layer (m·(d_in + d_out) < d_in·d_out), "always", or "never".
    ``fold_previous``: an identity bottleneck (or ``channels per: in``) drops the previous layer's units.
    """
    if factorize not in ("auto", "always", "never"):
        raise ValueError(f"factorize: {factorize!r} is not one of auto, always, never")
    net = masked_model(model, dictionary, ticket)
    w = ticket.weights()
    coeffs, mask = w.coeffs, ticket.mask.to(torch.bool)
    if dictionary.parts is None:
        plan = plan_for(net, dictionary, coeffs, mask, factorize, fold_previous)
        plan.apply(net)
        return _exported(net, plan)
    plans, owner = [], {}
    for i, (part, start, stop) in enumerate(dictionary.part_ranges()):
        plan = plan_for(net, part, coeffs[start:stop], mask[start:stop], factorize, fold_previous)
        clash = next((n for n in plan.replace if n in owner), None)
        if clash is not None:
            plan = ExportPlan(
                "masked-dense",
                plan.info,
                note=f"would replace module {clash!r}, which part {owner[clash]} replaces already; left dense",
            )
        owner.update({n: i for n in plan.replace})
        plans.append((part, plan))
    parts = []
    for i, (part, plan) in enumerate(plans):
        plan.apply(net)
        parts.append(
            {
                "part": i,
                "dictionary": part.label,
                "kind": part.kind,
                "form": plan.form,
                **plan.info,
                **({"note": plan.note} if plan.note else {}),
            }
        )
    return Exported(net, "composite", parts=parts)


@torch.no_grad()
def latency(modules: nn.Module | list[nn.Module], x: torch.Tensor, repeats: int = 30, warmup: int = 3):
    """Median wall seconds of one forward pass on the batch ``x``, per module. Several modules are
    timed interleaved (a, b, a, b, …) so that a machine busy with other work slows them alike."""
    many = isinstance(modules, (list, tuple))
    modules = list(modules) if many else [modules]
    for m in modules:
        m.eval()
        for _ in range(warmup):
            m(x)
    times: list[list[float]] = [[] for _ in modules]
    for _ in range(repeats):
        for m, ts in zip(modules, times):
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            m(x)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            ts.append(time.perf_counter() - t0)
    medians = [statistics.median(ts) for ts in times]
    return medians if many else medians[0]
