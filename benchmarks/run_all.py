"""Run every benchmark, one after another (each in its own process), and print their lines.

    .venv/bin/python benchmarks/run_all.py                  # everything (bench_construct takes a while)
    .venv/bin/python benchmarks/run_all.py --quick          # smaller runs, bench_construct skipped
    .venv/bin/python benchmarks/run_all.py --skip sweep construct
    .venv/bin/python benchmarks/run_all.py --only epoch batched
    .venv/bin/python benchmarks/run_all.py --only batched round --device cuda   # the GPU rows
    make bench BENCH=--quick                                  # the same through make

Each benchmark compares arms measured in the same run, so its ratios hold on a busy machine;
the absolute seconds do not. Exit status 1 if any benchmark failed (a missed target is not a failure).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: name: (file, takes --quick/--threads)
BENCHMARKS = {
    "epoch": ("bench_epoch.py", True),
    "batched": ("bench_batched.py", True),
    "random": ("bench_random.py", True),
    "round": ("bench_round.py", True),
    "augment": ("bench_augment.py", True),
    "resnet": ("bench_resnet.py", True),
    "export": ("bench_export.py", True),
    "fixed": ("bench_fixed.py", True),
    "sweep": ("bench_sweep.py", True),
    "scale": ("bench_scale.py", True),
    "compact": ("bench_compact.py", True),
    "data": ("bench_data.py", True),
    "construct": ("bench_construct.py", False),
}
#: the benchmarks that take --device (the others measure CPU work)
TAKES_DEVICE = ("batched", "round", "augment", "resnet", "export")
SKIPPED_BY_QUICK = ("construct",)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller runs of each; skips " + ", ".join(SKIPPED_BY_QUICK))
    p.add_argument("--skip", nargs="*", default=[], choices=list(BENCHMARKS), metavar="NAME")
    p.add_argument("--only", nargs="*", default=None, choices=list(BENCHMARKS), metavar="NAME")
    p.add_argument(
        "--threads", type=int, default=None, help="passed to the benchmarks that take it (default theirs: 1)"
    )
    p.add_argument("--device", default=None, help=f"passed to {', '.join(TAKES_DEVICE)} (cuda: the GPU rows)")
    args = p.parse_args()
    names = (
        args.only if args.only is not None else [n for n in BENCHMARKS if not (args.quick and n in SKIPPED_BY_QUICK)]
    )
    failed = []
    for name in names:
        if name in args.skip:
            continue
        file, takes_flags = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / file)]
        if takes_flags:
            cmd += ["--quick"] if args.quick else []
            cmd += ["--threads", str(args.threads)] if args.threads else []
        if args.device and name in TAKES_DEVICE:
            cmd += ["--device", args.device]
        print(f"== {file}", flush=True)
        t0 = time.perf_counter()
        if subprocess.run(cmd, cwd=HERE.parent).returncode != 0:
            failed.append(name)
        print(f"== {file}: {time.perf_counter() - t0:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
