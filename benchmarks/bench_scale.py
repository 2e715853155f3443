"""Sweeps of many tiny trajectories: what orchestration costs per trial as the sweep grows, and how
long reading a large sweep takes.

Sweeps (each a fresh storage and a fresh sqlite MLflow store, ``glth run`` as a subprocess on the
embedded local Ray): N trajectories of mlp_300_100 on digits that differ by seed, 3 rounds of 2
steps each, ``max_concurrent: 2``, 1 CPU a trial — N = 100, 500 and 2,000 (``--quick``: 100;
``--sizes`` picks). The driver (the ``glth run`` process) is sampled every 0.25 s with psutil: its
CPU seconds (user + system, its own, not its children's) and its peak RSS (``VmHWM``). Per size:

* overhead per trial = (wall − fixed − Σ compute / P) / N, in seconds of wall, P = min(2, cores):
  what each trial adds to the sweep's wall beyond its share of the cores' compute. Σ compute is every
  row's ``wall_seconds`` + ``eval_seconds``; fixed is ``glth run``'s fixed cost measured in the same
  invocation (a one-trial, one-step sweep less its compute, as in ``bench_sweep.py``). Flat means the
  overhead per trial at the largest size ≤ 1.2× that at the smallest;
* the driver's CPU seconds per report (one report per trial and round: N × 3), its peak RSS and the
  MB per 1,000 trials (peak RSS less the one-trial sweep's, per 1,000 trials);
* MLflow writes per second: the values the sweep left in the store (metric values + params + tags,
  counted in the sqlite file afterwards) per second of the sweep's wall;
* ``glth results`` and ``glth plot`` on the finished sweep (wall of each command).

Read: a synthetic sweep of 5,000 trials × 20 rounds (``synthetic_sweep.py``: real spec, trial ids,
layout and Parquet writer; no training, no tickets; ``--quick``: 500 × 20; ``--synthetic TxR``
picks), compacted as ``glth run`` leaves a sweep of at least ``GLTH_COMPACT_MIN_TRIALS`` trials at its
end (one part per dictionary), then ``glth results`` timed on it locally and on the loopback S3
server of ``tests/s3_server.py``.

``--json PATH`` also writes every number measured (the smoke test reads it). Absolute seconds
depend on the machine's load: each line carries ``os.getloadavg()`` at its end.

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--sizes 100 500] [--synthetic 5000x20]
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import synthetic_sweep
import yaml
from bench_sweep import compute_of, sweep_spec
from common import REPO, parser

GLTH = str(Path(sys.executable).with_name("glth"))
ROUNDS = 3
TARGETS = {"fixed": 8.0, "overhead": 0.15, "flat": 1.2, "rss_2000": 1500.0, "results_local": 5.0, "results_s3": 20.0}


def mark(value: float, target: float) -> str:
    return f"(target <= {target:g}: {'✓' if value <= target else '✗'})"


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def tiny_spec(name: str, trials: int) -> dict:
    spec = sweep_spec(name, 1, ROUNDS, 1, steps=2)
    return {**spec, "seeds": list(range(trials))}


class Sampler(threading.Thread):
    """A process's own CPU seconds and peak RSS (VmHWM), sampled until it exits."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.proc, self.every = psutil.Process(pid), every
        self.cpu, self.peak_mb = 0.0, 0.0

    def run(self):
        status = Path(f"/proc/{self.proc.pid}/status")
        while True:
            try:
                t = self.proc.cpu_times()
                self.cpu = t.user + t.system
                hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
                self.peak_mb = max(self.peak_mb, int(hwm.split()[1]) / 1024)
            except (psutil.Error, OSError, StopIteration):
                return
            time.sleep(self.every)


def run_sampled(spec: dict, tmp: Path, env: dict | None = None) -> dict:
    """``glth run`` of ``spec`` in ``tmp`` with its driver sampled: wall, driver CPU, peak RSS, rows
    (``env``: added to this process's environment for it)."""
    from orchestrator import spec as specs
    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet

    path = tmp / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep_id = specs.load(path).sweep_id
    cmd = [GLTH, "run", str(path), "--out", str(tmp / "runs"), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = Sampler(proc.pid)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"scale: glth run failed ({proc.returncode}): {err[-2000:]}")
    rows = parquet.read_rounds(SweepDir.under(tmp / "runs", sweep_id))
    return {
        "wall": wall,
        "driver_cpu": sampler.cpu,
        "peak_mb": sampler.peak_mb,
        "rows": rows,
        "sweep_dir": tmp / "runs" / sweep_id,
    }


