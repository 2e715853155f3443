"""The orthonormal DCT in pure torch, differentiable, for any length.

``dct`` / ``idct``: the orthonormal DCT-II and its inverse (DCT-III, its transpose) along the last
dim, through one real FFT (Makhoul's reordering), equal to ``scipy.fft.dct(x, norm="ortho")`` /
``idct``; ``dct2`` / ``idct2`` over the last two dims; ``dct_matrix`` the same map as a matrix.

A DCT here is a short chain of index gathers around one FFT; consecutive gathers (a rotation
stage's permutation and signs, Makhoul's reordering, unpacking the FFT's output) fuse into one
(``Chain``), so a rotation stage (``transforms.FastRotation``) costs one gather, one multiply and
one FFT. ``smooth_split`` cuts a length into FFT-friendly ones.
"""

from __future__ import annotations

import functools
import math

import torch

from glth_core.dictionaries.movable import Movable


# -- gathers and FFT steps -----------------------------------------------------------------------
def _take(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``a[..., idx]`` along the last dim; ``idx`` may hold one index row per row of ``a``."""
    if idx.dim() == 1:
        return a.index_select(-1, idx)
    if a.dim() == 1:
        return a[idx]
    return torch.take_along_dim(a, idx.view((1,) * (a.dim() - idx.dim()) + idx.shape), dim=-1)


class Gather(Movable):
    """x ↦ x[..., idx] * sgn along the last dim (``sgn`` None means all ones)."""

    def __init__(self, idx: torch.Tensor, sgn: torch.Tensor | None = None):
        if idx.dim() == 2 and idx.shape[0] == 1:  # one row: the cheaper index_select path
            idx, sgn = idx[0], None if sgn is None else sgn.reshape(-1)
        self.idx, self.sgn = idx, sgn

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = _take(x, self.idx)
        return y if self.sgn is None else y * self.sgn

    def then(self, other: "Gather") -> "Gather":
        """One gather equal to self followed by other."""
        sgn = None if self.sgn is None else _take(self.sgn, other.idx)
        if other.sgn is not None:
            sgn = other.sgn if sgn is None else sgn * other.sgn
        return Gather(_take(self.idx, other.idx), sgn)

    def inverse(self) -> "Gather":
        """The inverse of a signed permutation."""
        inv = torch.argsort(self.idx, dim=-1)
        return Gather(inv, None if self.sgn is None else _take(self.sgn, inv))


class _Twiddle(Movable):
    """Complex factors kept in complex128 and cast once per dtype on first use."""

    def __init__(self, exact: torch.Tensor):
        self.cast = {torch.complex128: exact}

    def __call__(self, dtype) -> torch.Tensor:
        if dtype not in self.cast:
            self.cast[dtype] = self.cast[torch.complex128].to(dtype)
        return self.cast[dtype]


class _Rfft(Movable):
    """Reordered real blocks ↦ their real FFTs times twiddles, packed as (re, im) pairs."""

    def __init__(self, lengths: list[int], twiddle: _Twiddle):
        self.lengths, self.twiddle = lengths, twiddle

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if len(self.lengths) == 1:
            z = torch.fft.rfft(v)
        else:
            z = torch.cat([torch.fft.rfft(p) for p in v.split(self.lengths, -1)], -1)
        return torch.view_as_real(z * self.twiddle(z.dtype)).flatten(-2)


class _Irfft(Movable):
    """The inverse of ``_Rfft``: packed (re, im) pairs ↦ reordered real blocks."""

    def __init__(self, lengths: list[int], twiddle: _Twiddle):
        self.lengths, self.twiddle = lengths, twiddle
        self.halves = [n // 2 + 1 for n in lengths]

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        z = torch.view_as_complex(q.unflatten(-1, (-1, 2)).contiguous())
        z = z * self.twiddle(z.dtype)
        if len(self.lengths) == 1:
            return torch.fft.irfft(z, n=self.lengths[0])
        parts = z.split(self.halves, -1)
        return torch.cat([torch.fft.irfft(p, n=n) for p, n in zip(parts, self.lengths)], -1)


class Chain(Movable):
    """A sequence of gathers and FFT steps, adjacent gathers fused into one."""

    def __init__(self, ops: list):
        fused = []
        for op in ops:
            if fused and isinstance(op, Gather) and isinstance(fused[-1], Gather):
                fused[-1] = fused[-1].then(op)
            else:
                fused.append(op)
        self.ops = fused

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op(x)
        return x


def dct_ops(lengths: list[int]) -> tuple[list, list]:
    """(DCT ops, inverse DCT ops) of the block-diagonal DCT over consecutive blocks ``lengths``.

    Makhoul: with v = (x₀, x₂, x₄, …, x₅, x₃, x₁) and V = FFT(v),
    X_k = s_k Re(V_k e^{-iπk/2n}) and X_{n-k} = −s_k Im(V_k e^{-iπk/2n}), so the real FFT's
    n//2+1 outputs give all n coefficients; s₀ = √(1/n), s_k = √(2/n) make it orthonormal.
    """
    reorder, unpack, unpack_sgn, pack, pack_sgn, tw = [], [], [], [], [], []
    offset = packed_offset = 0
    for n in lengths:
        h = n // 2 + 1
        reorder.append(torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2).flip(0)]) + offset)
        j = torch.arange(n)
        low = j <= n // 2  # X_j is Re of the packed entry j, else −Im of entry n − j
        unpack.append(torch.where(low, 2 * j, 2 * (n - j) + 1) + packed_offset)
        unpack_sgn.append(torch.where(low, 1.0, -1.0))
        k = torch.arange(h)
        pack.append(torch.stack([k, (n - k) % n], -1).flatten() + offset)  # (X_k, X_{n-k}) pairs
        pack_sgn.append(torch.stack([torch.ones(h, dtype=torch.float64), -(k > 0).double()], -1).flatten())
        scale = torch.full((h,), math.sqrt(2 / n), dtype=torch.float64)
        scale[0] = math.sqrt(1 / n)
        tw.append(scale * torch.exp(-1j * math.pi * k.double() / (2 * n)))
        offset += n
        packed_offset += 2 * h
    reorder = torch.cat(reorder)
    tw = torch.cat(tw)
    forward = [Gather(reorder), _Rfft(lengths, _Twiddle(tw)), Gather(torch.cat(unpack), torch.cat(unpack_sgn).float())]
    inverse = [
        Gather(torch.cat(pack), torch.cat(pack_sgn).float()),
        _Irfft(lengths, _Twiddle(1 / tw)),
        Gather(torch.argsort(reorder)),
    ]
    return forward, inverse


@functools.lru_cache(maxsize=64)
def _dct_chains(n: int, device: torch.device) -> tuple[Chain, Chain]:
    forward, inverse = dct_ops([n])
    return Chain(forward).to(device), Chain(inverse).to(device)


# -- the DCT as functions ------------------------------------------------------------------------
def dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last dim (= ``scipy.fft.dct(x, norm="ortho")``)."""
    return _dct_chains(x.shape[-1], x.device)[0](x)


def idct(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``dct`` (orthonormal DCT-III, the transpose)."""
    return _dct_chains(x.shape[-1], x.device)[1](x)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT of the planes in the last two dims (= ``scipy.fft.dctn(…, norm="ortho")``)."""
    return dct(dct(x).transpose(-1, -2)).transpose(-1, -2)


def idct2(x: torch.Tensor) -> torch.Tensor:
    return idct(idct(x).transpose(-1, -2)).transpose(-1, -2)


def dct_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """The n×n orthonormal DCT-II matrix D (``dct(x) = D @ x``); row k is frequency k."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * k * (2 * j + 1) / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.to(dtype)


def smooth_split(n: int, primes=(2, 3, 5, 7)) -> list[int]:
    """n as a sum of few lengths with only small prime factors, largest first (fast FFT sizes)."""
    parts = []
    while n > 0:
        m = n
        while True:
            r = m
            for p in primes:
                while r % p == 0:
                    r //= p
            if r == 1:
                break
            m -= 1
        parts.append(m)
        n -= m
    return parts
