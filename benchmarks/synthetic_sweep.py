"""A sweep directory written directly, without training: the read benchmark's input.

The spec is a real digits sweep (5 dictionaries × 2 τ × N seeds, so its trial ids, configs and run
names are what ``glth run`` would make); each trial gets ``rounds`` rows of the IMP row schema
(``glth_core.records.round_record``'s columns, plausible made-up values) written by the real writers:
``SweepDir.create`` (``sweep.json``, ``spec.yaml``) and ``parquet.write_trial`` (one file per trial
under its dictionary partition). No tickets: ``glth results`` then leaves the mask overlap out (it
says so once per trial), so a read times the rows and the analysis, not the tickets.
"""

from __future__ import annotations

import json
import math

import yaml

DICTIONARIES = [
    {"kind": "canonical"},
    {"kind": "random", "method": "fast", "version": 2},
    {"kind": "bottleneck", "layer": "1", "basis": "identity"},
    {"kind": "bottleneck", "layer": "1", "basis": "dct"},
    {"kind": "blockdiag", "per": "tensor", "block": "dct"},
]
TAUS = [0.2, 0.3]
TOTAL = 89_610  # mlp_300_100's weights on digits (64 → 300 → 100 → 10, biases included)


def spec_text(name: str, trials: int, rounds: int) -> str:
    per_seed = len(DICTIONARIES) * len(TAUS)
    if trials % per_seed:
        raise ValueError(f"trials: {trials} is not a multiple of {per_seed} (dictionaries × τ)")
    spec = {
        "name": name,
        "experiment": "glth-bench-scale",
        "dataset": "digits",
        "model": "mlp_300_100",
        "dictionary": DICTIONARIES,
        "tau": TAUS,
        "seeds": list(range(trials // per_seed)),
        "rounds": rounds,
        "train": {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "steps": 2},
        "resources": {"cpu": 1},
        "max_concurrent": 2,
        "system_metrics": False,
    }
    return yaml.safe_dump(spec, sort_keys=False)


def round_row(seed: int, tau: float, r: int) -> dict:
    """One round's columns as ``round_record`` makes them (values made up, smooth in the round)."""
    density = (1.0 - tau) ** r
    kept = max(1, round(TOTAL * density))
    wobble = 0.002 * math.sin(seed + r)
    acc = min(1.0, 0.95 - 0.4 * max(0.0, 0.05 - density) + wobble)
    return {
        "round": r,
        "kept": kept,
        "total": TOTAL,
        "density": kept / TOTAL,
        "compression": 1 - kept / TOTAL,
        "test_accuracy": acc,
        "test_loss": 1.0 - acc,
        "val_accuracy": acc - 0.001,
        "train_accuracy": acc + 0.01,
        "train_loss": 0.99 - acc,
        "epochs": 1.0,
        "wall_seconds": 0.05,
        "eval_seconds": 0.003,
        "rank": None,
        "layer_density": json.dumps({"0.weight": density, "2.weight": density, "4.weight": density}),
        "flops": 2 * kept,
        "flops_dense": 2 * TOTAL,
        "status": "ok",
    }


def write(storage, name: str, trials: int, rounds: int) -> str:
    """Write the sweep under ``storage`` (a path, URI or ``Storage``); returns its sweep id."""
    from orchestrator import spec as specs
    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet

    text = spec_text(name, trials, rounds)
    sweep = specs.parse(text)
    where = SweepDir.under(storage, sweep.sweep_id)
    where.create(sweep.text)
    for t in sweep.trials:
        meta = t.meta(sweep.sweep_id)
        records = [{**meta, **round_row(t.config.seed, float(meta["tau"]), r)} for r in range(rounds)]
        parquet.write_trial(where, t.trial_id, t.dictionary_label, records)
    return sweep.sweep_id
