"""Reading a sweep of thousands of trials before and after its rows are compacted.

Two copies of one synthetic sweep (``synthetic_sweep.py``: a real spec of 5 dictionaries × 2 τ × N
seeds, real trial ids, rows of the IMP schema written by ``parquet.write_trial``, one file per
trial): copy A as written, copy B compacted (``parquet_compact.compact``: one part per dictionary).
``parquet.read_rounds`` — the read ``glth results`` / ``glth plot`` start with — is timed on each,
the two arms round-robin, median of ``--repeats``, wall clock; the two frames must be equal. The
same on the loopback S3 server of ``tests/s3_server.py`` (moto, IAM auth on), each copy written
there by the same writer and B compacted there (its wall is printed, and apart the read that
judges which trials are complete, which ``glth run`` has already made when it compacts). Default 5,000 trials × 20
rounds (``--quick``: 500 × 20; ``--synthetic TxR``).

    .venv/bin/python benchmarks/bench_compact.py [--quick] [--synthetic 5000x20] [--no-s3] [--json PATH]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import synthetic_sweep
from common import REPO, interleaved, parser, set_threads


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def measure(storage, trials: int, rounds: int, repeats: int) -> dict:
    """Write copies A and B under ``storage`` (a path or URI), compact B, time reading each."""
    import pandas as pd

    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet, parquet_compact

    t0 = time.perf_counter()
    a = SweepDir.under(f"{storage}/a", synthetic_sweep.write(f"{storage}/a", "compact-read", trials, rounds))
    b = SweepDir.under(f"{storage}/b", synthetic_sweep.write(f"{storage}/b", "compact-read", trials, rounds))
    write_s = (time.perf_counter() - t0) / 2
    t0 = time.perf_counter()
    complete = parquet.completed_trials(b)  # what glth run knows already when it compacts
    t1 = time.perf_counter()
    done = parquet_compact.compact(b, complete)
    compact_s, completion_s = time.perf_counter() - t1, t1 - t0
    pd.testing.assert_frame_equal(parquet.read_rounds(a), parquet.read_rounds(b), check_exact=True)
    times = interleaved({"a": lambda: parquet.read_rounds(a), "b": lambda: parquet.read_rounds(b)}, repeats)
    return {
        "rows": trials * rounds,
        "files_before": len(parquet.listed(a.store)[1].all),
        "files_after": len(parquet.listed(b.store)[1].all),
        "trials_compacted": done.trials,
        "write_s": write_s,
        "compact_s": compact_s,
        "completion_s": completion_s,
        "read_before_s": times["a"],
        "read_after_s": times["b"],
        "speedup": times["a"] / times["b"],
        "load": os.getloadavg()[0],
    }


def line(where: str, trials: int, rounds: int, m: dict) -> str:
    return (
        f"compact {trials} trials x {rounds} rounds ({m['rows']:,} rows), {where}: read_rounds "
        f"{m['read_before_s']:.2f} s from {m['files_before']} files -> {m['read_after_s']:.2f} s from "
        f"{m['files_after']} files after compaction ({m['speedup']:.1f}x faster); compaction "
        f"{m['compact_s']:.1f} s (+ {m['completion_s']:.1f} s judging completion first), writing the sweep "
        f"{m['write_s']:.1f} s [{load()}]"
    )


def on_s3(trials: int, rounds: int, repeats: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from s3_server import S3Server

    server = S3Server().start()
    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update(server.env)
        return measure(f"s3://{server.make_bucket()}/runs", trials, rounds, repeats)
    finally:
        for k in server.env:
            os.environ.pop(k, None)
        os.environ.update(saved)
        server.stop()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--synthetic", default=None, help="TRIALSxROUNDS (default 5000x20; --quick 500x20)")
    p.add_argument("--no-s3", action="store_true", help="only the local directory")
    p.add_argument("--json", default=None, help="also write every number measured to this file")
    args = p.parse_args()
    set_threads(args.threads, "wall")
    trials, rounds = map(int, (args.synthetic or ("500x20" if args.quick else "5000x20")).split("x"))
    repeats = 1 if args.quick else max(1, min(args.repeats, 3))
    out = {}
    with tempfile.TemporaryDirectory(prefix="glth-bench-compact-") as tmp:
        out["local"] = measure(tmp, trials, rounds, repeats)
    print(line("local", trials, rounds, out["local"]), flush=True)
    if not args.no_s3:
        out["s3"] = on_s3(trials, rounds, repeats)
        print(line("S3 (moto on loopback)", trials, rounds, out["s3"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
