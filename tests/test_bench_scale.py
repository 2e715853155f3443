"""The scale benchmark's quick path at a tiny size (a sweep of 2 trials, a 10 x 2 synthetic sweep): it
runs end to end and measures every number it reports (finite, with the right counts). Timings are
not asserted: they depend on the machine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_scale_quick_measures_every_number(tmp_path):
    out = tmp_path / "scale.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RAY_AUTH_MODE": "disabled",
        "GLTH_COMPACT_MIN_TRIALS": "5",  # the 10-trial read sweep is compacted, as a large one would be
    }
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_scale.py"),
            "--quick",
            "--sizes",
            "2",
            "--synthetic",
            "10x2",
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(out.read_text())

    fixed, (size,), read = got["fixed"], got["sizes"], got["read"]
    for value in [*fixed.values(), *size.values(), *read.values()]:
        assert isinstance(value, (int, float)) and math.isfinite(value), got
    assert fixed["fixed_driver_cpu"] > 0 and fixed["fixed_peak_mb"] > 0
    assert (size["trials"], size["trial_ids"], size["rows"]) == (2, 2, 2 * 3)  # 3 rounds a trial
    assert size["mlflow_runs"] == 1 + 2  # the parent and one child per trial
    assert size["mlflow_values"] > 2 * 3 * 10  # ten or more metrics a round, params and tags besides
    assert size["driver_cpu_s"] > 0 and size["peak_rss_mb"] > 0 and size["wall_s"] > size["compute_s"] / 2 > 0
    assert size["results_s"] > 0 and size["plot_s"] > 0
    assert (read["synthetic_trials"], read["synthetic_rounds"], read["synthetic_rows"]) == (10, 2, 20)
    assert read["compacted_trials"] == 10 and read["compact_s"] > 0
    assert read["s3_objects"] == 5 + 2  # one part per dictionary (5), sweep.json and spec.yaml
    assert read["results_local_s"] > 0 and read["results_s3_s"] > 0

    lines = [line for line in done.stdout.splitlines() if line.startswith("scale ")]
    for what in (
        "fixed cost of glth run",
        "2 trials x 3 rounds",
        "peak RSS at 2,000 trials",
        "synthetic sweep of 10 trials x 2 rounds (20 rows, compacted as glth run leaves it",
        "loopback S3 (7 objects)",
    ):
        assert any(what in line for line in lines), (what, done.stdout)
    assert sum(line.count("✓") + line.count("✗") for line in lines) == 4  # fixed, overhead, local, S3
