"""Step 2(b) of IMP in a dictionary: drop the τ fraction of remaining elements (or groups)
whose coefficients matter least.

Because the dictionary is orthonormal, ‖w − P w‖² equals the sum of the dropped a_i², so the
objective is solved exactly by dropping the smallest |a_i| (or, for groups, the smallest
Σ a_i² over the group's remaining elements).

How many go (``rounding``): ``round`` drops round(τ·n) of the n remaining, ``ceil`` drops
⌈τ·n⌉ (open_lth's count), both at least one and never the last, ties to the lower index.
``open_lth`` is open_lth's ``sparse_global`` rule itself: with k = ⌈τ·n⌉, every remaining
element whose magnitude is at most the (k+1)-th smallest goes, so k + 1 go when magnitudes are
distinct (its threshold indexes the sorted magnitudes at k) and more on ties.

Layerwise pruning (``sparsify_segments``): the coefficient vector cut into segments, each
pruned at its own τ among its own elements, and the segments without a τ pooled at the global
τ. ``tensor_index`` says which scope tensor each coefficient belongs to, for the dictionaries
where that means something (a rotation of several tensors together has no per-tensor slices).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

ROUNDINGS = ("round", "ceil", "open_lth")
#: kinds whose coefficients each belong to one scope tensor (a block never spans two tensors)


class Segment(NamedTuple):
    """Coefficients ``[start, stop)`` pruned at ``tau`` among themselves, or (``tau`` None) pooled
    with every other τ-less segment at the trajectory's τ (as ``TauSegment`` of a composite)."""

    start: int
    stop: int
    tau: float | None = None


def count_to_remove(remaining: int, tau: float, rounding: str = "round") -> int:
    """round(τ × remaining) (``ceil``: ⌈τ × remaining⌉), at least one, never the last one."""
    if not 0.0 < tau < 1.0:
        raise ValueError(f"tau: must be in (0, 1), got {tau}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"prune_rounding: {rounding!r} is not one of {', '.join(ROUNDINGS)}")
    if remaining <= 1:
        return 0
    k = round(tau * remaining) if rounding == "round" else math.ceil(tau * remaining)
    return min(max(1, k), remaining - 1)


def _smallest(scores: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest scores among ``alive``; ties go to the lower index."""
    candidates = alive.nonzero().flatten()
    order = torch.sort(scores[candidates], stable=True).indices
    return candidates[order[:k]]


def drop_units(scores: torch.Tensor, alive: torch.Tensor, tau: float, rounding: str) -> torch.Tensor:
    """Boolean over units: the alive units this round drops."""
    n = int(alive.sum())
    drop = torch.zeros_like(alive)
    if rounding == "open_lth":
        if n <= 1:
            return drop
        k = min(math.ceil(tau * n), n - 1)
        threshold = torch.sort(scores[alive]).values[k]
        drop = alive & (scores <= threshold)
        if bool(drop[alive].all()):  # every survivor tied: keep the last one (open_lth would keep none)
            drop[alive.nonzero().flatten()[-1]] = False
        return drop
    drop[_smallest(scores, alive, count_to_remove(n, tau, rounding))] = True
    return drop


def sparsify(
    coeffs: torch.Tensor, mask: torch.Tensor, tau: float, groups: torch.Tensor | None = None, rounding: str = "round"
) -> torch.Tensor:
    """Return the next mask: ``mask`` minus the τ fraction of its least important elements.

    Without groups, elements are ranked by |a_i|; with ``groups`` (element → group id), whole
    groups are ranked by Σ a_i² over their kept elements and τ counts groups.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"prune_rounding: {rounding!r} is not one of {', '.join(ROUNDINGS)}")
    mask = mask.to(torch.bool)
    scores = coeffs.detach().to(torch.float64)
    if groups is None:
        return mask & ~drop_units(scores.abs(), mask, tau, rounding)
    num_groups = int(groups.max()) + 1
    group_score = torch.zeros(num_groups, dtype=torch.float64, device=coeffs.device)
    group_score.index_add_(0, groups, scores.square() * mask)
    group_alive = torch.zeros(num_groups, dtype=torch.bool, device=coeffs.device)
    group_alive[groups[mask]] = True
    return mask & ~drop_units(group_score, group_alive, tau, rounding)[groups]


def sparsify_segments(
    coeffs: torch.Tensor, mask: torch.Tensor, tau: float, groups: torch.Tensor | None, segments, rounding: str = "round"
) -> torch.Tensor:
    """``sparsify`` per segment: each segment with a τ among its own elements (or groups), the
    τ-less ones together in one ordering at ``tau``. No segments: plain ``sparsify``."""
    if not segments:
        return sparsify(coeffs, mask, tau, groups, rounding)
    new = mask.to(torch.bool).clone()
    pooled = [s for s in segments if s.tau is None]
    jobs = ([(pooled, tau)] if pooled else []) + [([s], s.tau) for s in segments if s.tau is not None]
    for segs, rate in jobs:
        idx = torch.cat([torch.arange(s.start, s.stop, device=coeffs.device) for s in segs])
        sub_groups = None if groups is None else groups.to(coeffs.device)[idx]
        new[idx] = sparsify(coeffs[idx], new[idx], rate, sub_groups, rounding)
    return new


def tensor_index(dictionary, field: str) -> torch.Tensor:
    """LongTensor (size,): the scope tensor (index into ``dictionary.scope``) each coefficient
    belongs to, or a one-line ValueError naming ``field`` where coefficients mix tensors (a
    rotation of several tensors together) or a group spans two tensors."""
    for d, _, _ in dictionary.part_ranges():
        if d.mixes_tensors(d.scope):
            raise ValueError(
                f"{field}: per-tensor selection needs coefficients that each belong to one tensor; "
                f"dictionary kind {d.kind} mixes its {len(d.scope)} scope tensors (a slice of a rotated "
                "vector is no tensor's); use global"
            )
    index = torch.empty(dictionary.size, dtype=torch.long)
    for i, e in enumerate(dictionary.scope):
        index[e.offset : e.offset + e.numel] = i
    groups = dictionary.groups
    if groups is not None:
        g = groups.cpu()
        n = int(g.max()) + 1
        high = torch.full((n,), -1).scatter_reduce(0, g, index, reduce="amax", include_self=False)
        low = torch.full((n,), -1).scatter_reduce(0, g, index, reduce="amin", include_self=False)
        if not torch.equal(high, low):
            raise ValueError(f"{field}: per-tensor selection needs every group inside one scope tensor; use global")
    return index


def sparsify_dictionary(
    coeffs: torch.Tensor, mask: torch.Tensor, tau: float, dictionary, rounding: str = "round"
) -> torch.Tensor:
    """The next mask for ``dictionary``'s coefficients: ``sparsify`` with its groups, except that
    a dictionary with ``tau_segments`` (a composite whose parts carry their own τ) prunes each
    segment with a τ of its own among its own elements/groups, and all τ-less segments together,
    in one ordering, at ``tau`` (``sparsify_segments``)."""
    return sparsify_segments(coeffs, mask, tau, dictionary.groups, dictionary.tau_segments, rounding)
