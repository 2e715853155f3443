"""``glth run`` and ``glth demo``: validate everything, then run (or, with --dry-run, only plan) a sweep."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from orchestrator import defaults
from orchestrator.results import THRESHOLD_RULE
from orchestrator.cli.common import BadInput, load_sweep, read_rows
from orchestrator.cli.summary import has_own_summary, render_results


def add_parsers(sub, parents) -> None:
    shared = [parents["storage"], parents["tracking"], parents["analysis"]]
    p = sub.add_parser("run", parents=shared, help="run a sweep spec (rerunning it resumes; finished trials are kept)")
    p.add_argument("spec")
    p.add_argument("overrides", nargs="*", metavar="PATH=VALUE",
                   help="spec overrides, validated like the YAML and recorded in the sweep's spec.yaml: "
                        "tau=0.1,0.2 (a list = a grid axis), seeds=0-4, train.epochs=3, dictionary.0.basis=pca")
    p.add_argument("--profile", default=None, help="merge the spec's profiles.<NAME> over it (e.g. quick = CPU-sized, full = GPU cluster)")
    p.add_argument("--resume", action="store_true",
                   help="require that this sweep has been started (exit 2 if its directory is missing); "
                        "rerunning a spec resumes it with or without this flag")
    p.add_argument("--dry-run", action="store_true",
                   help="print the expanded trials (varying axes, done / partial / pending, rounds left) and what a run "
                        "would compute; starts no Ray and writes nothing")
    _ray_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", parents=shared, help="a small built-in sweep on digits: table and plot")
    p.add_argument("--dry-run", action="store_true", help="as for run: the plan only")
    _ray_options(p)
    p.set_defaults(func=cmd_demo)


def _ray_options(p) -> None:
    p.add_argument("--address", default=None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--force", action="store_true", help="recompute trials that already have complete results")


def cmd_run(args, spec_path: Path | None = None) -> int:
    spec_path = spec_path or Path(args.spec)
    items = getattr(args, "overrides", None) or []
    if getattr(args, "resume", False) and args.force:
        raise BadInput("--resume, --force: pick one (--force recomputes every trial from round 0)")
    # all validation before Ray starts: overrides, spec, datasets, and --resume's precondition
    sweep = load_sweep(spec_path, getattr(args, "profile", None), items)
    storage = defaults.storage(args.storage)
    root = Path(storage).expanduser().resolve()
    if getattr(args, "resume", False) and not (root / sweep.sweep_id / "spec.yaml").is_file():
        raise BadInput(f"--resume: no sweep {sweep.sweep_id} under {root} to resume (without --resume, glth run starts it)")
    if args.dry_run:
        print(dry_run_text(sweep, root, args.force))
        return 0

    from orchestrator.sweep import run_sweep

    result = run_sweep(sweep, storage, args.tracking_uri, args.address, force=args.force)
    rows = read_rows(result.out_dir, need_rows=False)
    if not rows.empty:
        print(render_results(rows, delta=args.delta / 100.0, select_on=args.select_on))
        if not has_own_summary(rows):
            _print_analysis(rows, result.out_dir, sweep.spec.experiment, args.tracking_uri, args.delta, args.select_on)
    print(f"sweep {result.sweep_id}: {result.computed} trials computed, {result.reused} reused; rows in {result.out_dir / 'rounds'}")
    if result.failed:
        print(f"failed trials: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0


def _print_analysis(rows, sweep_dir: Path, experiment: str, tracking_uri: str | None, delta_points: float,
                    select_on: str = "val") -> None:
    """After a run: the per-curve analysis table; analysis.parquet and the MLflow parent run get it too."""
    from orchestrator import analysis

    a = analysis.publish(rows, sweep_dir, sweep_dir.name, experiment, defaults.tracking_uri(tracking_uri), delta_points / 100.0,
                         select_on)
    print(f"\n{THRESHOLD_RULE.format(delta=delta_points, split=select_on)}:")
    print(analysis.render_curves(a.curves))


def cmd_demo(args) -> int:
    spec_file = resources.files("orchestrator") / "specs" / "demo.yaml"
    with resources.as_file(spec_file) as path:
        code = cmd_run(args, path)
        if args.dry_run:
            return code
        sweep = load_sweep(path)
    from orchestrator import plots

    sweep_dir = Path(defaults.storage(args.storage)).expanduser().resolve() / sweep.sweep_id
    for png in plots.plot_sweep(read_rows(sweep_dir, need_rows=False), sweep_dir):
        print(f"plot: {png}")
    return code


# -- the dry run ------------------------------------------------------------------------------
def stored_rows(sweep, root: Path, force: bool):
    """The rows a run would start from: this sweep's, plus those of trials complete in another
    sweep under the same storage (a run copies those in); none with --force."""
    import pandas as pd

    from orchestrator.sinks import parquet

    if force or not root.is_dir():
        return pd.DataFrame(columns=["trial_id", "round", "status"])
    frames = [parquet.read_rounds(root, sweep.sweep_id)]
    wanted = {t.trial_id for t in sweep.trials}
    for other in sorted(p for p in root.iterdir() if p.is_dir() and p.name != sweep.sweep_id):
        complete = parquet.completed_trials(root, other.name, sweep.rounds) & wanted
        if complete:
            df = parquet.read_rounds(root, other.name)
            frames.append(df[df["trial_id"].isin(complete)])
    return pd.concat([f for f in frames if not f.empty] or frames[:1], ignore_index=True)


def dry_run_text(sweep, root: Path, force: bool) -> str:
    from orchestrator import dry_run

    rows = stored_rows(sweep, root, force)
    plan = dry_run.plan([t.plan_entry() for t in sweep.trials], rows)
    head = (f"sweep {sweep.sweep_id}: {len(sweep.trials)} trials, up to {sweep.rounds} rounds each → {root / sweep.sweep_id}\n"
            f"(dry run: Ray not started, nothing written)\n")
    return head + dry_run.render(plan, dry_run.seconds_per_round(rows), sweep.spec.max_concurrent)
