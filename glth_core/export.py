"""A trained ticket as a plain PyTorch network, pruned for real where the dictionary allows it.

* **bottleneck** (paper eq. 1, W = U' C'): the layer becomes ``Linear(d_in → m, no bias)`` holding
  the m kept columns of U (weight U_keptᵀ) followed by ``Linear(m → d_out)`` with C_kept and the
  original bias. With U = I the first op is ``IndexSelect`` (keep m input coordinates, no
  multiply); if a Linear feeds the layer through elementwise activations only (a hidden layer),
  the dropped inputs are units of that Linear, which loses those rows instead (paper §3: "we can
  also remove hidden neurons from the previous dense layer").
* **any other dictionary** (canonical, random, block-diagonal): the masked dense network, i.e. the
  model with the synthesized weights W = D a (zeros where a canonical ticket pruned).

Pure torch: ``torch.save`` of the result needs only torch and this module to load again.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from glth_core.dictionaries import Dictionary

__all__ = ["IndexSelect", "Exported", "masked_model", "export", "count_parameters", "latency"]

#: modules that act elementwise: a unit dropped after them can be dropped before them
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SiLU, nn.Identity, nn.Dropout)


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


@dataclass
class Exported:
    """The exported network and what was done to get it (``form``: factorized | input-select |
    fold-previous | masked-dense)."""

    module: nn.Module
    form: str
    layer: str | None = None
    kept_groups: int | None = None
    d_in: int | None = None
    d_out: int | None = None

    def describe(self) -> dict:
        return {"form": self.form, "layer": self.layer, "kept_groups": self.kept_groups, "d_in": self.d_in,
                "d_out": self.d_out, "parameters": count_parameters(self.module)}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def network_params(dictionary: Dictionary, ticket) -> dict[str, torch.Tensor]:
    """The ticket's full parameter dict in the model's own coordinates (W = D a, zeros pruned)."""
    w = ticket.weights()
    return {**w.free, **dictionary.unflatten(dictionary.synthesize(w.coeffs))}


@torch.no_grad()
def masked_model(model: nn.Module, dictionary: Dictionary, ticket) -> nn.Module:
    """A copy of ``model`` holding the ticket's weights: the same architecture as round 0."""
    net = copy.deepcopy(model).eval()
    params = network_params(dictionary, ticket)
    own = dict(net.named_parameters())
    missing = set(own) - set(params)
    if missing:
        raise ValueError(f"ticket lacks parameters {sorted(missing)}")
    for name, p in own.items():
        p.copy_(params[name].detach().reshape(p.shape))
    return net


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    head, _, leaf = name.rpartition(".")
    return (root.get_submodule(head) if head else root), leaf


def _previous_linear(parent: nn.Module, leaf: str) -> str | None:
    """In a Sequential, the Linear that feeds ``leaf`` through elementwise modules only."""
    if not isinstance(parent, nn.Sequential):
        return None
    names = list(parent._modules)
    for name in reversed(names[: names.index(leaf)]):
        module = parent._modules[name]
        if isinstance(module, nn.Linear):
            return name
        if not isinstance(module, ELEMENTWISE):
            return None
    return None


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.to(weight.device)


@torch.no_grad()
def export(model: nn.Module, dictionary: Dictionary, ticket, factorize: str = "auto",
           fold_previous: bool = True) -> Exported:
    """The ticket as a pruned plain-PyTorch network (see the module doc).

    ``factorize`` (bottlenecks with U ≠ I): "auto" factors the layer only when that has fewer
    parameters than the dense layer (m·(d_in + d_out) < d_in·d_out), "always", or "never".
    ``fold_previous``: an identity bottleneck on a hidden layer drops the previous Linear's units.
    """
    if factorize not in ("auto", "always", "never"):
        raise ValueError(f"factorize: {factorize!r} is not one of auto, always, never")
    net = masked_model(model, dictionary, ticket)
    if getattr(dictionary, "kind", None) != "bottleneck":
        return Exported(net, "masked-dense")

    name, d_in, d_out = dictionary.layer, dictionary.d_in, dictionary.d_out
    parent, leaf = _parent(net, name)
    dense: nn.Linear = getattr(parent, leaf)
    w = ticket.weights()
    keep = ticket.mask.view(d_out, d_in).any(dim=0)
    kept = keep.nonzero().flatten()
    m = int(kept.numel())
    C_kept = w.coeffs.view(d_out, d_in).index_select(1, kept)  # d_out × m
    bias = None if dense.bias is None else dense.bias.detach()
    info = dict(layer=name, kept_groups=m, d_in=d_in, d_out=d_out)

    if m == d_in and factorize != "always":  # nothing pruned yet: the dense layer is the smallest form
        return Exported(net, "masked-dense", **info)
    if dictionary.basis == "identity":  # U = I: W = C, so C_kept is W's kept input columns
        prev = _previous_linear(parent, leaf) if fold_previous else None
        if prev is not None:
            p: nn.Linear = getattr(parent, prev)
            setattr(parent, prev, _linear(p.weight.index_select(0, kept),
                                         None if p.bias is None else p.bias.index_select(0, kept)))
            setattr(parent, leaf, _linear(C_kept, bias))
            return Exported(net, "fold-previous", **info)
        setattr(parent, leaf, nn.Sequential(IndexSelect(kept), _linear(C_kept, bias)))
        return Exported(net, "input-select", **info)

    smaller = m * (d_in + d_out) < d_in * d_out
    if factorize == "never" or (factorize == "auto" and not smaller):
        return Exported(net, "masked-dense", **info)
    U_kept = dictionary.U.index_select(1, kept.to(dictionary.U.device)).to(C_kept)  # d_in × m
    setattr(parent, leaf, nn.Sequential(_linear(U_kept.T.contiguous(), None), _linear(C_kept, bias)))
    return Exported(net, "factorized", **info)


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
