"""A random rotation of the whole scope (the paper's Fig. 2 left).

``method: fast`` (default) is a seeded structured rotation in O(d log d) time and O(d) memory;
``method: haar`` is a dense Haar-distributed matrix, exact in distribution but d² memory and d³ to
build, so it is refused above ``HAAR_MAX`` elements.

``version`` names the fast algorithm, so a stored trial always means the basis it was trained in:

* 1 (what a spec without ``version`` means, as every spec stored before versions existed):
  ``transforms.FastRotation``, three stages of (random signs, random permutation, DCT) with the
  DCT through a real FFT over a split into 7-smooth lengths.
* 2: ``FastRotation2``, three stages of (random signs and permutation fused in one gather, a
  unitary 2-D FFT of the real coordinates read as complex pairs over 5-smooth blocks, a dense
  Haar matrix over the last ≤ 256 coordinates). No reordering, twiddles or unpacking: about 4×
  cheaper a step than version 1 on one CPU thread (docs/performance.md).

Both mix every coordinate into every output (tests/test_random_fast.py). ``method: haar`` has
no versions (only ``version: 1`` is accepted with it).
"""

from __future__ import annotations

import math

import torch

from glth_core.dictionaries.blocks import BlockDictionary, Segment
from glth_core.dictionaries.dct import Gather
from glth_core.dictionaries.haar import haar
from glth_core.dictionaries.options import SCOPE, SEED, DictionarySpecError, one_of
from glth_core.dictionaries.transforms import FastRotation, MatrixRows, Orthogonal

HAAR_MAX = 40_000
#: the fast algorithms by version; a spec without ``version`` means 1
VERSIONS = (1, 2)
#: what new sweeps should record (``with_current_version``)
CURRENT_VERSION = 2


class RandomRotation(BlockDictionary):
    kind = "random"
    variant_attr = "method"
    FIELDS = {
        "method": one_of("fast", "haar", default="fast"),
        "seed": SEED,
        "scope": SCOPE,
        "version": one_of(*VERSIONS, default=1),
    }
    LABEL = "random-{method}"

    @classmethod
    def draws_seed(cls, opts: dict) -> bool:
        return True

    @classmethod
    def check(cls, opts: dict, model):
        scope = super().check(opts, model)
        size = sum(e.numel for e in scope)
        if opts["method"] == "haar" and opts["version"] != 1:
            raise DictionarySpecError(
                f"dictionary.version: {opts['version']} is for method: fast; method: haar has only 1"
            )
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
            op = (FastRotation if opts["version"] == 1 else FastRotation2)(size, [opts["seed"]])
        d = cls(scope, [Segment(0, 1, size, op)])
        d.method, d.seed, d.version = opts["method"], opts["seed"], opts["version"]
        return d


def with_current_version(spec: dict) -> dict:
    """``spec`` with ``version: CURRENT_VERSION`` recorded in it (and in a composite's parts) where it
    is a ``random``/``fast`` spec that gives none: for a sweep being written now, so its trials say
    which algorithm they mean. Never for a stored config: there a missing version means 1."""
    if not isinstance(spec, dict):
        return spec
    if spec.get("kind") == "composite" and isinstance(spec.get("parts"), (list, tuple)):
        return {**spec, "parts": [with_current_version(p) for p in spec["parts"]]}
    if spec.get("kind") == "random" and spec.get("method", "fast") == "fast" and "version" not in spec:
        return {**spec, "version": CURRENT_VERSION}
    return spec


def without_default_version(spec: dict) -> dict:
    """``spec`` with ``version: 1`` left out (and in a composite's parts): version 1 is what a spec
    without a version means, so both must be one trial id (the identity hashes the spec as given).
    For ``dictionaries.seeded``, which every trial's dictionary spec goes through."""
    if not isinstance(spec, dict):
        return spec
    if spec.get("kind") == "composite" and isinstance(spec.get("parts"), (list, tuple)):
        return {**spec, "parts": [without_default_version(p) for p in spec["parts"]]}
    if spec.get("kind") == "random" and type(spec.get("version")) is int and spec["version"] == 1:
        return {k: v for k, v in spec.items() if k != "version"}
    return spec


# -- version 2 ------------------------------------------------------------------------------------
#: the coordinates after the FFT blocks go through a dense Haar matrix of 64…256 (≤ 256² a stage:
#: a few µs); at least 64 so that the permutations cannot all miss it
TAIL_MIN, TAIL_MAX = 64, 256
STAGES = 3


def smooth5_at_most(m: int) -> int:
    """The largest 2^i·3^j·5^k ≤ m (m ≥ 1)."""
    best, p2 = 1, 1
    while p2 <= m:
        p3 = p2
        while p3 <= m:
            p5 = p3
            while p5 <= m:
                best, p5 = max(best, p5), p5 * 5
            p3 *= 3
        p2 *= 2
    return best


