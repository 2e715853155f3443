"""Exact subset-sum for many small independent instances at once, by meet-in-the-middle.

One instance: candidate values p_1..p_m (m ≲ 24) and a target t; find the subset S whose sum is
closest to t (``objective="min_error"``), or the subset with the fewest elements among those within
``tol`` of t (``objective="fewest"``, falling back to the closest subset when none is that close).

Meet-in-the-middle: split the candidates into a left half (a = m // 2) and a right half (b = m - a),
enumerate the 2^a and 2^b subset sums of each half as [batch, 2^h] tensors (one matmul with the bit
patterns), sort the right sums, and for every left sum s binary-search for t - s. The closest right
sum is one of the two neighbours of the insertion point, so the 2^a·2^b pairs are never materialised.
For "fewest", the right sums within [t - s - tol, t - s + tol] form a contiguous run of the sorted
order, and a sparse table answers "fewest elements in this run" in O(1) per left sum.

A subset is a bitmask over candidate positions: bit i of a half's enumeration index says whether that
half's i-th candidate is in. Sums are float64. Instances with different candidate counts (``valid``
masks) are grouped by count and solved in batches of one count; the work is batched tensor/array
operations except the binary search of long rows, which runs row by row on sorted queries (numpy's
searchsorted resumes from the previous hit, ~2x faster than a batched torch.searchsorted). CPU only:
inputs on another device are solved on CPU and the masks returned there.

Cost on one CPU thread (m = 21, the paper's n): ~50 µs per instance; m ≈ 10: ~3 µs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

OBJECTIVES = ("min_error", "fewest")

# From this many left sums per row on, searching row by row (numpy, sorted queries) beats torch's batched search.
LOOP_SEARCH_FROM = 128

# How many [batch, 2^h] float64 entries one batch may hold per working tensor (~32 MB each).
DEFAULT_BATCH_ELEMENTS = 1 << 22


def subset_sums(values: torch.Tensor) -> torch.Tensor:
    """All 2^h subset sums of each row of ``values`` [B, h]; column index = bitmask of the subset."""
    return values @ _bits(values.shape[1]).to(values.dtype).T


def _sort_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted rows, permutation); numpy's SIMD argsort is several times faster than torch.sort on CPU."""
    perm = torch.from_numpy(np.argsort(x.numpy(), axis=1))
    return x.gather(1, perm), perm


def _bits(h: int) -> torch.Tensor:
    """[2^h, h] bool: row r is the bitmask r."""
    return (torch.arange(1 << h)[:, None] >> torch.arange(h)) & 1 == 1


def _search_rows(sorted_rows: np.ndarray, sorted_queries: np.ndarray, side: str = "left") -> np.ndarray:
    """Row-wise searchsorted of sorted queries [B, Q] into sorted rows [B, L]."""
    if sorted_queries.shape[1] < LOOP_SEARCH_FROM:  # short rows: one batched call beats a Python loop
        return torch.searchsorted(torch.from_numpy(sorted_rows), torch.from_numpy(sorted_queries), side=side).numpy()
    out = np.empty(sorted_queries.shape, dtype=np.intp)
    for row in range(len(out)):  # sorted queries let numpy resume each search where the last one ended
        out[row] = np.searchsorted(sorted_rows[row], sorted_queries[row], side=side)
    return out


