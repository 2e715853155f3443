"""Orchestration overhead: ``glth run`` wall time vs the compute it did (the sum of every round's
``wall_seconds`` in the Parquet rows) for the demo spec (orchestrator/specs/demo.yaml).

Two ratios:
* raw = wall / Σ compute. With P trials running at once on P free cores the ideal is 1/P
  (0.5 on 2 cores with the demo's max_concurrent 2), not 1.
* per-core = wall × P / Σ compute, P = min(max_concurrent, cores): 1.0 is a perfect use of the
  cores; above it is what the sweep spends besides training: Ray and Tune start-up, per-trial
  set-up (data, model, dictionary), evaluating every split each round (not in wall_seconds),
  checkpoints, Parquet and MLflow writes, the summary at the end.

``--quick`` runs the demo with fewer rounds and epochs (the fixed costs then weigh more).

    .venv/bin/python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from common import REPO, parser, verdict
from glth_core.imp import Trajectory
from orchestrator.spec import parse

DEMO = REPO / "orchestrator" / "specs" / "demo.yaml"
TARGET = 1.3


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--spec", default=str(DEMO))
    args = p.parse_args()
    spec = yaml.safe_load(Path(args.spec).read_text())
    with tempfile.TemporaryDirectory(prefix="glth-bench-sweep-") as tmp:
        tmp = Path(tmp)
        if args.quick:
            spec["rounds"], spec["train"] = 3, {**spec["train"], "epochs": 2}
            spec["name"] = f"{spec['name']}-quick"
        path = tmp / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        glth = Path(sys.executable).with_name("glth")
        cmd = [str(glth), "run", str(path), "--out", str(tmp / "runs"), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
            raise SystemExit(f"sweep: glth run failed with status {done.returncode}")
        rows = pd.concat([pd.read_parquet(f) for f in (tmp / "runs").glob("*/rounds/**/*.parquet")], ignore_index=True)
    compute = float(rows["wall_seconds"].sum())
    # the same first trial in this process, without Ray/Tune/MLflow/Parquet: what a trial spends
    # besides training (set-up, evaluating every split each round, sparsify, tickets)
    trial = parse(yaml.safe_dump(spec)).trials[0]
    torch.set_num_threads(1)  # as in a Ray trial with resources {cpu: 1}
    t0 = time.perf_counter()
    records = Trajectory(trial.config).run()
    alone = time.perf_counter() - t0
    alone_compute = sum(r["wall_seconds"] for r in records)
    cores = os.cpu_count() or 1
    parallel = min(int(spec.get("max_concurrent", 1)), cores)
    raw, per_core = wall / compute, wall * parallel / compute
    trials = rows["trial_id"].nunique() if "trial_id" in rows else "?"
    print(f"# sweep: {spec['name']}: {trials} trials, {len(rows)} rounds, max_concurrent {spec.get('max_concurrent', 1)}, "
          f"{cores} cores; ideal raw ratio 1/{parallel} = {1 / parallel:.2f}", flush=True)
    print(f"sweep {spec['name']} wall vs summed round compute: raw {raw:.2f}x ({wall:.1f} s vs {compute:.1f} s) "
          f"{verdict(raw, TARGET)}; per-core {per_core:.2f}x (x{parallel} cores) {verdict(per_core, TARGET)}", flush=True)
    print(f"sweep {spec['name']} one trial in this process (no Ray, Tune, MLflow, Parquet): {alone / alone_compute:.2f}x "
          f"its rounds' compute ({alone:.1f} s vs {alone_compute:.1f} s); the per-core ratio's excess over this is "
          f"orchestration (and other load on the machine)", flush=True)


if __name__ == "__main__":
    main()
