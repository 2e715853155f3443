"""Orchestration overhead of a sweep: ``glth run`` of 64 short trajectories on digits (16 in
``--quick``) with 2 at a time on 2 cores, wall time vs the compute the trials did, and the fixed
start-up cost of ``glth run`` on its own.

* per-core ratio = wall × P / Σ compute, P = min(max_concurrent, cores): 1.0 is perfect use of the
  cores; above it is what the sweep spends besides its trials' rounds. Σ compute is every row's
  ``wall_seconds`` (training) plus its ``eval_seconds`` (evaluation of the three splits); where the
  rows lack ``eval_seconds``, each round's evaluation is timed here with glth's ``evaluate`` and
  the line says so. Also printed without the fixed cost, to show the per-trial overhead alone.
* fixed cost: the wall of a sweep of one 1-step round, less that round's compute (start-up and
  tear-down of Python, Ray, Tune, the first worker, MLflow), split into the embedded local Ray's
  start and stop (``orchestrator.ray_local.ray_session`` timed in this process) and the rest; and
  a rerun of a complete sweep (no Ray: imports, spec, MLflow, the summary).

``--spec PATH [--profile NAME]`` instead times one given sweep (a GPU row: ``--spec
examples/specs/fig2_right.yaml --profile full`` on a GPU machine; hours on 2 CPU cores): its wall
time, the compute in its rows and the per-slot ratio (slots = its max_concurrent).

    .venv/bin/python benchmarks/bench_sweep.py [--quick] [--spec PATH --profile NAME]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import parser, verdict

from glth_core import data as datasets
from glth_core import dictionaries, models
from glth_core.train import Parameterization, evaluate

TARGET = 1.2
FIXED_TARGET = 8.0  # seconds, on 2 quiet cores
DICTIONARIES = [
    {"kind": "canonical"},
    {"kind": "random", "method": "fast", "version": 2},
    {"kind": "bottleneck", "layer": "1", "basis": "identity"},
    {"kind": "bottleneck", "layer": "1", "basis": "dct"},
]


def sweep_spec(name: str, seeds: int, rounds: int, epochs: int, steps: int | None = None) -> dict:
    train = {"epochs": epochs, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9}
    if steps is not None:
        train = {**train, "steps": steps}
    return {
        "name": name,
        "experiment": "glth-bench-sweep",
        "dataset": "digits",
        "model": "mlp_300_100",
        "dictionary": DICTIONARIES if seeds > 1 else DICTIONARIES[:1],
        "tau": 0.3,
        "seeds": list(range(seeds)),
        "rounds": rounds,
        "train": train,
        "resources": {"cpu": 1},
        "max_concurrent": 2,
        "system_metrics": False,
    }


def glth_run(spec: dict, tmp: Path, path: Path | None = None, profile: str | None = None) -> tuple[float, object]:
    """(wall seconds, rows) of ``glth run`` of ``spec`` (written to ``tmp``, or the file ``path``
    whose content ``spec`` is) in ``tmp``: its storage and MLflow there too."""
    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet

    if path is None:
        path = tmp / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cmd = [
        str(Path(sys.executable).with_name("glth")),
        "run",
        str(path),
        "--out",
        str(tmp / "runs"),
        "--tracking-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        *(["--profile", profile] if profile else []),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=tmp, env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"sweep: glth run failed ({done.returncode}): {done.stderr[-2000:]}")
    own = re.compile(re.escape(spec["name"]) + (f"-{re.escape(profile)}" if profile else "") + r"-[0-9a-f]{8}")
    sweep_ids = [d.name for d in (tmp / "runs").iterdir() if d.is_dir() and own.fullmatch(d.name)]
    return wall, parquet.read_rounds(SweepDir.under(tmp / "runs", sweep_ids[0]))


def eval_seconds_here(repeats: int = 5) -> float:
    """One round's evaluation (train, val, test of digits) of mlp_300_100, timed with glth's evaluate."""
    data = datasets.load("digits")
    model = models.build("mlp_300_100", data.input_shape, data.num_classes)
    param = Parameterization(model, dictionaries.build({"kind": "canonical"}, model))
    w, mask = param.weights_of(model), torch.ones(param.dictionary.size, dtype=torch.bool)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in ("train", "val", "test"):
            evaluate(param, w, mask, getattr(data, f"{s}_x"), getattr(data, f"{s}_y"))
        times.append(time.perf_counter() - t0)
    return min(times)


def ray_start_stop(repeats: int = 2) -> tuple[float, float]:
    """(start, stop) seconds of the embedded local Ray, fastest of ``repeats``."""
    from orchestrator.ray_local import ray_session

    starts, stops = [], []
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for _ in range(repeats):
        t0 = time.perf_counter()
        session = ray_session(None, os.cpu_count())
        session.__enter__()
        t1 = time.perf_counter()
        session.__exit__(None, None, None)
        starts.append(t1 - t0)
        stops.append(time.perf_counter() - t1)
    return min(starts), min(stops)


def compute_of(rows, per_round_eval: float | None) -> float:
    evals = rows["eval_seconds"].sum() if per_round_eval is None else per_round_eval * len(rows)
    return float(rows["wall_seconds"].sum() + evals)


def one_sweep(path: Path, profile: str | None) -> None:
    spec = yaml.safe_load(path.read_text())
    slots = int(((spec.get("profiles") or {}).get(profile) or {}).get("max_concurrent", spec.get("max_concurrent", 1)))
    with tempfile.TemporaryDirectory(prefix="glth-bench-sweep-") as tmp:
        wall, rows = glth_run(spec, Path(tmp), path.resolve(), profile)
    has_eval = "eval_seconds" in rows and rows["eval_seconds"].notna().all()
    compute = float(rows["wall_seconds"].sum() + (rows["eval_seconds"].sum() if has_eval else 0.0))
    print(
        f"sweep {spec['name']} --profile {profile}: wall {wall:.0f} s ({wall / 3600:.2f} h), {rows['trial_id'].nunique()} "
        f"trials, {len(rows)} rows; compute {compute:.0f} s ({'training + evaluation' if has_eval else 'training only'}); "
        f"wall x {slots} slots / compute {wall * slots / compute:.2f}x",
        flush=True,
    )


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--spec", type=Path, default=None, help="time this sweep instead (see above)")
    p.add_argument("--profile", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.spec is not None:
        one_sweep(args.spec, args.profile)
        return
    seeds, rounds, epochs = (4, 3, 4) if args.quick else (16, 4, 8)
    spec = sweep_spec("bench-sweep" + ("-quick" if args.quick else ""), seeds, rounds, epochs)
    trials = seeds * len(DICTIONARIES)
    cores = os.cpu_count() or 1
    parallel = min(spec["max_concurrent"], cores)
    with tempfile.TemporaryDirectory(prefix="glth-bench-sweep-") as tmp:
        tmp = Path(tmp)
        wall, rows = glth_run(spec, tmp)
        rerun, _ = glth_run(spec, tmp)  # every trial complete: no Ray
        tiny_wall, tiny_rows = glth_run(sweep_spec("bench-sweep-fixed", 1, 1, 1, steps=1), tmp)
    has_eval = "eval_seconds" in rows and rows["eval_seconds"].notna().all()
    per_eval = None if has_eval else eval_seconds_here()
    compute = compute_of(rows, per_eval)
    fixed = tiny_wall - compute_of(tiny_rows, per_eval)
    ray_start, ray_stop = ray_start_stop()
    per_core = wall * parallel / compute
    steady = (wall - fixed) * parallel / compute
    where = (
        "rows' eval_seconds"
        if has_eval
        else f"eval {1e3 * per_eval:.1f} ms a round timed here: the rows have no eval_seconds"
    )
    print(
        f"# sweep: {trials} trajectories ({len(DICTIONARIES)} dictionaries x {seeds} seeds) x {rounds} rounds of "
        f"{epochs} epochs on digits, max_concurrent {spec['max_concurrent']}, {cores} cores",
        flush=True,
    )
    print(
        f"sweep {trials} trajectories wall x {parallel} cores / compute: {per_core:.2f}x ({wall:.1f} s x {parallel} vs "
        f"{compute:.1f} s = training {rows['wall_seconds'].sum():.1f} s + evaluation [{where}]) {verdict(per_core, TARGET)}; "
        f"without the fixed cost {steady:.2f}x",
        flush=True,
    )
    print(
        f"sweep fixed cost of glth run: {fixed:.1f} s {verdict(fixed, FIXED_TARGET)} (a 1-trial sweep of one 1-step "
        f"round: {tiny_wall:.1f} s), of which "
        f"the embedded local Ray starts in {ray_start:.1f} s and stops in {ray_stop:.1f} s "
        f"{verdict(ray_start + ray_stop, 3.0)}; a rerun of the complete sweep (no Ray) takes {rerun:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
