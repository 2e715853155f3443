"""Mask overlap across seeds: at each round of a curve, the Jaccard index |A ∩ B| / |A ∪ B| of the
kept elements of every pair of seeds (mean, min, max over pairs), from the trials' tickets in the
sweep directory, next to the chance level of two independent random masks of the same density p,
E[J] ≈ p / (2 − p). For grouped dictionaries (bottlenecks) the same on the kept groups (columns of
U: input coordinates for identity, DCT frequencies for dct). Overlap is only defined when every
seed pruned the *same* dictionary: a dictionary drawn from the trial's seed (random rotations,
random bottlenecks) gives NaN. ``orchestrator.analysis`` joins these columns to the summary.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import sys

import numpy as np
import pandas as pd
import torch

from glth_core import dictionaries
from glth_core.dictionaries import varies_with_seed
from orchestrator.layout import SweepDir
from orchestrator.results import CURVE, curve_rows

OVERLAP = [
    "jaccard_mean",
    "jaccard_min",
    "jaccard_max",
    "jaccard_chance",
    "group_jaccard_mean",
    "group_jaccard_min",
    "group_jaccard_max",
    "group_jaccard_chance",
    "group_density",
]


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks (1.0 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def pack(masks) -> np.ndarray:
    """Equal-shape boolean masks as a seeds × ⌈elements / 8⌉ uint8 matrix, 8 elements a byte
    (``np.packbits``; the last byte's spare bits 0): what the overlap of thousands of seeds holds."""
    return np.stack([np.packbits(m.reshape(-1).cpu().numpy()) for m in masks])


def pairwise(masks) -> tuple[float, float, float]:
    """(mean, min, max) Jaccard over all pairs; NaNs with fewer than two masks. ``masks``: boolean
    tensors, or their ``pack``.

    Every pair's |a ∩ b| comes from one product of the seeds × elements 0/1 matrix with itself
    (``intersections``); |a ∪ b| = |a| + |b| − |a ∩ b|. Each pair's Jaccard is then the same
    division ``jaccard`` does, and the mean the same sum over pairs in ``itertools.combinations``
    order, so the numbers equal the pair-by-pair ones exactly (a mean of per-pair ratios needs
    every pair: per-element counts give only Σ|a ∩ b|, not the mean ratio)."""
    n = len(masks)
    if n < 2:
        return (math.nan,) * 3
    inter = intersections(masks)
    sizes = np.diagonal(inter)
    rows = []
    for i in range(n - 1):  # the pairs (i, j > i), row by row: the combinations order
        both = inter[i, i + 1 :]
        union = sizes[i] + sizes[i + 1 :] - both
        rows.append(np.divide(both, union, out=np.ones(len(both)), where=union > 0))
    total = sum(itertools.chain.from_iterable(r.tolist() for r in rows))  # Python's sum, as pair by pair
    return total / (n * (n - 1) // 2), min(float(r.min()) for r in rows), max(float(r.max()) for r in rows)


#: elements of the 0/1 block multiplied at once (float32: 16 MB), so memory stays bounded at any size
_BLOCK = 1 << 22


def intersections(masks) -> np.ndarray:
    """seeds × seeds |a ∩ b| (sizes on the diagonal) of equal-shape boolean masks (or their
    ``pack``), as int64: the 0/1 matrix times its transpose in float32 over blocks of at most
    ``_BLOCK`` / seeds elements, unpacked a block at a time. Exact: every partial sum is an integer
    no larger than the block's width (< 2²⁴), which float32 holds exactly whatever order the product
    adds in; the spare bits of the last byte are 0 and add nothing."""
    bits = masks if isinstance(masks, np.ndarray) else pack(masks)
    n, width = bits.shape
    out = torch.zeros(n, n, dtype=torch.int64)
    step = max(1, _BLOCK // (8 * n))  # bytes: 8 elements each
    for start in range(0, width, step):
        block = torch.from_numpy(np.unpackbits(bits[:, start : start + step], axis=1)).to(torch.float32)
        out += (block @ block.T).to(torch.int64)
    return out.numpy()


def chance(density: float) -> float:
    """Expected Jaccard of two independent uniformly random masks of density p: p / (2 − p)."""
    return density / (2.0 - density) if density > 0 else math.nan


def basis_key(config: dict) -> str:
    """Equal across trials exactly when they prune the same dictionary of the same model."""
    spec = dict(config.get("dictionary") or {})
    if not varies_with_seed(spec):
        spec.pop("seed", None)
    return json.dumps([config.get("dataset"), config.get("model"), spec], sort_keys=True, default=str)


@functools.lru_cache(maxsize=32)
def _layer_shape(model: str, dataset: str, layer: str) -> tuple[int, int]:
    from glth_core import data, models

    source = data.DATASETS[dataset]
    net = models.build(model, source.input_shape, source.num_classes)
    d_out, d_in = net.get_submodule(layer).weight.shape
    return int(d_out), int(d_in)


def group_mask(config: dict, mask: torch.Tensor) -> torch.Tensor | None:
    """Kept groups of a bottleneck ticket (columns of U), or None for ungrouped dictionaries."""
    spec = config.get("dictionary") or {}
    layer = dictionaries.kind_of(spec).input_columns_layer(spec) if spec else None
    if layer is None:
        return None
    d_out, d_in = _layer_shape(config["model"], config["dataset"], layer)
    return mask.view(d_out, d_in).any(dim=0)


def overlap(rows: pd.DataFrame, sweep_dir: SweepDir) -> pd.DataFrame:
    """Mask overlap across seeds per curve × round (see the module doc); the tickets from
    ``sweep_dir``, read one round at a time and only their masks kept (packed 8 to a byte): a
    curve of thousands of seeds holds one round's masks, not every round's tickets."""
    ok = curve_rows(rows)
    out, without = [], []
    saved = None  # the trials with tickets, listed once when a curve needs them
    for key, curve in ok.groupby(CURVE, sort=True, dropna=False):
        trials = curve.drop_duplicates("trial_id")
        configs = {r.trial_id: json.loads(r.config) for r in trials.itertuples()}
        same_basis = len({basis_key(c) for c in configs.values()}) == 1
        rounds_of: dict[str, set[int]] = {}  # trial → the rounds it has a ticket of
        if same_basis and len(configs) > 1:
            saved = sweep_dir.ticket_trials() if saved is None else saved
            for tid in configs:
                rounds_of[tid] = sweep_dir.ticket_rounds(tid) if tid in saved else set()
                if not rounds_of[tid]:
                    without.append(tid)
        for rnd in sorted(curve["round"].unique()):
            holders = [tid for tid, have in rounds_of.items() if int(rnd) in have]
            row = dict(zip(CURVE, key), round=int(rnd), overlap_seeds=len(holders))
            row.update(dict.fromkeys(OVERLAP, math.nan))
            if len(holders) > 1:
                config = next(iter(configs.values()))
                packed, groups, density = [], [], None
                for tid in holders:
                    mask = sweep_dir.ticket(tid, int(rnd)).mask.cpu()
                    density = float(mask.float().mean()) if density is None else density
                    packed.append(np.packbits(mask.reshape(-1).numpy()))
                    groups.append(group_mask(config, mask))
                row["jaccard_mean"], row["jaccard_min"], row["jaccard_max"] = pairwise(np.stack(packed))
                row["jaccard_chance"] = chance(density)
                if groups[0] is not None:
                    row["group_jaccard_mean"], row["group_jaccard_min"], row["group_jaccard_max"] = pairwise(groups)
                    row["group_density"] = float(groups[0].float().mean())
                    row["group_jaccard_chance"] = chance(row["group_density"])
            out.append(row)
    if without:
        _say_without(without)
    return pd.DataFrame(out, columns=[*CURVE, "round", "overlap_seeds", *OVERLAP]).astype({"tau": "float64"})


def _say_without(trials: list[str], shown: int = 5) -> None:
    """One line for the trials left out of the mask overlap (a sweep of thousands: not a line each)."""
    if len(trials) == 1:
        print(f"[glth] analysis: trial {trials[0]} has no tickets; left out of the mask overlap", file=sys.stderr)
        return
    names = ", ".join(trials[:shown]) + (f" and {len(trials) - shown} more" if len(trials) > shown else "")
    print(
        f"[glth] analysis: {len(trials)} trials have no tickets ({names}); left out of the mask overlap",
        file=sys.stderr,
    )
