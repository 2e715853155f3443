"""The cost of a ticket: floating-point operations of one forward pass on one input, counted by
``torch.utils.flop_counter.FlopCounterMode`` on the *exported* network (``glth_core.export.export``).

Counting the exported module is what makes the number honest: where the dictionary prunes
structure (a bottleneck's columns of U, channels, units) export removes it physically and the
count drops; where it prunes single weights (canonical, random rotations, block-diagonal) export is
the masked dense network and the count is the dense one, because a dense kernel multiplies the
zeros too. FlopCounterMode counts the matrix products and convolutions (2 FLOPs per
multiply-accumulate: MACs are half of it); bias additions, activations and ``IndexSelect`` are
free there. The input is one zero image of the dataset's shape (the count does not depend on its
values), on the model's device. Cost: one export (a copy of the model and W = D a) and two
forward passes on one image per round.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "probe_input", "ticket_flops"]


def probe_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    """One zero input of ``input_shape`` (C×H×W or features), batch 1, on the model's device."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.zeros(1, *input_shape, device=device)


@torch.no_grad()
def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``module(x)`` as FlopCounterMode counts them (2 per multiply-accumulate)."""
    with FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


def ticket_flops(model: nn.Module, dictionary, ticket, input_shape: Sequence[int]) -> dict[str, int]:
    """{"flops": the exported ticket's FLOPs on one input, "flops_dense": the unpruned model's}."""
    from glth_core.export import export

    x = probe_input(model, input_shape)
    module = export(model, dictionary, ticket).module.eval()
    return {"flops": count_flops(module, x), "flops_dense": count_flops(model, x)}
