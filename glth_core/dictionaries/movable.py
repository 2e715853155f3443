"""Objects whose tensors move to a device together (``Movable.to``, like ``nn.Module.to``): a
dictionary and the maps it is built from."""

from __future__ import annotations

import torch


def to_device(value, device):
    """``value`` with every tensor in it (through lists, tuples, dicts, ``Movable``s) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Movable):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


class Movable:
    """An object whose tensor attributes move together, like ``nn.Module.to`` (in place)."""

    def to(self, device):
        for name, value in vars(self).items():
            setattr(self, name, to_device(value, device))
        return self
