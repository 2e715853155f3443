"""Orthogonal maps on rows (``…, rows, width``), the building blocks of the dictionary kinds:
``synthesize`` = D, ``analyze`` = Dᵀ, each the other's backward, so autograd saves nothing and never
scatters. ``IdentityRows``, ``DCTRows`` (a DCT per row or per plane), ``BlockDCT`` (a DCT per
block of a row), ``MatrixRows`` (dense orthogonal matrices) and ``FastRotation``, the seeded
O(d log d) rotation: a few stages of (random sign, random permutation, DCT). The DCT itself is
``glth_core.dictionaries.dct``.
"""

from __future__ import annotations

import torch

from glth_core.dictionaries.dct import Chain, Gather, dct, dct2, dct_ops, idct, idct2, smooth_split
from glth_core.dictionaries.movable import Movable


class _Transpose(torch.autograd.Function):
    """y = forward(x) for an orthogonal map, whose backward is its transpose = its inverse."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, forward, inverse):
        return forward(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.inverse = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        return ctx.inverse(grad), None, None


class Orthogonal(Movable):
    """An orthogonal map D applied to each row of ``x`` (``…, rows, width``).

    Subclasses give ``forward`` (D) and ``inverse`` (Dᵀ); ``synthesize``/``analyze`` wrap
    them so each one's gradient is the other.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def synthesize(self, a: torch.Tensor) -> torch.Tensor:
        return _Transpose.apply(a, self.forward, self.inverse)

    def analyze(self, w: torch.Tensor) -> torch.Tensor:
        return _Transpose.apply(w, self.inverse, self.forward)


class IdentityRows(Orthogonal):
    def forward(self, a):
        return a

    inverse = synthesize = analyze = forward


class DCTRows(Orthogonal):
    """Coefficients are the orthonormal DCT of each row (analyze = DCT, synthesize = its
    inverse); with ``plane`` = (H, W) a row holds C planes and each gets a 2-D DCT."""

    def __init__(self, plane: tuple[int, int] | None = None):
        self.plane = plane

    def forward(self, a):
        if self.plane is None:
            return idct(a)
        return idct2(a.unflatten(-1, (-1, *self.plane))).flatten(-3)

    def inverse(self, w):
        if self.plane is None:
            return dct(w)
        return dct2(w.unflatten(-1, (-1, *self.plane))).flatten(-3)


class BlockDCT(Orthogonal):
    """Each row is consecutive blocks of ``lengths``, each block its own orthonormal 1-D DCT, all
    in one chain (one gather, an FFT per block, one gather), where one ``DCTRows`` per block
    would cost a few ops per block and a concatenation every step."""

    def __init__(self, lengths: list[int]):
        forward, inverse = dct_ops(list(lengths))
        self.lengths, self.dct, self.idct = list(lengths), Chain(forward), Chain(inverse)

    def forward(self, a):
        return self.idct(a)

    def inverse(self, w):
        return self.dct(w)


class MatrixRows(Orthogonal):
    """Dense orthogonal matrices: row r is Q_r a_r; ``q`` is (rows, m, m), or (1, m, m) for
    one matrix shared by every row (then one plain matmul). Other dtypes get a cast copy."""

    def __init__(self, q: torch.Tensor):
        self.q = q

    def _q(self, x: torch.Tensor) -> torch.Tensor:
        return self.q if self.q.dtype == x.dtype else self.q.to(x.dtype)

    def forward(self, a):
        q = self._q(a)
        if q.shape[0] == 1:
            return a @ q[0].T
        return (q @ a.unsqueeze(-1)).squeeze(-1)

    def inverse(self, w):
        q = self._q(w)
        if q.shape[0] == 1:
            return w @ q[0]
        return (w.unsqueeze(-2) @ q).squeeze(-2)


class FastRotation(Orthogonal):
    """A seeded structured rotation per row in O(w log w) time and O(w) memory.

    Each of ``stages`` stages flips random signs, applies a random permutation, then an
    orthonormal DCT; three stages mix every coordinate into every output. The DCT runs over
    a split of the width into FFT-friendly lengths (``smooth_split``, e.g. 28,950 = 28,812 +
    135 + 3): a DCT of a length with a large prime factor is several times slower, and the
    random permutations between stages do the mixing across the split.
    """

    def __init__(self, width: int, seeds: list[int], stages: int = 3):
        lengths = smooth_split(width)
        dct_forward, dct_inverse = dct_ops(lengths)
        perms = []
        for s in seeds:
            g = torch.Generator().manual_seed(s)
            perms.append(
                [
                    (torch.randperm(width, generator=g), torch.randint(0, 2, (width,), generator=g) * 2.0 - 1.0)
                    for _ in range(stages)
                ]
            )
        signed_perms = [
            Gather(torch.stack([p[i][0] for p in perms]), torch.stack([p[i][1] for p in perms])) for i in range(stages)
        ]
        synth, anal = [], []
        for g in signed_perms:
            synth += [g, *dct_forward]
        for g in reversed(signed_perms):
            anal += [*dct_inverse, g.inverse()]
        self.width, self.lengths = width, lengths
        self.synth, self.anal = Chain(synth), Chain(anal)

    def forward(self, a):
        return self.synth(a)

    def inverse(self, w):
        return self.anal(w)
