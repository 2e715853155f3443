"""Block-diagonal dictionaries: the scope vector cut into consecutive segments, each segment a
(rows × width) matrix whose rows one orthogonal map (``transforms.Orthogonal``) acts on.

The random rotation (one segment, one row), the block-diagonal kinds (a segment per tensor)
and the bottleneck (one segment, a row per unit, one U shared by every row) are all this.
"""

from __future__ import annotations

import torch

from glth_core.dictionaries.base import Dictionary
from glth_core.dictionaries.movable import Movable
from glth_core.dictionaries.scope import ScopeEntry
from glth_core.dictionaries.transforms import Orthogonal


class Segment(Movable):
    """``scope[offset : offset + rows·width]`` seen as rows × width, mapped row by row by ``op``."""

    def __init__(self, offset: int, rows: int, width: int, op: Orthogonal):
        self.offset, self.rows, self.width, self.op = offset, rows, width, op

    def apply(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        block = x[..., self.offset : self.offset + self.rows * self.width].unflatten(-1, (self.rows, self.width))
        return getattr(self.op, direction)(block).flatten(-2)


class BlockDictionary(Dictionary):
    """A dictionary made of segments that tile the scope in order. Accepts leading batch dims."""

    def __init__(self, scope: tuple[ScopeEntry, ...], segments: list[Segment]):
        super().__init__(scope)
        assert sum(s.rows * s.width for s in segments) == self.size, "segments must tile the scope"
        self.segments = segments

    def _map(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        parts = [s.apply(x, direction) for s in self.segments]
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def analyze(self, w: torch.Tensor) -> torch.Tensor:
        return self._map(w, "analyze")

    def synthesize(self, a: torch.Tensor) -> torch.Tensor:
        return self._map(a, "synthesize")
