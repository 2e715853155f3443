"""K = 8 seeds of one dictionary and τ: ``BatchedTrajectory`` (one vmapped training for all
seeds) vs 8 ``Trajectory`` runs one after another, on the same threads. Two lines per workload:
whole IMP rounds (build, train, evaluate every split, sparsify: what a sweep sees) and the
training alone (``train_batched`` with vmapped or looped forwards vs 8 × ``train``).

On a GPU (``--device cuda``: wall clock, each arm synchronized) the target is 5×: one small model
leaves the device mostly idle, K seeds fill it.

    .venv/bin/python benchmarks/bench_batched.py [--quick] [--k 8] [--threads 1] [--device cuda]
"""

from __future__ import annotations

from common import (
    add_device,
    cifar_or_digits,
    data_label,
    interleaved,
    on_device,
    parser,
    set_threads,
    synchronized,
    verdict,
)

from glth_core import data as datasets
from glth_core.batched import BatchedTrajectory
from glth_core.batched_train import prefers_vmap, train_batched
from glth_core.imp import Trajectory
from glth_core.streams import round_generator
from glth_core.train import TrainConfig, train
from glth_core.trajectory import TrajectoryConfig

TARGET = 2.0
GPU_TARGET = 5.0


def arms(configs, data, rounds: int):
    def batched():
        b = BatchedTrajectory(configs, data=data)
        for _ in range(rounds):
            b.run_round()

    def sequential():
        for c in configs:
            t = Trajectory(c, data=data)
            for _ in range(rounds):
                t.run_round()

    members = [Trajectory(c, data=data) for c in configs]
    first, cfg = members[0], configs[0].train
    x, y = first.inputs["train"], data.train_y

    def train_batch(vectorize: bool):
        return lambda: train_batched(
            first.param,
            [t.state.init for t in members],
            [t.state.mask for t in members],
            x,
            y,
            cfg,
            [round_generator(c.seed, 0) for c in configs],
            vectorize=vectorize,
        )

    def train_each():
        for t, c in zip(members, configs):
            train(t.param, t.state.init, t.state.mask, x, y, cfg, round_generator(c.seed, 0))

    return {
        "batched": batched,
        "sequential": sequential,
        "train vmap": train_batch(True),
        "train loop": train_batch(False),
        "train sequential": train_each,
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--dictionary", default="canonical", choices=["canonical", "random-fast"])
    p.add_argument("--models", nargs="*", default=["mlp_300_100", "cnn_paper"], choices=["mlp_300_100", "cnn_paper"])
    add_device(p)
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    threads = set_threads(args.threads, "wall" if gpu else args.clock)
    target = GPU_TARGET if gpu else TARGET
    repeats = 1 if args.quick else args.repeats
    spec = {"kind": "canonical"} if args.dictionary == "canonical" else {"kind": "random", "method": "fast", "seed": 0}
    cifar = on_device(cifar_or_digits(1000 if args.quick else 2000, 500), args.device)
    workloads = [
        (
            "mlp_300_100",
            on_device(datasets.load("digits"), args.device),
            TrainConfig(epochs=1, batch_size=64, lr=0.05),
            2,
        ),
        ("cnn_paper", cifar, TrainConfig(epochs=1, batch_size=64, lr=0.01), 1 if args.quick else 2),
    ]
    print(
        f"# batched: K = {args.k} seeds, {args.dictionary}, {threads} thread(s), {args.device}, "
        f"{'wall' if gpu else args.clock} clock, median of {repeats}",
        flush=True,
    )
    for model, data, cfg, rounds in [w for w in workloads if w[0] in args.models]:
        configs = [
            TrajectoryConfig(
                dataset=data.name,
                model=model,
                dictionary=spec,
                tau=0.2,
                rounds=rounds,
                seed=s,
                train=cfg,
                device=args.device,
            )
            for s in range(args.k)
        ]
        timers = {name: synchronized(fn, args.device) for name, fn in arms(configs, data, rounds).items()}
        seconds = interleaved(timers, repeats)
        where = f"{model} on {data_label(data)}"
        auto = "vmap" if prefers_vmap(Trajectory(configs[0], data=data).param, data.train_x) else "loop"
        for what, b, s in (
            (f"rounds ({auto}, the default here)", "batched", "sequential"),
            ("training only, vmapped forwards", "train vmap", "train sequential"),
            ("training only, looped forwards", "train loop", "train sequential"),
        ):
            speedup = seconds[s] / seconds[b]
            print(
                f"batched {where} K={args.k} {what}: {speedup:.2f}x faster than sequential "
                f"({seconds[b]:.2f} s vs {seconds[s]:.2f} s) "
                f"{verdict(speedup, target, at_most=False) if what.startswith('rounds') else ''}".rstrip(),
                flush=True,
            )


if __name__ == "__main__":
    main()
