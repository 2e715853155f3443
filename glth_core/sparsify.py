"""Step 2(b) of IMP in a dictionary: drop the τ fraction of remaining elements (or groups)
whose coefficients matter least.

Because the dictionary is orthonormal, ‖w − P w‖² equals the sum of the dropped a_i², so the
objective is solved exactly by dropping the smallest |a_i| (or, for groups, the smallest
Σ a_i² over the group's remaining elements).
"""

from __future__ import annotations

import torch


def count_to_remove(remaining: int, tau: float) -> int:
    """round(τ × remaining), at least one, never the last one."""
    if not 0.0 < tau < 1.0:
        raise ValueError(f"tau: must be in (0, 1), got {tau}")
    if remaining <= 1:
        return 0
    return min(max(1, round(tau * remaining)), remaining - 1)


def _smallest(scores: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest scores among ``alive``; ties go to the lower index."""
    candidates = alive.nonzero().flatten()
    order = torch.sort(scores[candidates], stable=True).indices
    return candidates[order[:k]]


def sparsify(coeffs: torch.Tensor, mask: torch.Tensor, tau: float, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Return the next mask: ``mask`` minus the τ fraction of its least important elements.

    Without groups, elements are ranked by |a_i|; with ``groups`` (element → group id), whole
    groups are ranked by Σ a_i² over their kept elements and τ counts groups.
    """
    mask = mask.to(torch.bool)
    scores = coeffs.detach().to(torch.float64)
    if groups is None:
        k = count_to_remove(int(mask.sum()), tau)
        new = mask.clone()
        new[_smallest(scores.abs(), mask, k)] = False
        return new
    num_groups = int(groups.max()) + 1
    group_score = torch.zeros(num_groups, dtype=torch.float64, device=coeffs.device)
    group_score.index_add_(0, groups, scores.square() * mask)
    group_alive = torch.zeros(num_groups, dtype=torch.bool, device=coeffs.device)
    group_alive[groups[mask]] = True
    k = count_to_remove(int(group_alive.sum()), tau)
    drop = torch.zeros(num_groups, dtype=torch.bool, device=coeffs.device)
    drop[_smallest(group_score, group_alive, k)] = True
    return mask & ~drop[groups]
