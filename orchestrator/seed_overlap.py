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


def pairwise(masks: list[torch.Tensor]) -> tuple[float, float, float]:
    """(mean, min, max) Jaccard over all pairs; NaNs with fewer than two masks."""
    values = [jaccard(a, b) for a, b in itertools.combinations(masks, 2)]
    if not values:
        return (math.nan,) * 3
    return sum(values) / len(values), min(values), max(values)


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
    """Mask overlap across seeds per curve × round (see the module doc); the tickets from ``sweep_dir``."""
    ok = curve_rows(rows)
    out = []
    for key, curve in ok.groupby(CURVE, sort=True, dropna=False):
        trials = curve.drop_duplicates("trial_id")
        configs = {r.trial_id: json.loads(r.config) for r in trials.itertuples()}
        same_basis = len({basis_key(c) for c in configs.values()}) == 1
        tickets = {}
        if same_basis and len(configs) > 1:
            for tid in configs:
                tickets[tid] = sweep_dir.tickets(tid)
                if not tickets[tid]:
                    print(f"[glth] analysis: trial {tid} has no tickets; left out of the mask overlap", file=sys.stderr)
        for rnd in sorted(curve["round"].unique()):
            masks = [t[int(rnd)].mask.cpu() for t in tickets.values() if int(rnd) in t]
            row = dict(zip(CURVE, key), round=int(rnd), overlap_seeds=len(masks))
            row.update(dict.fromkeys(OVERLAP, math.nan))
            if len(masks) > 1:
                density = float(masks[0].float().mean())
                row["jaccard_mean"], row["jaccard_min"], row["jaccard_max"] = pairwise(masks)
                row["jaccard_chance"] = chance(density)
                config = next(iter(configs.values()))
                groups = [group_mask(config, m) for m in masks]
                if groups[0] is not None:
                    row["group_jaccard_mean"], row["group_jaccard_min"], row["group_jaccard_max"] = pairwise(groups)
                    row["group_density"] = float(groups[0].float().mean())
                    row["group_jaccard_chance"] = chance(row["group_density"])
            out.append(row)
    return pd.DataFrame(out, columns=[*CURVE, "round", "overlap_seeds", *OVERLAP]).astype({"tau": "float64"})
