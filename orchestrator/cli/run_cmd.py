"""``glth run`` and ``glth demo``: validate everything, then run (or, with --dry-run, only plan) a sweep.

Before Ray starts, one line and exit 2 for: the spec and its overrides, a GPU spec that a local
Ray could never run here (``check_gpu_here``), and the storage (``--storage`` > the spec's
``storage:`` > ``$GLTH_STORAGE`` > ``./glth-runs``; ``Storage.check_writable``). On a cluster
(``--address`` / ``$RAY_ADDRESS``) every live node must then read back a file the driver wrote
there (``nodes_reach.check_nodes_reach``), before any trial.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

from orchestrator import defaults
from orchestrator.cli.common import (
    EXIT_ALL_FAILED,
    EXIT_STATUSES,
    BadInput,
    load_sweep,
    outputs_dir,
    read_rows,
    resolve_storage,
    storage_setting,
    sweep_lease,
)


def add_parsers(sub, parents) -> None:
    shared = [parents["storage"], parents["tracking"], parents["analysis"]]
    p = sub.add_parser(
        "run",
        parents=shared,
        help="run a sweep spec (rerunning it resumes; finished trials are kept)",
        epilog=EXIT_STATUSES,
    )
    p.add_argument("spec")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="PATH=VALUE",
        help="spec overrides, validated like the YAML and recorded in the sweep's spec.yaml: "
        "tau=0.1,0.2 (a list = a grid axis), seeds=0-4, train.epochs=3, dictionary.0.basis=pca",
    )
    p.add_argument(
        "--profile",
        default=None,
        help="merge the spec's profiles.<NAME> over it (e.g. quick = CPU-sized, full = GPU cluster)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="require that this sweep has been started (exit 2 if its directory is missing); "
        "rerunning a spec resumes it with or without this flag",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the expanded trials (varying axes, done / partial / pending, rounds left) and what a run "
        "would compute; starts no Ray and writes nothing",
    )
    _ray_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo", parents=shared, help="a small built-in sweep on digits: table and plot", epilog=EXIT_STATUSES
    )
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
    # all validation before Ray starts: overrides, spec, datasets, a GPU to run on, the storage
    # (resolved and checked writable), and --resume's precondition
    sweep = load_sweep(spec_path, getattr(args, "profile", None), items)
    if not args.dry_run:  # a dry run plans a GPU sweep anywhere
        check_gpu_here(sweep, args.address)
    storage = resolve_storage(args.storage, sweep.spec.storage, check=True)
    setting = storage_setting(args.storage, sweep.spec.storage)[1]
    if getattr(args, "resume", False) and not storage.exists(f"{sweep.sweep_id}/spec.yaml"):
        raise BadInput(
            f"--resume: no sweep {sweep.sweep_id} under {storage.uri} to resume (without --resume, glth run starts it)"
        )
    if args.dry_run:
        print(dry_run_text(sweep, storage, args.force))
        return 0

    from orchestrator import shared_data
    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet_compact, parquet_writer
    from orchestrator.sweep import run_sweep

    where = SweepDir(storage, sweep.sweep_id)  # the one handle on the sweep's directory, from here down
    try:
        parquet_compact.min_trials()
        parquet_writer.flush_seconds()
        shared_data.enabled()
    except ValueError as e:
        raise BadInput(str(e)) from None
    with sweep_lease(where):  # one driver per sweep: refused before Ray starts
        if args.address or os.environ.get("RAY_ADDRESS"):  # a cluster: first, can every node reach the storage?
            from orchestrator.cli.nodes_reach import check_nodes_reach
            from orchestrator.ray_local import ray_session

            with ray_session(args.address):
                check_nodes_reach(storage, setting)
                result = run_sweep(sweep, where, args.tracking_uri, args.address, force=args.force)
        else:
            result = run_sweep(sweep, where, args.tracking_uri, args.address, force=args.force)
    from orchestrator.cli.summary import has_own_summary, render_failures, render_results

    rows = read_rows(where, need_rows=False)
    analysed = not rows.empty and (rows["status"] == "ok").any()  # failed trials' rows are never analysed
    if not rows.empty or result.failed:
        print(render_results(rows, delta=args.delta / 100.0, select_on=args.select_on))
        if analysed and not has_own_summary(rows):
            _print_analysis(rows, where, sweep.spec.experiment, result.tracking_uri, args.delta, args.select_on)
    if result.failed:
        print(f"\n{render_failures(result.failed, rows)}")
    print(
        f"sweep {result.sweep_id}: {result.computed} trials computed, {result.reused} reused; rows in {result.out_dir}/rounds"
    )
    if result.mlflow_url:
        print(f"MLflow runs: {result.mlflow_url}")
    elif result.experiment_id is not None:
        print(
            f"MLflow: mlflow ui --backend-store-uri {result.tracking_uri}  (then the experiment's runs, "
            f"#/experiments/{result.experiment_id}/runs?workflowType=machine_learning)"
        )
    if result.failed:
        print(f"failed trials: {', '.join(result.failed)}", file=sys.stderr)
        return EXIT_ALL_FAILED if len(result.failed) == len(sweep.trials) else 1
    return 0


def check_gpu_here(sweep, address: str | None) -> None:
    """A GPU spec (``device: cuda``, ``resources.gpu > 0``) for a local Ray on a machine whose torch
    sees no CUDA GPU is refused here, in one line (a cluster's GPUs are the cluster's business;
    ``device: auto`` picks per worker)."""
    spec = sweep.spec
    if address or os.environ.get("RAY_ADDRESS") or (spec.device != "cuda" and not spec.resources.gpu > 0):
        return
    import torch

    if torch.cuda.is_available():
        return
    here = f"this machine has no CUDA GPU (torch {torch.__version__} sees none) and no --address names a cluster"
    if spec.device == "cuda":
        raise BadInput(f"device: cuda: {here}; use device: cpu or auto, or run on a cluster with --address")
    raise BadInput(
        f"resources.gpu: {spec.resources.gpu:g}: {here} (a local Ray would never schedule the trials); "
        f"use resources.gpu: 0, or run on a cluster with --address"
    )


def _print_analysis(
    rows, sweep_dir, experiment: str, tracking_uri: str | None, delta_points: float, select_on: str = "val"
) -> None:
    """After a run: the per-curve analysis table; analysis.parquet (``outputs_dir``) and the MLflow
    parent run get it too."""
    from orchestrator import analysis, analysis_report
    from orchestrator.results import THRESHOLD_RULE

    a = analysis.publish(
        rows,
        sweep_dir,
        experiment,
        defaults.tracking_uri(tracking_uri),
        delta_points / 100.0,
        select_on,
        out_dir=outputs_dir(sweep_dir),
    )
    print(f"\n{THRESHOLD_RULE.format(delta=delta_points, split=select_on)}:")
    print(analysis_report.render_curves(a.curves))


def cmd_demo(args) -> int:
    spec_file = resources.files("orchestrator") / "specs" / "demo.yaml"
    with resources.as_file(spec_file) as path:
        code = cmd_run(args, path)
        if args.dry_run:
            return code
        sweep = load_sweep(path)
    from orchestrator import plots
    from orchestrator.layout import SweepDir

    where = SweepDir(resolve_storage(args.storage, sweep.spec.storage), sweep.sweep_id)
    out = outputs_dir(where) / "plots"
    for png in plots.plot_sweep(read_rows(where, need_rows=False), where, out_dir=out):
        print(f"plot: {png}")
    return code


# -- a cluster: every node must reach the storage ---------------------------------------------
def stored_rows(sweep, storage, force: bool):
    """The rows a run would start from: this sweep's, plus those of trials complete in another
    sweep on the same storage (a run copies those in); none with --force."""
    import pandas as pd

    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet

    if force or not storage.exists():
        return pd.DataFrame(columns=["trial_id", "round", "status"])
    here = SweepDir(storage, sweep.sweep_id)
    frames = [parquet.read_rounds(here, skip_damaged=True)]
    wanted = {t.trial_id for t in sweep.trials}
    for other in here.siblings():
        complete = parquet.completed_trials(other, sweep.rounds) & wanted
        if complete:
            df = parquet.read_rounds(other, skip_damaged=True)
            frames.append(df[df["trial_id"].isin(complete)])
    return pd.concat([f for f in frames if not f.empty] or frames[:1], ignore_index=True)


def dry_run_text(sweep, storage, force: bool) -> str:
    """The plan of a run; ``storage`` the sweep's ``Storage``."""
    from orchestrator import compute, dry_run

    rows = stored_rows(sweep, storage, force)
    plan = dry_run.plan([t.plan_entry() for t in sweep.trials], rows)
    head = (
        f"sweep {sweep.sweep_id}: {len(sweep.trials)} trials, up to {sweep.rounds} rounds each → "
        f"{storage.uri_of(sweep.sweep_id)}\n(dry run: Ray not started, nothing written)\n"
    )
    text = head + dry_run.render(plan, dry_run.seconds_per_round(rows), sweep.spec.max_concurrent)
    left = dict(zip(plan["trial_id"], plan["rounds_left"].where(plan["status"] != "done", 0)))
    return "\n".join(
        [text, *compute.describe([(t.config, int(left[t.trial_id])) for t in sweep.trials], sweep.spec.device)]
    )
