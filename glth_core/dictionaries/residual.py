"""Where a layer's output channels go: into a residual sum or not (``channels`` ``per: out`` needs
not). A removed output channel of a layer whose output, through channelwise modules only (BatchNorm,
ReLU, pooling, dropout), is added to a skip connection does not vanish: the sum still carries the
skip's channel, so the next layer's matching input cannot go. Read from the model's ``torch.fx``
graph; a model that does not trace is not checked."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

#: modules and functions that act on each channel alone (a channel that is 0 stays 0 or constant)
CHANNELWISE_MODULES = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d)
CHANNELWISE_FUNCTIONS = {F.relu, torch.relu, F.max_pool2d, F.avg_pool2d, F.dropout, F.batch_norm}
CHANNELWISE_METHODS = {"relu", "relu_"}
SUMS = {operator.add, operator.iadd, torch.add}
SUM_METHODS = {"add", "add_"}


def residual_sum(model: nn.Module, layer: str) -> str | None:
    """The module (path) holding the residual sum that ``layer``'s output reaches through
    channelwise operations only, or None (none, or a model ``torch.fx`` cannot trace)."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - an untraceable model is simply not checked
        return None
    modules = dict(model.named_modules())
    frontier = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    seen = set()
    while frontier:
        node = frontier.pop()
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            if (user.op == "call_function" and user.target in SUMS) or (
                user.op == "call_method" and user.target in SUM_METHODS
            ):
                stack = user.meta.get("nn_module_stack") or {}
                return next(reversed(stack), None) or user.name
            channelwise = (
                (user.op == "call_module" and isinstance(modules.get(user.target), CHANNELWISE_MODULES))
                or (user.op == "call_function" and user.target in CHANNELWISE_FUNCTIONS)
                or (user.op == "call_method" and user.target in CHANNELWISE_METHODS)
            )
            if channelwise:
                frontier.append(user)
    return None
