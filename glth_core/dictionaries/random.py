"""A random rotation of the whole scope (the paper's Fig. 2 left).

``method: fast`` (default) is a seeded structured rotation in O(d log d) time and O(d) memory
(``transforms.FastRotation``); ``method: haar`` is a dense Haar-distributed matrix, exact in
distribution but d² memory and d³ to build, so it is refused above ``HAAR_MAX`` elements.
"""

from __future__ import annotations

from glth_core.dictionaries.base import DictionarySpecError
from glth_core.dictionaries.blocks import BlockDictionary, Segment
from glth_core.dictionaries.spec import SCOPE, SEED, one_of
from glth_core.dictionaries.transforms import FastRotation, MatrixRows, haar

HAAR_MAX = 40_000


class RandomRotation(BlockDictionary):
    kind = "random"
    variant_attr = "method"
    FIELDS = {"method": one_of("fast", "haar", default="fast"), "seed": SEED, "scope": SCOPE}
    LABEL = "random-{method}"

    @classmethod
    def draws_seed(cls, opts: dict) -> bool:
        return True

    @classmethod
    def check(cls, opts: dict, model):
        scope = super().check(opts, model)
        size = sum(e.numel for e in scope)
        if opts["method"] == "haar" and size > HAAR_MAX:
            raise DictionarySpecError(
                f"dictionary.method: haar needs a dense {size}×{size} matrix; scopes above {HAAR_MAX:,} "
                "elements must use method: fast (or a smaller dictionary.scope)"
            )
        return scope

    @classmethod
    def build(cls, opts: dict, model, train_x=None) -> "RandomRotation":
        scope = cls.check(opts, model)
        size = sum(e.numel for e in scope)
        if opts["method"] == "haar":
            op = MatrixRows(haar(size, opts["seed"]).unsqueeze(0))
        else:
            op = FastRotation(size, [opts["seed"]])
        d = cls(scope, [Segment(0, 1, size, op)])
        d.method, d.seed = opts["method"], opts["seed"]
        return d