def fft_layout(width: int) -> tuple[list[tuple[int, int]], int]:
    """(blocks, tail): blocks of 2·a·b real coordinates, each an a×b complex plane (a·b 5-smooth,
    a the largest divisor ≤ √(a·b)), largest first, then a dense tail of ``TAIL_MIN``…``TAIL_MAX``
    coordinates (all of them when ``width`` ≤ ``TAIL_MAX``)."""
    blocks, rest = [], width
    while rest > TAIL_MAX:
        n = smooth5_at_most((rest - TAIL_MIN) // 2)
        a = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
        blocks.append((a, n // a))
        rest -= 2 * n
    return blocks, rest


def _haar64(n: int, seeds: list[int]) -> torch.Tensor:
    """``haar.haar_stack`` in float64, so the rotation is orthogonal to float64 precision."""
    gauss = torch.stack(
        [torch.randn(n, n, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
    )
    q, r = torch.linalg.qr(gauss)
    return q * torch.where(torch.diagonal(r, dim1=-2, dim2=-1) >= 0, 1.0, -1.0).to(q.dtype).unsqueeze(-2)


class FastRotation2(Orthogonal):
    """Version 2 of the fast random rotation: one per row, seeded, O(w log w) time, O(w) memory.

    Each of three stages is a random permutation (one gather), then, over ``fft_layout(width)``:
    each block's coordinates, read as complex pairs on an a×b plane, get random phases and go
    through the orthonormal 2-D FFT (unitary on ℂ^{ab}, so orthogonal on ℝ^{2ab}); the tail goes
    through a seeded dense Haar matrix. The phases make every entry of a block's real 2ab×2ab
    matrix nonzero (the plain DFT has exact zeros: the real part of its DC input reaches no
    imaginary part), so a block with any nonzero input has every output nonzero; the permutations
    spread each block over all blocks, so three stages mix every coordinate into every output.
    Its definition (stages, layout, the draws from the seed, in order) is what ``version: 2``
    means and must not change.
    """

    def __init__(self, width: int, seeds: list[int]):
        self.width, (self.blocks, self.tail) = width, fft_layout(width)
        planes = sum(a * b for a, b in self.blocks)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.gathers, self.exact = [], {"phase": [], "tail": []}  # float64/complex128 masters
        for _ in range(STAGES):
            self.gathers.append(Gather(torch.stack([torch.randperm(width, generator=g) for g in gens])))
            angle = torch.stack([torch.rand(planes, generator=g, dtype=torch.float64) for g in gens]) * (2 * math.pi)
            self.exact["phase"].append(torch.polar(torch.ones_like(angle), angle))  # (rows, planes)
            if self.tail:
                tail_seeds = [int(torch.randint(0, 2**62, (1,), generator=g)) for g in gens]
                self.exact["tail"].append(_haar64(self.tail, tail_seeds))  # (rows, tail, tail)
        self.inverses = [g.inverse() for g in self.gathers]
        self._cast: dict = {}

    def _get(self, what: str, k: int, dtype) -> torch.Tensor:
        """Stage ``k``'s phases or tail matrix in ``dtype`` (the master cast once, then kept)."""
        t = self.exact[what][k]
        if t.dtype != dtype:
            key = (what, k, dtype)
            if key not in self._cast:
                self._cast[key] = t.to(dtype)
            t = self._cast[key]
        return t

    def to(self, device):
        self._cast = {}
        return super().to(device)

    def _mix(self, y: torch.Tensor, k: int, inverse: bool) -> torch.Tensor:
        """Stage ``k``'s block transforms (or their inverses) on ``y`` (…, rows, width)."""
        parts, offset, plane = [], 0, 0
        complex_dtype = torch.complex128 if y.dtype == torch.float64 else torch.complex64
        phases = self._get("phase", k, complex_dtype)
        for a, b in self.blocks:
            block = y[..., offset : offset + 2 * a * b]
            if not block.is_contiguous():
                block = block.contiguous()
            z = torch.view_as_complex(block.reshape(*block.shape[:-1], a, b, 2))
            phase = phases[:, plane : plane + a * b].unflatten(-1, (a, b))
            if inverse:
                z = torch.fft.ifft2(z, norm="ortho") * phase.conj()
            else:
                z = torch.fft.fft2(z * phase, norm="ortho")
            parts.append(torch.view_as_real(z).flatten(-3))
            offset, plane = offset + 2 * a * b, plane + a * b
        if self.tail:
            q, t = self._get("tail", k, y.dtype), y[..., offset:]
            parts.append((t.unsqueeze(-2) @ q).squeeze(-2) if inverse else (q @ t.unsqueeze(-1)).squeeze(-1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def forward(self, a):
        for k, gather in enumerate(self.gathers):
            a = self._mix(gather(a), k, inverse=False)
        return a

    def inverse(self, w):
        for k in reversed(range(STAGES)):
            w = self.inverses[k](self._mix(w, k, inverse=True))
        return w
