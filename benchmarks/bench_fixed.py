"""The fixed cost of ``glth run`` on its own: a one-trial sweep of one 1-step round (mlp_300_100 on
digits), a fresh storage and a fresh sqlite MLflow store each time, wall less the round's compute
(as in ``bench_scale.py``), repeated; the median against the target (≤ 8 s on 2 quiet cores).

What it is made of: Python's imports in the driver; the local Ray's start (GCS, dashboard head,
raylet and its agents) while MLflow's store, experiment and parent run are set up on a thread;
Tune's set-up and the trial's worker (a process of its own: Ray, Tune, torch and glth imported)
and its one round; Ray's stop, the end-of-sweep MLflow sync, the summary and the analysis.

``--compare DIR`` runs a second checkout's code (``PYTHONPATH=DIR``) interleaved with this one,
one run each in turn, so that a before/after pair shares the machine's load; every line carries
``os.getloadavg()``.

    .venv/bin/python benchmarks/bench_fixed.py [--repeats 3] [--compare /path/to/old/checkout]
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from bench_scale import TARGETS, fixed_cost, load, mark
from common import REPO, parser


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--compare", type=Path, default=None, help="a second checkout, run interleaved with this one")
    p.set_defaults(repeats=3)
    args = p.parse_args()
    repeats = 1 if args.quick else args.repeats
    arms = {"this checkout": REPO}
    if args.compare is not None:
        arms[f"{args.compare}"] = args.compare.resolve()
    print(f"# fixed cost of glth run: {repeats} run(s) per arm, {os.cpu_count()} cores", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for i in range(repeats):
        for name, root in arms.items():
            env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
            with tempfile.TemporaryDirectory(prefix="glth-bench-fixed-") as tmp:
                r = fixed_cost(Path(tmp), env)
            runs[name].append(r)
            print(
                f"fixed run {i + 1} [{name}]: {r['fixed_s']:.1f} s, driver CPU {r['fixed_driver_cpu']:.1f} s [{load()}]",
                flush=True,
            )
    for name, rs in runs.items():
        median = statistics.median(r["fixed_s"] for r in rs)
        print(
            f"fixed cost of glth run [{name}] (1 trial, 1 step, fresh storage and MLflow): median {median:.1f} s "
            f"of {len(rs)} {mark(median, TARGETS['fixed'])}; driver CPU "
            f"{statistics.median(r['fixed_driver_cpu'] for r in rs):.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
