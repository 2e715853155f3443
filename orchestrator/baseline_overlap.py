"""How much of a ticket a training-free baseline explains: the mask overlap between each IMP
ticket and its ``control: structured`` twin (the same seed and dictionary, elements kept at the
same densities in the dictionary's fixed order — lowest DCT frequencies, top PCA components — or
a seeded random set, chosen at initialization and never by magnitude).

A ticket whose kept set is the baseline's (Jaccard near 1) is explained by the input statistics
the ordering encodes, not by training; chance, p / (2 − p), is the floor. Per curve × round: the
mean over seeds of the element-level and (for grouped dictionaries) group-level Jaccard.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from glth_core import controls
from glth_core.controls.structured import Structured
from orchestrator.layout import SweepDir
from orchestrator.results import CURVE, curve_rows
from orchestrator.seed_overlap import group_mask, jaccard

BASELINE = Structured.name
COLUMNS = ["jaccard_vs_structured", "group_jaccard_vs_structured"]
_TWIN = [k for k in CURVE if k != "control"]


def baseline_overlap(rows: pd.DataFrame, where: SweepDir) -> pd.DataFrame:
    """Per curve × round, the overlap of its tickets (in ``where``) with their structured twins'."""
    ok = curve_rows(rows)
    out = []
    if "control" not in ok or not (ok["control"] == BASELINE).any():
        return pd.DataFrame(columns=[*CURVE, "round", *COLUMNS])
    for key, curve in ok[ok["control"].map(controls.is_imp).astype(bool)].groupby(CURVE, sort=True, dropna=False):
        fields = dict(zip(CURVE, key))
        twin = ok[(ok["control"] == BASELINE)]
        for k in _TWIN:
            twin = twin[(twin[k] == fields[k]) | (twin[k].isna() & pd.isna(fields[k]))]
        pairs = []  # (ticket trial, baseline trial) of one seed
        for seed, trials in curve.groupby("seed"):
            other = twin[twin["seed"] == seed]
            if len(other):
                pairs.append(
                    (trials["trial_id"].iloc[0], other["trial_id"].iloc[0], json.loads(trials["config"].iloc[0]))
                )
        # which rounds each has (one listing a trial); the masks are read a pair and a round at a
        # time, so a curve of thousands of seeds never holds more than two tickets
        have = {tid: where.ticket_rounds(tid) for a, b, _ in pairs for tid in (a, b)}
        for rnd in sorted(curve["round"].unique()):
            values, group_values = [], []
            for a, b, config in pairs:
                if int(rnd) not in have[a] or int(rnd) not in have[b]:
                    continue
                ma, mb = (where.ticket(t, int(rnd)).mask.cpu() for t in (a, b))
                values.append(jaccard(ma, mb))
                ga, gb = group_mask(config, ma), group_mask(config, mb)
                if ga is not None:
                    group_values.append(jaccard(ga, gb))
            out.append(
                {
                    **fields,
                    "round": int(rnd),
                    "jaccard_vs_structured": sum(values) / len(values) if values else math.nan,
                    "group_jaccard_vs_structured": sum(group_values) / len(group_values) if group_values else math.nan,
                }
            )
    return pd.DataFrame(out, columns=[*CURVE, "round", *COLUMNS]).astype({"tau": "float64"})
