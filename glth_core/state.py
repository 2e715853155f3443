"""One base for every runner's state between rounds: a dataclass of tensors, weights, numbers and
records that saves to one ``torch.save`` file and loads with ``weights_only=True``.

Fields are packed by value: ``Weights`` (and lists/dicts of them) become tagged dicts of plain
tensors, everything else is stored as it is. A field missing from an older file takes its default.
"""

from __future__ import annotations

import dataclasses
import io

import torch

from glth_core.config import MISSING, field_default
from glth_core.parameterization import Weights

_WEIGHTS = "__weights__"


def pack(value):
    if isinstance(value, Weights):
        return {_WEIGHTS: True, "coeffs": value.coeffs, "free": dict(value.free)}
    if isinstance(value, list):
        return [pack(v) for v in value]
    if isinstance(value, dict):
        return {k: pack(v) for k, v in value.items()}
    return value


def unpack(value):
    if isinstance(value, dict) and value.get(_WEIGHTS):
        return Weights(value["coeffs"], dict(value["free"]))
    if isinstance(value, list):
        return [unpack(v) for v in value]
    if isinstance(value, dict):
        return {k: unpack(v) for k, v in value.items()}
    return value


class State:
    """Mixin for dataclass states: ``to_dict``/``from_dict``, ``save``/``load``, ``to_bytes``."""

    def to_dict(self) -> dict:
        return {f.name: pack(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict):
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in d:
                kwargs[f.name] = unpack(d[f.name])
            elif field_default(f) is MISSING:
                raise ValueError(f"state: field {f.name!r} missing")
        return cls(**kwargs)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self.to_dict(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes):
        return cls.from_dict(torch.load(io.BytesIO(data), weights_only=True))

    def save(self, path) -> None:
        torch.save(self.to_dict(), path)

    @classmethod
    def load(cls, path):
        return cls.from_dict(torch.load(path, weights_only=True))
