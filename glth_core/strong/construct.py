"""A strong lottery ticket built, not searched: prune a random network until it computes a given target MLP.

Pensia et al. 2020 ("Optimal Lottery Tickets via SubsetSum"). Every bias-free target Linear W (d_out × d_in)
becomes two random layers:

  expand   d_in → d_in·m, weights u ~ D, dense in the random net; the mask keeps only u[j·m+k, j]
           (input j feeds its own m neurons), then ReLU;
  combine  d_in·m → d_out, weights v ~ D, masked;

followed by the target's own ReLU where it has one. Because σ(u x) = u σ(x) for u > 0 and |u| σ(-x) for
u < 0, and x = σ(x) - σ(-x), the pruned pair computes W x exactly when, for every target weight w_ij,
    Σ_{k ∈ S+} v_ijk |u_jk| = w_ij    over the neurons with u_jk > 0, and
    Σ_{k ∈ S-} v_ijk |u_jk| = -w_ij   over the neurons with u_jk < 0:
two subset-sums over the products v·|u|, solved exactly by ``subset_sum.solve``. Where a layer's input
is known to be non-negative (after a ReLU, or ``nonnegative_input=True`` for the network input) the
negative neurons never fire, so that half is left empty instead of solved. An expansion neuron with no
kept outgoing weight is pruned as well.

Signs (``signs``): "iid" is the network of the paper's experiment, m = n neurons per input with u ~ D, so
each half's subset-sum has only the Binomial(n, 1/2) neurons of its sign (about n/2) as candidates; with
n = 21 and epsilon = 0.01 a few percent of weights then miss epsilon. "paired" gives every subset-sum all
n candidates: each input gets n neurons with u = +|u|, plus n with u = -|u| where its negative half is
needed (m = 2n there, m = n after a ReLU); the magnitudes are still drawn from D.

The random values are never changed: ``pruned_net`` is ``random_net`` with every weight multiplied by its
0/1 mask, and runs with the ordinary forward.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn
from torch.nn.utils import skip_init

from glth_core.strong import subset_sum
from glth_core.strong.construction import Construction, LayerReport, apply_masks, effective_pair, expansion_diagonal

DISTRIBUTIONS = ("uniform", "hyperbolic")
SIGNS = ("iid", "paired")


def default_n(epsilon: float, c: float = 3.0) -> int:
    """Candidates per target weight as Pensia et al.'s code sets them: int(c · round(log2(1/epsilon)))
    (c = 3, epsilon = 0.01: round(6.64) = 7, so 21; the bound's c·log2(1/epsilon) = 19.9)."""
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon: {epsilon} must be in (0, 1)")
    return int(c * round(math.log2(1 / epsilon)))


def sample(shape: tuple[int, ...], distribution: str, generator: torch.Generator, low: float) -> torch.Tensor:
    """Random weights in [-1, 1]: Uniform, or hyperbolic (density ∝ 1/|x| on [low, 1], random sign)."""
    if distribution == "uniform":
        return torch.rand(shape, generator=generator) * 2 - 1
    if distribution == "hyperbolic":
        magnitude = torch.exp(torch.rand(shape, generator=generator, dtype=torch.float64) * math.log(low))
        sign = torch.randint(0, 2, shape, generator=generator) * 2 - 1
        return (sign * magnitude).float()
    raise ValueError(f"distribution: {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")


def _check_target(target: nn.Sequential) -> None:
    """Only bias-free Linear, ReLU and Flatten, with at least one Linear."""
    for i, module in enumerate(target):
        if isinstance(module, nn.Linear) and module.bias is not None:
            raise ValueError(f"target layer {i}: the construction needs bias-free Linear layers")
        if not isinstance(module, (nn.Linear, nn.ReLU, nn.Flatten)):
            raise ValueError(f"target layer {i}: {type(module).__name__} is not Linear, ReLU or Flatten")
    if not any(isinstance(m, nn.Linear) for m in target):
        raise ValueError("target has no Linear layer")


def _random_pair(d_in, d_out, n, sign_groups, distribution, generator, low) -> tuple[nn.Linear, nn.Linear]:
    """The expand and combine layers for one target Linear, holding fresh random weights.

    ``sign_groups``: None for i.i.d. signs (n neurons per input), else 1 (n positive u's per input) or 2
    (n positive then n negative); the magnitudes still come from ``distribution``.
    """
    width = n * (sign_groups or 1)
    # skip_init: no default init, so the caller's global RNG is left alone
    expand = skip_init(nn.Linear, d_in, d_in * width, bias=False)
    combine = skip_init(nn.Linear, d_in * width, d_out, bias=False)
    with torch.no_grad():
        expand.weight.copy_(sample((d_in * width, d_in), distribution, generator, low))
        combine.weight.copy_(sample((d_out, d_in * width), distribution, generator, low))
        if sign_groups:
            signs = torch.ones(width)
            signs[n:] = -1
            u = expansion_diagonal(expand.weight)
            u.copy_(u.abs() * signs[:, None])
    return expand, combine


def _solve_layer(w, u, v, negative_half, objective, epsilon, batch_elements):
    """Masks for one target layer: (expand mask [d_in·m, d_in], combine mask [d_out, d_in·m]); u is [d_in, m]."""
    d_out, d_in = w.shape
    m = u.shape[1]  # neurons per input
    products = (v.double().view(d_out, d_in, m) * u.double().abs()[None]).reshape(-1, m)
    targets = w.double().reshape(-1)
    positive = (u > 0)[None].expand(d_out, d_in, m).reshape(-1, m)
    tol = epsilon if objective == "fewest" else None

    def half(valid, sign):
        return subset_sum.solve(
            products, sign * targets, valid, objective=objective, tol=tol, batch_elements=batch_elements
        )

    keep_v = half(positive, 1.0)
    if negative_half:
        keep_v |= half(~positive, -1.0)
    keep_v = keep_v.view(d_out, d_in * m)
    used = keep_v.any(dim=0)  # expansion neurons with a kept outgoing weight
    keep_u = torch.zeros(d_in * m, d_in, dtype=torch.bool)
    expansion_diagonal(keep_u).copy_(used.view(d_in, m).T)
    return keep_u, keep_v


def construct(
    target: nn.Sequential,
    *,
    epsilon: float = 0.01,
    n: int | None = None,
    c: float = 3.0,
    distribution: str = "uniform",
    signs: str = "iid",
    objective: str = "min_error",
    nonnegative_input: bool = False,
    hyperbolic_low: float | None = None,
    seed: int = 0,
    batch_elements: int = subset_sum.DEFAULT_BATCH_ELEMENTS,
) -> Construction:
    """Sample a random network and the mask that makes it compute ``target`` to within ~``epsilon`` per weight.

    ``target``: nn.Sequential of bias-free Linear, ReLU (and Flatten). ``n`` candidates per weight (default
    ``default_n(epsilon, c)``). ``distribution``: "uniform" (U[-1, 1]) or "hyperbolic" (∝ 1/|x| on
    [``hyperbolic_low`` (default epsilon), 1]). ``signs``: "iid" (n neurons per input, shared by both
    halves) or "paired" (n neurons per half; see the module docstring). ``objective``: "min_error" (each
    subset-sum solved to its exact minimum error) or "fewest" (the fewest candidates within epsilon;
    min-error where none is).
    ``nonnegative_input``: the network input is never negative (e.g. raw pixels), so the first layer's
    negative half may be left empty too. Seeded by ``torch.Generator(seed)``; deterministic.
    """
    start = time.perf_counter()
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution: {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
    if signs not in SIGNS:
        raise ValueError(f"signs: {signs!r} is not one of {', '.join(SIGNS)}")
    n = default_n(epsilon, c) if n is None else int(n)
    if n < 1:
        raise ValueError(f"n: {n} must be at least 1")
    low = epsilon if hyperbolic_low is None else hyperbolic_low
    if not 0 < low < 1:
        raise ValueError(f"hyperbolic_low: {low} must be in (0, 1)")
    generator = torch.Generator().manual_seed(int(seed))
    _check_target(target)

    modules: list[nn.Module] = []
    masks: dict[str, torch.Tensor] = {}
    layers: list[LayerReport] = []
    errors: list[torch.Tensor] = []
    solve_seconds = 0.0
    for index, module in enumerate(target):
        if not isinstance(module, nn.Linear):  # ReLU / Flatten carry over as they are
            modules.append(copy.deepcopy(module))
            continue
        d_out, d_in = module.weight.shape
        after_relu = index > 0 and isinstance(target[index - 1], nn.ReLU)
        first = not any(isinstance(m, nn.Linear) for m in target[:index])
        negative_half = not (after_relu or (first and nonnegative_input))
        sign_groups = (2 if negative_half else 1) if signs == "paired" else None
        expand, combine = _random_pair(d_in, d_out, n, sign_groups, distribution, generator, low)
        t0 = time.perf_counter()
        keep_u, keep_v = _solve_layer(
            module.weight.detach().cpu(),
            expansion_diagonal(expand.weight.detach()).T,
            combine.weight.detach(),
            negative_half,
            objective,
            epsilon,
            batch_elements,
        )
        solve_seconds += time.perf_counter() - t0
        expand_name, combine_name = f"{len(modules)}.weight", f"{len(modules) + 2}.weight"
        masks[expand_name], masks[combine_name] = keep_u, keep_v
        modules += [expand, nn.ReLU(), combine]
        # multiplying by the 0/1 mask is exact, so these are the weights pruned_net will apply
        u = expansion_diagonal(expand.weight.detach()) * expansion_diagonal(keep_u)
        err = effective_pair(u.T, combine.weight.detach() * keep_v, negative_half).error(module.weight)
        errors.append(err.flatten())
        layers.append(
            LayerReport(
                index,
                expand_name,
                combine_name,
                d_in,
                d_out,
                keep_u.shape[0] // d_in,
                negative_half,
                kept_u=int(keep_u.sum()),
                kept_v=int(keep_v.sum()),
                max_weight_error=float(err.max()),
                mean_weight_error=float(err.mean()),
                over_epsilon=int((err > epsilon).sum()),
            )
        )

    random_net = nn.Sequential(*modules)
    all_err = torch.cat(errors)
    return Construction(
        random_net=random_net,
        masks=masks,
        pruned_net=apply_masks(random_net, masks),
        layers=layers,
        epsilon=float(epsilon),
        n=n,
        distribution=distribution,
        signs=signs,
        objective=objective,
        seed=int(seed),
        max_weight_error=float(all_err.max()),
        mean_weight_error=float(all_err.mean()),
        over_epsilon=int((all_err > epsilon).sum()),
        kept_weights=sum(r.kept_u + r.kept_v for r in layers),
        target_weights=sum(r.d_in * r.d_out for r in layers),
        random_weights=sum(p.numel() for p in random_net.parameters()),
        candidate_weights=sum(r.d_in * r.width * (1 + r.d_out) for r in layers),
        wall_seconds=time.perf_counter() - start,
        solve_seconds=solve_seconds,
    )
