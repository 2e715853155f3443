"""``glth construct``: one constructive strong ticket (SubsetSum) in this process, no Ray."""

from __future__ import annotations

import sys

from orchestrator.cli.common import BadInput

REPORTED = (
    "target_accuracy",
    "test_accuracy",
    "accuracy_gap",
    "max_weight_error",
    "mean_weight_error",
    "max_output_error",
    "mean_output_error",
    "kept",
    "target_weights",
    "kept_per_target",
    "total",
    "random_per_target",
    "n",
    "construct_seconds",
    "wall_seconds",
)


def add_parsers(sub, parents) -> None:
    p = sub.add_parser("construct", help="build one constructive strong ticket (SubsetSum) and report it")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epsilon", type=float, default=0.01)
    p.add_argument("--n", type=int, default=None, help="candidates per weight (default c·log2(1/ε))")
    p.add_argument("--c", type=float, default=3.0)
    p.add_argument("--distribution", default="uniform", choices=["uniform", "hyperbolic"])
    p.add_argument("--epochs", type=int, default=3, help="target training epochs (Adam, lr 1e-3, batch 128)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_construct)


def cmd_construct(args) -> int:
    """Train the target, build, evaluate, report."""
    import dataclasses

    from glth_core.strong.construct_run import TARGET_TRAIN, ConstructConfig, ConstructRun

    try:
        cfg = ConstructConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            epsilon=args.epsilon,
            n=args.n,
            c=args.c,
            distribution=args.distribution,
            seed=args.seed,
            train=dataclasses.replace(TARGET_TRAIN, epochs=args.epochs),
        )
        from glth_core import data as datasets

        datasets.check(cfg.dataset, cfg.data_dir)
    except ValueError as e:
        raise BadInput(str(e).splitlines()[0]) from None
    print(f"training the {cfg.model} target on {cfg.dataset}, then constructing (ε={cfg.epsilon:g}) …", file=sys.stderr)
    record = ConstructRun(cfg).run_round()
    for key in REPORTED:
        value = record[key]
        print(f"{key:>18}: {value:.6g}" if isinstance(value, float) else f"{key:>18}: {value}")
    return 0
