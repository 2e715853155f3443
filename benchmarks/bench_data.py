"""What a trial pays for its dataset: its own load, or the node's shared copy (``orchestrator.shared_data``).

In a local Ray (2 CPUs), one probe actor (1 CPU, ``--threads`` torch threads, as a trial's worker)
times, for each dataset, wall clock (``--clock`` is ignored), median of ``--repeats`` after one
untimed own load (the files then in the page cache for every arm):

* **own**: ``glth_core.data.load_for`` — what every trial did before, and does with
  ``GLTH_SHARE_DATASETS=0`` or as a library call (read the files, split, normalize);
* **first on the node**: ``shared_data.dataset_for`` the first time (the node's reader reads and
  finishes it, then the probe maps it) — once a sweep per node and dataset key;
* **new worker**: ``dataset_for`` with the worker's memo empty (the reader has it: the probe maps
  the object, zero-copy) — a trial in a fresh or restarted worker;
* **reused worker**: ``dataset_for`` again (the worker's memo) — every later trial of a reused worker;

and the probe's own memory (USS) that holding the dataset adds, own vs shared. Datasets: digits,
and MNIST and approximate CIFAR-10 where ``../shared/data`` has them (``--quick``: digits and MNIST).

    .venv/bin/python benchmarks/bench_data.py [--quick] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import os
import statistics
import time
from types import SimpleNamespace

from common import REPO, parser

SHARED = REPO.parent / "shared" / "data"
DATASETS = {"digits": None, "mnist": SHARED / "mnist", "cifar10": SHARED / "cifar10-approx"}


def probe_class():
    import ray

    @ray.remote(num_cpus=1)
    class Probe:
        def __init__(self, threads: int):
            import torch

            torch.set_num_threads(threads)

        def measure(self, config, hub, repeats: int) -> dict:
            import gc

            import psutil

            from glth_core import data as datasets
            from orchestrator import shared_data

            me = psutil.Process()

            def timed(fn) -> float:
                t0 = time.perf_counter()
                fn()
                return time.perf_counter() - t0

            def held(fn) -> float:  # MB of this process's own memory while it holds fn()'s dataset
                gc.collect()
                before = me.memory_full_info().uss
                d = fn()
                added = (me.memory_full_info().uss - before) / 2**20
                del d
                return added

            def fresh():
                shared_data._memo.clear()
                return shared_data.dataset_for(config, hub)

            datasets.load_for(config)  # the files in the page cache for every arm alike
            first = timed(fresh)
            own = [timed(lambda: datasets.load_for(config)) for _ in range(repeats)]
            new = [timed(fresh) for _ in range(repeats)]
            reused = [timed(lambda: shared_data.dataset_for(config, hub)) for _ in range(repeats)]
            shared_data._memo.clear()
            return {
                "first": first,
                "own": statistics.median(own),
                "new": statistics.median(new),
                "reused": statistics.median(reused),
                "own_mb": held(lambda: datasets.load_for(config)),
                "shared_mb": held(fresh),
            }

    return Probe


def main() -> None:
    p = parser(__doc__)
    args = p.parse_args()
    import ray

    from orchestrator import shared_data
    from orchestrator.ray_local import ray_session

    names = [n for n, d in DATASETS.items() if d is None or d.is_dir()]
    if args.quick:
        names = [n for n in names if n != "cifar10"]
    with ray_session(None, num_cpus=2), shared_data.session() as hub:
        probe = probe_class().remote(args.threads)
        for name in names:
            d = DATASETS[name]
            config = SimpleNamespace(
                dataset=name,
                data_dir=None if d is None else str(d),
                val_fraction=0.1,
                split_seed=0,
                normalize="train",
                device="cpu",
            )
            r = ray.get(probe.measure.remote(config, hub, args.repeats))
            print(
                f"data {name}: own load {r['own'] * 1e3:.1f} ms; shared: first on the node {r['first'] * 1e3:.1f} ms, "
                f"new worker {r['new'] * 1e3:.2f} ms ({r['own'] / r['new']:.0f}x), reused worker "
                f"{r['reused'] * 1e3:.3f} ms; worker memory held {r['own_mb']:.1f} MB own vs {r['shared_mb']:.1f} MB "
                f"shared; load {'{:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())}",
                flush=True,
            )


if __name__ == "__main__":
    main()
