"""What Tune keeps of a report once the driver's callbacks have read it (``orchestrator.sinks.trim``):
a real Tune trial (made by the sweep's feed) stores a report shaped as the trainable's, as Tune's
``_process_trial_result`` does after the callbacks."""

from __future__ import annotations

import json

from test_tune_feed import SPEC, drain

from orchestrator import spec as specs
from orchestrator.sinks.trim import KEPT, TrimResult
from orchestrator.tune_feed import grid_entries


def report(trial, rnd: int) -> dict:
    """A round's report as Tune hands it to the callbacks: the round's numbers, its rows, glth's
    keys, and what Tune fills in (the trial's config among them)."""
    numbers = {f"metric_{k}": 0.5 + k + rnd for k in range(30)}
    rows = [{"trial_id": "t", "round": rnd, "config": json.dumps(trial.config["trial"]), **numbers}]
    return {
        **numbers,
        "round": rnd,
        "new_rows": rows,
        "system_metrics": {"cpu": 1.0},
        "resumed_from": -1,
        "node_id": "n" * 56,
        "trial_id": trial.trial_id,
        "done": False,
        "training_iteration": rnd + 1,
        "time_this_iter_s": 0.25,
        "time_total_s": 0.25 * (rnd + 1),
        "timestamp": 1_700_000_000 + rnd,
        "date": "2026-12-08_00-00-00",
        "pid": 1234,
        "hostname": "h",
        "node_ip": "127.0.0.1",
        "time_since_restore": 0.25 * (rnd + 1),
        "iterations_since_restore": rnd + 1,
        "config": trial.config,
    }


def stored(trial, trim: bool) -> tuple[dict, int]:
    """Tune's last result and metric keys for ``trial`` after three rounds, and its run metadata's
    JSON length (what every experiment checkpoint writes per trial)."""
    for rnd in range(3):
        result = report(trial, rnd)
        if trim:
            TrimResult().on_trial_result(0, [], trial, result)
        trial.update_last_result(result)
    return trial.last_result, len(trial.run_metadata.get_json_state())


def test_tune_keeps_its_own_keys_and_the_round_not_the_rows_numbers_or_config(tmp_path):
    entries = grid_entries(specs.parse(SPEC.replace("BATCH", "1")).trials, 1)
    (kept, full), _ = drain(entries[:2], max_concurrent=2, where=tmp_path)
    last, kept_json = stored(kept, trim=True)
    _, full_json = stored(full, trim=False)
    assert set(last) <= KEPT | {"experiment_tag"}  # Tune adds the tag when it stores the result
    assert last["training_iteration"] == 3 and last["time_total_s"] == 0.75 and last["done"] is False
    assert not {"new_rows", "system_metrics", "config", "metric_0", "node_id", "round"} & set(last)
    assert set(kept.run_metadata.metric_analysis) == {
        "done",
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
    }
    assert len(full.run_metadata.metric_analysis) == 39  # untrimmed: + the 30, round, resumed_from, system_metrics/cpu
    assert kept_json * 4 < full_json, (kept_json, full_json)
