"""A ticket's overlap with its training-free baseline (control: structured), from the ticket files
of a sweep directory, against an independent set computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from glth_core.ticket import Ticket
from orchestrator.baseline_overlap import baseline_overlap
from orchestrator.layout import SweepDir
from orchestrator.storage import Storage

SIZE = 40


def _row(trial_id, control, seed, rnd):
    config = {"dictionary": {"kind": "canonical"}, "model": "m", "dataset": "digits"}
    return {
        "dataset": "digits",
        "model": "m",
        "dictionary": "canonical",
        "control": control,
        "tau": 0.5,
        "rewind": "init",
        "round": rnd,
        "seed": seed,
        "trial_id": trial_id,
        "status": "ok",
        "config": json.dumps(config),
    }


def test_overlap_with_the_structured_twin_of_each_seed(tmp_path):
    rng = np.random.default_rng(0)
    where = SweepDir(Storage.resolve(str(tmp_path)), "s-1")
    rows, masks = [], {}
    for seed in (0, 1):
        for control, tid in (("none", f"imp{seed}"), ("structured", f"base{seed}")):
            for rnd in (0, 1):
                keep = rng.random(SIZE) < (1.0 if rnd == 0 else 0.5)
                masks[tid, rnd] = keep
                where.save_ticket(tid, Ticket(rnd, torch.tensor(keep), torch.zeros(int(keep.sum())), {}))
                rows.append(_row(tid, control, seed, rnd))
    rows.append(_row("other", "random_mask", 0, 1))  # another control: not a twin
    got = baseline_overlap(pd.DataFrame(rows), where)
    assert list(got["round"]) == [0, 1] and (got["control"] == "none").all()

    def jac(a, b):
        a, b = set(np.flatnonzero(a)), set(np.flatnonzero(b))
        return len(a & b) / len(a | b)

    want = np.mean([jac(masks[f"imp{s}", 1], masks[f"base{s}", 1]) for s in (0, 1)])
    assert got.set_index("round").loc[1, "jaccard_vs_structured"] == pytest.approx(want)
    assert got.set_index("round").loc[0, "jaccard_vs_structured"] == pytest.approx(1.0)
    assert got["group_jaccard_vs_structured"].isna().all()  # canonical: no groups


def test_no_structured_control_no_columns_filled(tmp_path):
    rows = pd.DataFrame([_row("imp0", "none", 0, 0)])
    assert baseline_overlap(rows, SweepDir.at(tmp_path / "s-1")).empty
