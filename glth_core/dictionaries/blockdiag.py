"""Block-diagonal dictionaries (the paper's Fig. 1 left and center-left): one orthogonal block
per parameter tensor (``per: tensor``) or per unit (``per: unit``: each output unit's incoming
weights, i.e. a row of a Linear weight or one output channel's filter of a Conv; 1-D tensors
such as biases stay one block per tensor).

``block``: canonical (identity), dct (1-D orthonormal DCT over the block) or random (a seeded
rotation per block: dense Haar for blocks up to ``HAAR_MAX_BLOCK`` elements, the fast rotation
otherwise). The blocks of one tensor are mapped together, never one Python call per unit.
"""

from __future__ import annotations

from glth_core.dictionaries.blocks import BlockDictionary, Segment
from glth_core.dictionaries.haar import block_seed, haar_stack
from glth_core.dictionaries.options import SCOPE, SEED, one_of
from glth_core.dictionaries.transforms import BlockDCT, DCTRows, FastRotation, IdentityRows, MatrixRows

HAAR_MAX_BLOCK = 1024
#: a tensor's stack of per-unit Haar matrices holds at most this many entries (128 MiB float32);
#: beyond it (many units of ~1K inputs) its blocks use the fast rotation instead
HAAR_MAX_ENTRIES = 2**25


def _random_rows(rows: int, width: int, seeds: list[int]):
    if width <= HAAR_MAX_BLOCK and rows * width * width <= HAAR_MAX_ENTRIES:
        return MatrixRows(haar_stack(width, seeds))
    return FastRotation(width, seeds)


class BlockDiagonal(BlockDictionary):
    kind = "blockdiag"
    TENSOR_ALIGNED = True  # its blocks tile each tensor on its own
    variant_attr = "block"
    FIELDS = {
        "per": one_of("tensor", "unit", default="tensor"),
        "block": one_of("canonical", "random", "dct"),
        "seed": SEED,
        "scope": SCOPE,
    }
    LABEL = "blockdiag-{per}-{block}"

    @classmethod
    def build(cls, opts: dict, model, train_x=None) -> "BlockDiagonal":
        scope = cls.check(opts, model)
        segments, index = [], 0  # index: the block's position in the whole dictionary, for its seed
        for e in scope:
            rows = e.shape[0] if opts["per"] == "unit" and len(e.shape) >= 2 else 1
            width = e.numel // rows
            if opts["block"] == "random":
                op = _random_rows(rows, width, [block_seed(opts["seed"], index + r) for r in range(rows)])
            else:
                op = DCTRows() if opts["block"] == "dct" else IdentityRows()
            segments.append(Segment(e.offset, rows, width, op))
            index += rows
        if opts["block"] == "dct":
            segments = _merged_dct(segments)
        d = cls(scope, segments)
        d.per, d.block, d.seed = opts["per"], opts["block"], opts["seed"]
        return d


def _merged_dct(segments: list[Segment]) -> list[Segment]:
    """Consecutive one-row DCT segments (every tensor with ``per: tensor``; the biases with
    ``per: unit``) merged into one ``BlockDCT`` segment: the same blocks, far fewer ops a step."""
    out: list[Segment] = []
    run: list[Segment] = []
    for s in [*segments, None]:
        if s is not None and s.rows == 1:
            run.append(s)
            continue
        if len(run) > 1:
            out.append(Segment(run[0].offset, 1, sum(r.width for r in run), BlockDCT([r.width for r in run])))
        else:
            out += run
        run = []
        if s is not None:
            out.append(s)
    return out
