"""Where a layer's output channels go, read from the model's ``torch.fx`` graph (``flow``).

``channels`` ``per: out`` needs it twice. Its check: a removed output channel of a layer whose
output, through channelwise operations only, is added to a skip connection does not vanish (the
sum still carries the skip's channel, so the next layer's matching input cannot go), hence such
a layer is refused. Its scope: the normalization layers that the channels pass through on the way
(a BatchNorm maps a channel of zeros to a constant, its shift) are pruned with the channel. And
export (``glth_core.export_layers``) drops the channels from the layers that consume them.

The walk follows the channels through operations that act on each channel alone and keep a channel
of zeros at zero (ReLU and the other elementwise activations that vanish at 0, pooling, dropout,
identity), through BatchNorm (recorded in ``norms``), and through a flatten (after which a Linear
reads each channel as a run of features); it stops at a Conv2d or Linear that reads the channels
(``consumers``), at a sum (``sums``), at the model's output (``output``) and at anything else
(``other``; a functional ``batch_norm``, which has no module to prune, is walked past for the sums
only). A model that does not trace is not read: ``flow`` returns None.

``producer`` walks the other way, for ``channels`` ``per: in``: the layer whose filters are a
layer's input channels and nothing else's, so that export can remove them with the inputs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

#: modules that act on each channel alone and keep a channel of zeros at zero
ZERO_KEEPING_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.Tanh,
    nn.ELU,
    nn.SiLU,
    nn.Identity,
    nn.Dropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
ZERO_KEEPING_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.dropout,
}
ZERO_KEEPING_METHODS = {"relu", "relu_"}
#: channelwise operations that do not keep zeros (fine where the channels are removed whole)
OTHER_CHANNELWISE_MODULES = (nn.Sigmoid,)
OTHER_CHANNELWISE_FUNCTIONS = {torch.sigmoid, F.sigmoid}
NORMS = (nn.modules.batchnorm._BatchNorm,)
SUMS = {operator.add, operator.iadd, torch.add}
SUM_METHODS = {"add", "add_"}


@dataclass
class Flow:
    """What ``layer``'s output channels reach (module paths; see the module doc)."""

    norms: list[str] = field(default_factory=list)
    #: (a Conv2d or Linear reading the channels, whether a flatten lies between)
    consumers: list[tuple[str, bool]] = field(default_factory=list)
    sums: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    #: whether the channels are (part of) the model's output
    output: bool = False


def _flattens(node: fx.Node, modules: dict) -> bool:
    """``x.flatten(1)``, ``torch.flatten(x, 1)`` or an ``nn.Flatten()`` (all but the batch dim)."""
    if node.op == "call_module":
        m = modules.get(node.target)
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if (node.op == "call_method" and node.target == "flatten") or (
        node.op == "call_function" and node.target is torch.flatten
    ):
        args = list(node.args[1:]) + [None, None]
        start = node.kwargs.get("start_dim", args[0] if args[0] is not None else 0)
        end = node.kwargs.get("end_dim", args[1] if args[1] is not None else -1)
        return start == 1 and end == -1
    return False


def _passes(node: fx.Node, modules: dict, keep_zeros: bool = True) -> bool:
    """Whether ``node`` acts on each channel alone (and, with ``keep_zeros``, keeps zeros at zero)."""
    module = modules.get(node.target) if node.op == "call_module" else None
    return (
        isinstance(module, ZERO_KEEPING_MODULES)
        or (node.op == "call_function" and node.target in ZERO_KEEPING_FUNCTIONS)
        or (node.op == "call_method" and node.target in ZERO_KEEPING_METHODS)
        or (
            not keep_zeros
            and (
                isinstance(module, OTHER_CHANNELWISE_MODULES)
                or (node.op == "call_function" and node.target in OTHER_CHANNELWISE_FUNCTIONS)
            )
        )
    )


def _sum_module(node: fx.Node) -> str | None:
    """The module (path) holding the sum ``node`` is, or None when it is no sum."""
    if (node.op == "call_function" and node.target in SUMS) or (
        node.op == "call_method" and node.target in SUM_METHODS
    ):
        stack = node.meta.get("nn_module_stack") or {}
        return next(reversed(stack), None) or node.name
    return None


def _graph(model: nn.Module) -> fx.Graph | None:
    try:
        return fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - an untraceable model is simply not read
        return None


def flow(model: nn.Module, layer: str, keep_zeros: bool = True, graph: fx.Graph | None = None) -> Flow | None:
    """Where the output channels of module ``layer`` go (see the module doc), or None where
    ``torch.fx`` cannot trace the model. ``keep_zeros=False`` walks through every channelwise
    operation (a sigmoid too): enough where the channels go whole, as for ``producer``."""
    graph = graph or _graph(model)
    if graph is None:
        return None
    modules = dict(model.named_modules())
    conv = isinstance(modules.get(layer), nn.Conv2d)
    out = Flow()
    frontier = [(n, False) for n in graph.nodes if n.op == "call_module" and n.target == layer]
    seen = set()
    while frontier:
        node, flat = frontier.pop()
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            module = modules.get(user.target) if user.op == "call_module" else None
            if user.op == "output":
                out.output = True
            elif (where := _sum_module(user)) is not None:
                out.sums.append(where)
            elif isinstance(module, NORMS) and not flat:
                out.norms.append(user.target)
                frontier.append((user, flat))
            elif _passes(user, modules, keep_zeros) and not flat:
                frontier.append((user, flat))
            elif _flattens(user, modules) and not flat:
                frontier.append((user, True))
            elif (isinstance(module, nn.Conv2d) and conv and module.groups == 1 and not flat) or (
                isinstance(module, nn.Linear) and (flat or not conv)
            ):
                out.consumers.append((user.target, flat))
            else:
                out.other.append(user.target if user.op == "call_module" else user.name)
                if user.op == "call_function" and user.target is F.batch_norm:  # a sum past it still counts
                    frontier.append((user, flat))
    return out


def producer(model: nn.Module, layer: str) -> tuple[str, list[str]] | None:
    """(the Conv2d or Linear of ``layer``'s own type whose output channels are ``layer``'s input, through
    channelwise operations and BatchNorms (listed), and feed nothing else), or None. Removing an
    input channel of ``layer`` may then remove that producer's filter and those BatchNorms'
    channel too, whatever they computed there."""
    graph = _graph(model)
    modules = dict(model.named_modules())
    nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == layer] if graph is not None else []
    if len(nodes) != 1 or not nodes[0].args or not isinstance(nodes[0].args[0], fx.Node):
        return None
    node, kind = nodes[0].args[0], type(modules[layer])
    while not (node.op == "call_module" and type(modules.get(node.target)) is kind):
        if not (
            isinstance(modules.get(node.target) if node.op == "call_module" else None, NORMS)
            or _passes(node, modules, False)
        ):
            return None
        if not node.args or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]
    if getattr(modules[node.target], "groups", 1) != 1:
        return None
    found = flow(model, node.target, keep_zeros=False, graph=graph)
    if found.consumers != [(layer, False)] or found.sums or found.other or found.output:
        return None
    return node.target, found.norms