def mlflow_values(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return {
            t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in ("runs", "metrics", "params", "tags")
        }


def timed_cmd(args: list[str], cwd: Path, env: dict | None = None) -> float:
    """Wall seconds of ``glth ARGS`` in ``cwd`` (``env``: its whole environment, default ours)."""
    t0 = time.perf_counter()
    done = subprocess.run([GLTH, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"scale: glth {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - t0


def fixed_cost(tmp: Path, env: dict | None = None) -> dict:
    """glth run's fixed cost: a 1-trial sweep of one 1-step round, less its compute."""
    r = run_sampled(sweep_spec("scale-fixed", 1, 1, 1, steps=1), tmp, env)
    return {
        "fixed_s": r["wall"] - compute_of(r["rows"], None),
        "fixed_peak_mb": r["peak_mb"],
        "fixed_driver_cpu": r["driver_cpu"],
    }


def one_size(n: int, fixed: dict, parallel: int, reads: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"glth-bench-scale-{n}-") as tmp:
        tmp = Path(tmp)
        r = run_sampled(tiny_spec(f"scale-{n}", n), tmp)
        rows, db = r["rows"], tmp / "mlflow.db"
        uri = ["--tracking-uri", f"sqlite:///{db}"]
        values = mlflow_values(db)
        results_s = timed_cmd(["results", str(r["sweep_dir"]), *uri], tmp) if reads else math.nan
        plot_s = timed_cmd(["plot", str(r["sweep_dir"]), *uri], tmp) if reads else math.nan
    compute = compute_of(rows, None)
    reports = len(rows)
    written = values["metrics"] + values["params"] + values["tags"]
    return {
        "trials": n,
        "rows": reports,
        "trial_ids": int(rows["trial_id"].nunique()),
        "wall_s": r["wall"],
        "compute_s": compute,
        "overhead_per_trial_s": (r["wall"] - fixed["fixed_s"] - compute / parallel) / n,
        "driver_cpu_s": r["driver_cpu"],
        "driver_cpu_per_report_s": r["driver_cpu"] / reports,
        "peak_rss_mb": r["peak_mb"],
        "mb_per_1000_trials": (r["peak_mb"] - fixed["fixed_peak_mb"]) * 1000 / n,
        "mlflow_runs": values["runs"],
        "mlflow_values": written,
        "mlflow_writes_per_s": written / r["wall"],
        "results_s": results_s,
        "plot_s": plot_s,
        "load": os.getloadavg()[0],
    }


def read_sweep(trials: int, rounds: int, s3: bool = True) -> dict:
    """``glth results`` on a synthetic sweep, local and (``s3``) on the loopback S3 server."""
    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet, parquet_compact

    out = {"synthetic_trials": trials, "synthetic_rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="glth-bench-scale-read-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        sweep_id = synthetic_sweep.write(tmp / "runs", "scale-read", trials, rounds)
        out["synthetic_write_s"] = time.perf_counter() - t0
        where = SweepDir.under(tmp / "runs", sweep_id)
        if trials >= parquet_compact.min_trials():  # as `glth run` leaves a sweep this large at its end
            t0 = time.perf_counter()
            out["compacted_trials"] = parquet_compact.compact(where).trials
            out["compact_s"] = time.perf_counter() - t0
        out["synthetic_rows"] = len(parquet.read_rounds(where))
        files = [p for p in (tmp / "runs" / sweep_id).rglob("*") if p.is_file()]  # before results adds its own
        uri = ["--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
        out["results_local_s"] = timed_cmd(["results", str(tmp / "runs" / sweep_id), *uri], tmp)
        out["load_local"] = os.getloadavg()[0]
        if s3:
            out.update(read_on_s3(tmp / "runs" / sweep_id, files, uri))
    return out


def read_on_s3(local: Path, files: list[Path], uri: list[str]) -> dict:
    """Copy ``files`` of the sweep directory ``local`` into a bucket of the loopback S3 server and
    time ``glth results`` there."""
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(REPO / "tests"))
    from s3_server import S3Server

    server = S3Server().start()
    try:
        bucket, s3, sweep_id = server.make_bucket(), server.s3(), local.name
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda p: s3.upload_file(str(p), bucket, f"runs/{sweep_id}/{p.relative_to(local)}"), files))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        wall = timed_cmd(
            ["results", f"s3://{bucket}/runs/{sweep_id}", *uri], local.parent.parent, {**env, **server.env}
        )
        return {"results_s3_s": wall, "s3_objects": len(files), "load_s3": os.getloadavg()[0]}
    finally:
        server.stop()


def size_line(s: dict, parallel: int) -> str:
    return (
        f"scale {s['trials']} trials x {ROUNDS} rounds: wall {s['wall_s']:.1f} s, compute {s['compute_s']:.1f} s "
        f"on {parallel} slots; overhead {s['overhead_per_trial_s']:.3f} s a trial "
        f"{mark(s['overhead_per_trial_s'], TARGETS['overhead'])}; driver CPU {s['driver_cpu_s']:.1f} s = "
        f"{1e3 * s['driver_cpu_per_report_s']:.1f} ms a report ({s['rows']} reports); driver peak RSS "
        f"{s['peak_rss_mb']:.0f} MB (+{s['mb_per_1000_trials']:.0f} MB per 1,000 trials); MLflow "
        f"{s['mlflow_values']} values in {s['mlflow_runs']} runs, {s['mlflow_writes_per_s']:.0f}/s; "
        f"glth results {s['results_s']:.1f} s, glth plot {s['plot_s']:.1f} s [load {s['load']:.1f}]"
    )


def fixed_line(fixed: dict) -> str:
    return (
        f"scale fixed cost of glth run (1 trial, 1 step, fresh storage and MLflow): {fixed['fixed_s']:.1f} s "
        f"{mark(fixed['fixed_s'], TARGETS['fixed'])}; driver CPU {fixed['fixed_driver_cpu']:.1f} s, "
        f"peak RSS {fixed['fixed_peak_mb']:.0f} MB [{load()}]"
    )


def summary(sizes: list[dict], read: dict) -> None:
    """What compares the sizes, and the read benchmark (the sizes' own lines come as they finish)."""
    if len(sizes) > 1:
        flat = sizes[-1]["overhead_per_trial_s"] / sizes[0]["overhead_per_trial_s"]
        print(
            f"scale overhead per trial at {sizes[-1]['trials']} / at {sizes[0]['trials']}: {flat:.2f}x "
            f"{mark(flat, TARGETS['flat'])}",
            flush=True,
        )
    at_2000 = [s for s in sizes if s["trials"] >= 2000]
    if at_2000:
        print(
            f"scale driver peak RSS at {at_2000[0]['trials']} trials: {at_2000[0]['peak_rss_mb']:.0f} MB "
            f"{mark(at_2000[0]['peak_rss_mb'], TARGETS['rss_2000'])}",
            flush=True,
        )
    else:
        print(
            "scale driver peak RSS at 2,000 trials: not measured in this run (sizes "
            f"{', '.join(str(s['trials']) for s in sizes)})",
            flush=True,
        )
    if read:
        label = f"{read['synthetic_trials']} trials x {read['synthetic_rounds']} rounds ({read['synthetic_rows']} rows"
        label += f", compacted as glth run leaves it: {read['compact_s']:.1f} s)" if "compact_s" in read else ")"
        print(
            f"scale glth results on a synthetic sweep of {label}: local {read['results_local_s']:.1f} s "
            f"{mark(read['results_local_s'], TARGETS['results_local'])} [load {read['load_local']:.1f}]"
            + (
                f"; loopback S3 ({read['s3_objects']} objects) {read['results_s3_s']:.1f} s "
                f"{mark(read['results_s3_s'], TARGETS['results_s3'])} [load {read['load_s3']:.1f}]"
                if "results_s3_s" in read
                else ""
            ),
            flush=True,
        )
    print("scale the 64-trajectory ratio and the IMP round's ratio: bench_sweep.py and bench_round.py", flush=True)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="trajectories per sweep (default 100 500 2000)")
    p.add_argument("--synthetic", default=None, help="TRIALSxROUNDS of the read benchmark (default 5000x20)")
    p.add_argument("--no-s3", action="store_true", help="skip the read on the loopback S3 server")
    p.add_argument(
        "--sweeps-only",
        action="store_true",
        help="only the sweeps: no glth results / plot on them, no read benchmark (before/after comparisons)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write every number measured here")
    args = p.parse_args()
    sizes = args.sizes or ([100] if args.quick else [100, 500, 2000])
    trials, rounds = map(int, (args.synthetic or ("500x20" if args.quick else "5000x20")).split("x"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    parallel = min(2, os.cpu_count() or 1)
    print(
        f"# scale: sweeps of {', '.join(map(str, sizes))} tiny trajectories (mlp_300_100, digits, {ROUNDS} rounds "
        f"of 2 steps), max_concurrent 2, {os.cpu_count()} cores; read: {trials} x {rounds} synthetic",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="glth-bench-scale-fixed-") as tmp:
        fixed = fixed_cost(Path(tmp))
    print(fixed_line(fixed), flush=True)
    measured = []
    for n in sizes:
        measured.append(one_size(n, fixed, parallel, reads=not args.sweeps_only))
        print(size_line(measured[-1], parallel), flush=True)
    read = {} if args.sweeps_only else read_sweep(trials, rounds, s3=not args.no_s3)
    summary(measured, read)
    if args.json:
        args.json.write_text(json.dumps({"fixed": fixed, "sizes": measured, "read": read}, indent=1))


if __name__ == "__main__":
    main()
