"""Strong lottery ticket by construction on MNIST (Pensia et al. 2020's 784-500-10 experiment).

Trains a bias-free 784-500-10 ReLU MLP with glth (cached under bench-results/, reused on later runs), builds a random network and the mask
that makes it compute the target (each weight a subset-sum of n random products, solved exactly), and
prints one ``name: value`` line per number, next to the public anchors:
    kept/target 9.39× (3.73M of 8.34M kept), target accuracy 97.19 %, 21.5 h on 36 cores (MIP solver).

    .venv/bin/python benchmarks/bench_construct.py [--data-dir ../shared/data/mnist] [--variants]

Default runs: signs=iid (the paper's network: n=21 neurons per input, both sign halves share them) and
signs=paired (21 candidates per half), both uniform/min_error. --variants adds the "fewest" objective
and the hyperbolic draw (paired+fewest is the slow one: ~2 min of solving on an idle core).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from glth_core.data import load
from glth_core.models import build as build_model
from glth_core.strong import construct, evaluate, output_error
from glth_core.strong.construct_run import ConstructConfig, train_target
from glth_core.train import TrainConfig

ANCHOR_KEPT_PER_TARGET = 9.39
ANCHOR_SECONDS = 21.5 * 3600
ANCHOR_CORES = 36
REPO = Path(__file__).resolve().parents[1]


def report(target, built, data) -> None:
    t0 = time.perf_counter()
    acc_t, loss_t = evaluate(target, data.test_x, data.test_y)
    acc_p, loss_p = evaluate(built.pruned_net, data.test_x, data.test_y)
    out_max, out_mean = output_error(target, built.pruned_net, data.test_x)
    eval_seconds = time.perf_counter() - t0
    speed = ANCHOR_SECONDS / built.wall_seconds
    cores = torch.get_num_threads()
    lines = {
        "target test accuracy": f"{100 * acc_t:.2f} %  (loss {loss_t:.4f}; anchor target 97.19 %)",
        "pruned random net test accuracy": f"{100 * acc_p:.2f} %  (loss {loss_p:.4f}; 10,000 test images)",
        "accuracy difference (pruned - target)": f"{100 * (acc_p - acc_t):+.2f} points  (acceptance: within 0.1)",
        "max weight error": f"{built.max_weight_error:.3e}  (epsilon {built.epsilon})",
        "mean weight error": f"{built.mean_weight_error:.3e}",
        "weights over epsilon": f"{built.over_epsilon} of {built.target_weights} "
        f"({built.over_epsilon / built.target_weights:.2e})",
        "output error max / mean |logit diff|": f"{out_max:.3e} / {out_mean:.3e}",
        "kept weights": f"{built.kept_weights:,}  (u {sum(r.kept_u for r in built.layers):,} + "
        f"v {sum(r.kept_v for r in built.layers):,})",
        "kept / target": f"{built.kept_per_target:.2f}×  (anchor {ANCHOR_KEPT_PER_TARGET}×)",
        "random weights / target": f"{built.random_per_target:.2f}×  ({built.random_weights:,} in random_net, "
        f"expansion layers dense)",
        "candidate weights / target": f"{built.candidate_per_target:.2f}×  ({built.candidate_weights:,}: "
        f"block-diagonal u's + all v's)",
        "construction wall time": f"{built.wall_seconds:.1f} s  (subset-sum solve {built.solve_seconds:.1f} s, "
        f"{cores} threads)",
        "speed vs anchor": f"{speed:,.0f}× faster wall-clock than 21.5 h "
        f"({speed * ANCHOR_CORES / cores:,.0f}× per core)",
        "evaluation time": f"{eval_seconds:.1f} s",
    }
    print(
        f"--- signs={built.signs}, {built.distribution}, objective={built.objective}: n={built.n}, "
        f"epsilon={built.epsilon}, seed {built.seed}"
    )
    for layer in built.layers:
        print(
            f"layer {layer.target_index} ({layer.d_in}->{layer.d_out}): kept u {layer.kept_u:,}, v {layer.kept_v:,}; "
            f"max err {layer.max_weight_error:.3e}, over eps {layer.over_epsilon}; "
            f"negative half {'solved' if layer.negative_half else 'empty (input >= 0)'}"
        )
    for name, value in lines.items():
        print(f"{name}: {value}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument(
        "--target",
        help="state_dict to load, or where to save the one trained "
        "(default bench-results/mnist_mlp_500_nobias_e{epochs}_s{seed}.pt)",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=0.01)
    parser.add_argument("--n", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", action="store_true", help="also the 'fewest' objective and the hyperbolic draw")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = load("mnist", args.data_dir)
    config = ConstructConfig(
        dataset="mnist",
        data_dir=args.data_dir,
        epsilon=args.epsilon,
        n=args.n,
        seed=args.seed,
        train=TrainConfig(epochs=args.epochs, batch_size=128, optimizer="adam", lr=1e-3),
    )
    path = Path(args.target or REPO / "bench-results" / f"mnist_mlp_500_nobias_e{args.epochs}_s{args.seed}.pt")
    if path.exists():
        target = build_model(config.model, data.input_shape, data.num_classes)
        target.load_state_dict(torch.load(path))
        print(f"target: loaded {path}")
    else:
        target, record = train_target(config, data)  # glth's own training: the dense round of a trajectory
        print(
            f"target: trained by glth ({args.epochs} epochs of Adam, seed {args.seed}), test accuracy "
            f"{100 * record['test_accuracy']:.2f} %, {record['wall_seconds']:.1f} s"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(target.state_dict(), path)
        print(f"target: saved {path}")
    print(
        f"target ready: {sum(p.numel() for p in target.parameters()):,} weights, {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    # iid: the paper's network (n u's per input, shared by both sign halves); paired: n candidates per half
    runs = [("iid", "uniform", "min_error"), ("paired", "uniform", "min_error")]
    if args.variants:
        runs += [
            ("iid", "uniform", "fewest"),
            ("paired", "uniform", "fewest"),
            ("iid", "hyperbolic", "min_error"),
            ("paired", "hyperbolic", "min_error"),
        ]
    for signs, distribution, objective in runs:
        built = construct(
            target,
            epsilon=args.epsilon,
            n=args.n,
            signs=signs,
            distribution=distribution,
            objective=objective,
            seed=args.seed,
        )
        report(target, built, data)
        del built
    print(f"benchmark total: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
