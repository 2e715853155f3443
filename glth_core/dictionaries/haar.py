"""Seeded randomness of the dictionary kinds: a seed per block of a dictionary (``block_seed``)
and Haar-distributed orthogonal matrices drawn from seeds (``haar``, ``haar_stack``)."""

from __future__ import annotations

import numpy as np
import torch


def block_seed(seed: int, index: int) -> int:
    """A seed for block ``index`` of a dictionary seeded ``seed``, uncorrelated with other
    (seed, index) pairs (seed 1 block 0 is not seed 0 block 1)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def haar_stack(n: int, seeds: list[int]) -> torch.Tensor:
    """One Haar orthogonal n×n matrix per seed, (len(seeds), n, n) float32.

    QR of a seeded float64 Gaussian, with Q·diag(sign(diag R)) so the distribution is Haar
    (plain QR is biased by the sign convention of the factorization).
    """
    gauss = torch.stack(
        [torch.randn(n, n, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
    )
    q, r = torch.linalg.qr(gauss)
    sign = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) >= 0, 1.0, -1.0).to(q.dtype)
    return (q * sign.unsqueeze(-2)).float()


def haar(n: int, seed: int) -> torch.Tensor:
    """A seeded Haar orthogonal n×n matrix (float32)."""
    return haar_stack(n, [seed])[0]