def _closest_pairs(sa: torch.Tensor, sb: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(left index, right index) per row of the pair of half-sums whose total is closest to the target.

    The right sum closest to q = t - s is a neighbour of q's insertion point in the sorted right sums;
    ±inf sentinels at both ends spare the bounds checks. The queries are sorted too (for the search), so
    the winning pair's indices are recovered by value at the end.
    """
    sa, sb, targets = sa.numpy(), sb.numpy(), targets.numpy()
    batch = len(sa)
    query = targets[:, None] - sa
    sorted_q = np.sort(query, axis=1)
    padded = np.empty((batch, sb.shape[1] + 2))
    padded[:, 0], padded[:, -1] = -np.inf, np.inf
    padded[:, 1:-1] = np.sort(sb, axis=1)
    above = torch.from_numpy(_search_rows(padded, sorted_q))  # padded[above - 1] < q <= padded[above]
    low = torch.from_numpy(padded).gather(1, above - 1).numpy()
    high = torch.from_numpy(padded).gather(1, above).numpy()
    best = np.minimum(sorted_q - low, high - sorted_q).argmin(axis=1)
    rows = np.arange(batch)
    q, low, high = sorted_q[rows, best], low[rows, best], high[rows, best]
    partner = np.where(high - q < q - low, high, low)
    best_a = (query == q[:, None]).argmax(axis=1)
    best_b = (sb == partner[:, None]).argmax(axis=1)
    return torch.from_numpy(best_a), torch.from_numpy(best_b)


def _range_min_table(keys: torch.Tensor, longest: int) -> torch.Tensor:
    """Sparse table [levels, B, L] for windows up to ``longest``: level k, column i holds min(keys[:, i : i + 2^k])
    (entries whose window runs past the end are never read)."""
    length = keys.shape[1]
    levels = 1 + int(math.log2(max(1, min(longest, length))))
    table = torch.empty((levels, *keys.shape), dtype=keys.dtype)
    table[0] = keys
    for k in range(1, levels):
        span = 1 << (k - 1)
        torch.minimum(table[k - 1, :, :-span], table[k - 1, :, span:], out=table[k, :, : length - span])
        table[k, :, length - span :] = table[k - 1, :, length - span :]
    return table


def _fewest_pairs(sa, sb, targets, tol, pop_a, pop_b):
    """(left index, right index) per row of the pair with the fewest elements whose total is within ``tol``.

    For each left sum, the right sums within tol of t - s are a run [lo, hi) of the sorted right sums; a
    sparse table of (size, position) keys gives the smallest right subset in that run. Rows with no pair
    within ``tol`` get the closest pair instead.
    """
    sorted_b, perm_b = _sort_rows(sb)
    batch, n_b = sorted_b.shape
    order_a = torch.from_numpy(np.argsort((targets[:, None] - sa).numpy(), axis=1))
    sorted_q = (targets[:, None] - sa).gather(1, order_a).numpy()
    lo = torch.from_numpy(_search_rows(sorted_b.numpy(), sorted_q - tol, "left"))
    hi = torch.from_numpy(_search_rows(sorted_b.numpy(), sorted_q + tol, "right"))
    length = hi - lo
    feasible = length > 0
    # key = (size of the right subset, sorted position): its min gives both the size and the partner
    keys = (pop_b[perm_b] * n_b + torch.arange(n_b)).int()
    table = _range_min_table(keys, int(length.max())).view(-1)
    level = torch.log2(length.clamp(min=1).double()).floor().long()
    base = (level * batch + torch.arange(batch)[:, None]) * n_b
    best = torch.minimum(
        table.take(base + lo.clamp(max=n_b - 1)), table.take(base + (hi - (1 << level)).clamp(min=0))
    ).long()
    size = torch.where(feasible, pop_a[order_a] + best // n_b, 1 << 30)
    pick = size.argmin(dim=1, keepdim=True)
    best_a = order_a.gather(1, pick).squeeze(1)
    best_b = perm_b.gather(1, (best % n_b).gather(1, pick)).squeeze(1)
    none = (~feasible.any(dim=1)).nonzero().squeeze(1)
    if len(none):
        best_a[none], best_b[none] = _closest_pairs(sa[none], sb[none], targets[none])
    return best_a, best_b


def _solve_fixed(values: torch.Tensor, targets: torch.Tensor, objective: str, tol: float) -> torch.Tensor:
    """Masks [B, m] for B instances that all have m candidates."""
    batch, m = values.shape
    if m == 0:
        return torch.zeros(batch, 0, dtype=torch.bool)
    a = m // 2
    sa, sb = subset_sums(values[:, :a]), subset_sums(values[:, a:])
    bits_a, bits_b = _bits(a), _bits(m - a)
    if objective == "min_error":
        best_a, best_b = _closest_pairs(sa, sb, targets)
    else:
        best_a, best_b = _fewest_pairs(sa, sb, targets, tol, bits_a.sum(1), bits_b.sum(1))
    return torch.cat([bits_a[best_a], bits_b[best_b]], dim=1)


def _check(values, targets, valid, objective, tol):
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if objective == "fewest" and not (tol is not None and tol >= 0):
        raise ValueError("objective 'fewest' needs tol >= 0")
    if values.dim() != 2 or targets.shape != values.shape[:1]:
        raise ValueError(f"values must be [N, m] and targets [N]; got {tuple(values.shape)} and {tuple(targets.shape)}")
    if valid is not None and valid.shape != values.shape:
        raise ValueError(f"valid must match values {tuple(values.shape)}; got {tuple(valid.shape)}")


def solve(
    values: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    objective: str = "min_error",
    tol: float | None = None,
    batch_elements: int = DEFAULT_BATCH_ELEMENTS,
) -> torch.Tensor:
    """Exact subset-sum for each row: a bool mask [N, m] choosing among the ``valid`` candidates.

    ``values`` [N, m] are the candidates (cast to float64), ``targets`` [N], ``valid`` [N, m] bool says which
    candidates row n may use (all, if None). ``objective="min_error"`` minimises |Σ_S p - t|;
    ``"fewest"`` minimises |S| subject to |Σ_S p - t| <= tol (min-error where no subset is within tol).
    Work is batched so that a batch holds about ``batch_elements`` enumerated sums per half. Runs on CPU
    (numpy sorts and searches); the mask comes back on the device of ``values``.
    """
    _check(values, targets, valid, objective, tol)
    device = values.device
    values, targets = values.detach().to("cpu", torch.float64), targets.detach().to("cpu", torch.float64)
    n_rows, m = values.shape
    mask = torch.zeros(n_rows, m, dtype=torch.bool)
    valid = torch.ones_like(mask) if valid is None else valid.to("cpu")
    counts = valid.sum(dim=1)
    for count in torch.unique(counts).tolist():
        if count == 0:
            continue
        rows = (counts == count).nonzero().squeeze(1)
        # stable sort puts each row's valid columns first, in their original order
        cols = (~valid[rows]).to(torch.uint8).argsort(dim=1, stable=True)[:, :count]
        group_values = values[rows].gather(1, cols)
        sums_per_row = 1 << (count - count // 2)
        if objective == "fewest":
            sums_per_row *= 4  # the sparse table's levels (windows within tol hold few sums)
        step = max(1, batch_elements // sums_per_row)
        for start in range(0, len(rows), step):
            part = slice(start, start + step)
            chosen = _solve_fixed(group_values[part], targets[rows[part]], objective, tol)
            mask[rows[part, None], cols[part]] = chosen
    return mask.to(device)


def brute_force(
    values: torch.Tensor,
    targets: torch.Tensor,
    *,
    objective: str = "min_error",
    tol: float | None = None,
) -> torch.Tensor:
    """Reference for tiny m: enumerate all 2^m subsets of each row. Same contract as ``solve`` (no ``valid``)."""
    _check(values, targets, None, objective, tol)
    values, targets = values.detach().cpu().double(), targets.detach().cpu().double()
    bits = _bits(values.shape[1])
    err = (subset_sums(values) - targets[:, None]).abs()
    if objective == "min_error":
        return bits[err.argmin(dim=1)]
    feasible = err <= tol
    size = torch.where(feasible, bits.sum(1)[None, :], values.shape[1] + 1)
    # fewest among the feasible subsets; plain min error where none is feasible
    choice = torch.where(feasible.any(dim=1), size.argmin(dim=1), err.argmin(dim=1))
    return bits[choice]


def achieved(values: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """|Σ_S p - t| per row for the subsets in ``mask``, in float64."""
    return ((values.double() * mask).sum(dim=1) - targets.double()).abs()
