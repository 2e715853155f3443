"""The driver's MLflow writer alone: what each report costs it (issue 20's write path).

N tiny trials (3 rounds, two at a time with their rounds interleaved, as ``bench_scale.py``'s sweep;
one curve of N seeds) reported to ``MlflowWriter`` on a fresh sqlite store, Tune's hooks
(``on_trial_result``, ``on_step_end``, ``on_experiment_end``) called in this process as Tune's loop
calls them. Prints this process's CPU per report (``time.process_time``), the wall per report and
the store's commits per trial (SQLAlchemy ``commit`` events), with ``os.getloadavg()``. Then the
end of the run: every trial's Parquet file written and ``sync_sweep`` over the sweep (what
``finish_run`` does after Tune's loop), its CPU and wall per trial and its commits (it has no
rounds left to log: only the ``rounds.parquet`` artifacts and end tags). Compare two checkouts by
running it with ``PYTHONPATH`` at each, alternating.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_mlflow_writer.py [--trials 100]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from common import parser
from sqlalchemy import event
from sqlalchemy.engine import Engine

from orchestrator.layout import SweepDir
from orchestrator.sinks import mlflow as sink
from orchestrator.sinks import parquet
from orchestrator.sinks.mlflow import sqlite_seed

ROUNDS = 3


def trial_rows(sweep: str, seed: int) -> list[dict]:
    tid = f"t{seed}"
    config = {"dataset": "digits", "seed": seed, "rounds": ROUNDS, "tau": 0.2, "dictionary": {"kind": "canonical"}}
    common = {"sweep_id": sweep, "trial_id": tid, "kind": "imp", "run_name": f"canonical-tau0.2-s{seed}"}
    common |= {"rows_expected": ROUNDS, "config": json.dumps(config), "status": "ok", "dataset": "digits"}
    common |= {"model": "mlp_300_100", "seed": seed, "dictionary": "canonical", "tau": 0.2, "rewind": "init"}
    return [
        {**common, "round": r, "density": 0.8**r, "test_accuracy": 0.9 - 0.01 * r, "val_accuracy": 0.9}
        | {"compression": 1.25**r, "train_loss": 0.1, "wall_seconds": 0.2, "eval_seconds": 0.05}
        for r in range(ROUNDS)
    ]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--trials", type=int, default=100)
    args = p.parse_args()
    n = 20 if args.quick else args.trials
    with tempfile.TemporaryDirectory(prefix="glth-bench-writer-") as tmp:
        uri = f"{sqlite_seed.SQLITE}{Path(tmp) / 'mlflow.db'}"
        sweep = "bench-writer"
        trials = [trial_rows(sweep, s) for s in range(n)]
        c = sink.client(uri)
        exp = sink.ensure_experiment(c, "bench-writer")
        parent = sink.get_or_create_parent(c, exp, sweep, "name: bench-writer\n")
        metas = [t[0] for t in trials]
        writer = sink.MlflowWriter(uri, "bench-writer", exp, parent, sweep, metas=metas)
        commits = [0]
        event.listen(Engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))  # every engine
        reports = [t[k : k + 1] for i in range(0, n, 2) for k in range(ROUNDS) for t in trials[i : i + 2]]
        cpu, wall, t0 = time.process_time(), time.perf_counter(), os.times()
        for it, rows in enumerate(reports):
            writer.on_trial_result(iteration=it, trials=[], trial=None, result={"new_rows": rows})
            writer.on_step_end(iteration=it, trials=[])
        writer.on_experiment_end(trials=[])
        cpu, wall, t1 = time.process_time() - cpu, time.perf_counter() - wall, os.times()
        sys_share = (t1.system - t0.system) / max(cpu, 1e-9)
        runs = c.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000)
        steps = sum(len(c.get_metric_history(r.info.run_id, "density")) for r in runs)
        finished = sum(r.info.status == "FINISHED" for r in runs)
        live_commits, commits[0] = commits[0], 0
        sweep_dir = SweepDir.under(Path(tmp), sweep)
        for rows in trials:
            parquet.write_trial(sweep_dir, rows[0]["trial_id"], rows[0]["dictionary"], rows)
        files = parquet.trial_files(sweep_dir)
        artifacts = {tid: {"rounds.parquet": str(p)} for tid, p in files.items()}
        df = parquet.read_rounds(sweep_dir)
        scpu, swall = time.process_time(), time.perf_counter()
        counts = sink.sync_sweep(uri, "bench-writer", sweep, "name: bench-writer\n", df, artifacts, metas=metas)
        scpu, swall = time.process_time() - scpu, time.perf_counter() - swall
    print(
        f"mlflow writer: {n} trials x {ROUNDS} rounds, {len(reports)} reports: {1e3 * cpu / len(reports):.2f} ms CPU "
        f"a report ({100 * sys_share:.0f} % system), {1e3 * wall / len(reports):.2f} ms wall, {live_commits / n:.1f} sqlite commits a trial; "
        f"{steps} steps logged, {finished} runs FINISHED, writer {'off' if writer.off else 'on'}; "
        f"end sync: {1e3 * scpu / n:.2f} ms CPU a trial, {1e3 * swall / n:.2f} ms wall, "
        f"{commits[0] / n:.1f} commits a trial, {counts} "
        f"[load {' '.join(f'{x:.1f}' for x in os.getloadavg())}]",
        flush=True,
    )


if __name__ == "__main__":
    main()
