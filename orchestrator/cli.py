"""The `glth` command: run sweeps, read their results, query MLflow, backfill it.

Bad input anywhere (arguments, spec, dataset paths) prints ONE line naming the problem and
exits with status 2 before Ray starts or anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from importlib import resources
from pathlib import Path

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """Anything the user can fix; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise BadInput(f"{self.prog}: {message}")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="glth-runs", help="results directory (default ./glth-runs)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--address", default=None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--force", action="store_true", help="recompute trials that already have complete results")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="glth", description="Generalized Lottery Ticket Hypothesis sweeps on Ray Tune")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run a sweep spec (resumes an interrupted one)")
    p.add_argument("spec")
    p.add_argument("--resume", action="store_true", help="resume an interrupted sweep (rerunning the same spec also does)")
    p.add_argument("--profile", default=None, help="merge the spec's profiles.<NAME> over it (e.g. quick = CPU-sized, full = GPU cluster)")
    _add_run_args(p)

    p = sub.add_parser("demo", help="a small built-in sweep on digits: table and plot")
    _add_run_args(p)

    p = sub.add_parser("results", help="mean ± std over seeds per dictionary × τ × round")
    p.add_argument("sweep", help="sweep id (or a unique prefix, or the spec's name)")
    p.add_argument("--out", default="glth-runs")
    p.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    p.add_argument("--delta", type=float, default=0.5, help="winning-ticket tolerance in accuracy points (default 0.5)")
    p.add_argument("--analysis", action="store_true", help="csv/json: print the per-curve analysis (threshold, peak, overlap) instead of the rounds")
    p.add_argument("--tracking-uri", default=None, help="MLflow store the analysis is logged to (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")

    p = sub.add_parser("plot", help="the paper's figures for a sweep: PNGs under DIR/<sweep_id>/plots/, logged to MLflow")
    p.add_argument("sweep", help="sweep id (or a unique prefix, or the spec's name)")
    p.add_argument("--out", default="glth-runs")
    p.add_argument("--round", type=int, default=None, help="round of the kept-coordinate maps (default: each curve's winning-ticket round)")
    p.add_argument("--log-remaining", action="store_true", help="x-axis: remaining fraction on a log scale")
    p.add_argument("--title", default=None, help="title of the accuracy figure (default: model and dataset)")
    p.add_argument("--delta", type=float, default=0.5, help="winning-ticket tolerance in accuracy points (default 0.5)")
    p.add_argument("--tracking-uri", default=None)

    p = sub.add_parser("export", help="one round's ticket as a plain PyTorch module (pruned where the dictionary allows)")
    p.add_argument("sweep", help="sweep id (or a unique prefix, or the spec's name)")
    p.add_argument("--trial", required=True, help="trial id (or a unique prefix)")
    p.add_argument("--round", type=int, default=None, help="round to export (default: the trial's last)")
    p.add_argument("-o", "--output", required=True, help="where to torch.save the module (metadata goes to the same name .json)")
    p.add_argument("--bench", action="store_true", help="time dense vs exported on test images; log to the trial's MLflow run")
    p.add_argument("--images", type=int, default=1000, help="--bench batch size (default 1000 test images)")
    p.add_argument("--repeats", type=int, default=30, help="--bench repeats (the median is reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the export and the bench (default 1)")
    p.add_argument("--out", default="glth-runs")
    p.add_argument("--tracking-uri", default=None)

    p = sub.add_parser("runs", help="query MLflow child runs (mlflow.search_runs filter syntax)")
    p.add_argument("--filter", default="", help="e.g. \"params.tau = '0.2'\"")
    p.add_argument("--experiment", default="glth")
    p.add_argument("--tracking-uri", default=None)

    p = sub.add_parser("construct", help="build one constructive strong ticket (SubsetSum) and report it")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epsilon", type=float, default=0.01)
    p.add_argument("--n", type=int, default=None, help="candidates per weight (default c·log2(1/ε))")
    p.add_argument("--c", type=float, default=3.0)
    p.add_argument("--distribution", default="uniform", choices=["uniform", "hyperbolic"])
    p.add_argument("--epochs", type=int, default=3, help="target training epochs (Adam, lr 1e-3, batch 128)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("sync", help="backfill MLflow from a sweep's Parquet rows (exactly once)")
    p.add_argument("sweep")
    p.add_argument("--out", default="glth-runs")
    p.add_argument("--tracking-uri", default=None)

    p = sub.add_parser("submit", help="run a sweep spec as a Ray Job on a cluster; prints the job id")
    p.add_argument("spec")
    p.add_argument("--out", default="glth-runs", help="results directory on the cluster (relative: made absolute here)")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI for the job (default as `glth run` here)")
    _add_job_args(p)

    p = sub.add_parser("status", help="a Ray Job's status, or every job of the cluster")
    p.add_argument("job", nargs="?", help="job id (default: list the cluster's jobs)")
    _add_job_args(p)

    p = sub.add_parser("logs", help="a Ray Job's logs")
    p.add_argument("job")
    p.add_argument("--follow", action="store_true", help="stream the logs until the job ends; exit 0 only if it succeeded")
    _add_job_args(p)
    return parser


def _add_job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="the Ray dashboard, http://HEAD:8265 (default $RAY_ADDRESS)")
    p.add_argument("--token-file", default=None, help="Ray auth token (default $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH)")


def find_sweep_dir(out: str, key: str) -> Path:
    root = Path(out).expanduser()
    if not root.is_dir():
        raise BadInput(f"--out: {root} does not exist")
    dirs = sorted(d for d in root.iterdir() if (d / "spec.yaml").is_file())
    exact = [d for d in dirs if d.name == key]
    match = exact or [d for d in dirs if d.name.startswith(key)]
    if len(match) != 1:
        names = ", ".join(d.name for d in dirs) or "none"
        why = "is ambiguous" if match else "matches no sweep"
        raise BadInput(f"sweep: {key!r} {why} under {root}; sweeps: {names}")
    return match[0]


def _load_sweep(path: Path, profile: str | None = None):
    from orchestrator import spec

    try:
        return spec.load(path, profile=profile)
    except spec.SpecError as e:
        raise BadInput(str(e)) from None


def cmd_run(args, spec_path: Path) -> int:
    sweep = _load_sweep(spec_path, getattr(args, "profile", None))  # all validation before Ray starts
    from orchestrator.results import construct_summary, render, render_construct, summarize
    from orchestrator.sinks import parquet
    from orchestrator.sweep import run_sweep

    result = run_sweep(sweep, args.out, args.tracking_uri, args.address, force=args.force)
    rows = parquet.read_rounds(Path(args.out).expanduser().resolve(), sweep.sweep_id)
    if not rows.empty and sweep.spec.kind == "construct":
        print(render_construct(construct_summary(rows)))
    elif not rows.empty:
        print(render(summarize(rows)))
        _print_analysis(rows, result.out_dir, sweep.spec.experiment, args.tracking_uri)
    print(f"sweep {result.sweep_id}: {result.computed} trials computed, {result.reused} reused; rows in {result.out_dir / 'rounds'}")
    if result.failed:
        print(f"failed trials: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args) -> int:
    spec_file = resources.files("orchestrator") / "specs" / "demo.yaml"
    with resources.as_file(spec_file) as path:
        code = cmd_run(args, path)
    sweep = _load_sweep(Path(str(spec_file)))
    from orchestrator import plots
    from orchestrator.sinks import parquet

    rows = parquet.read_rounds(Path(args.out).expanduser().resolve(), sweep.sweep_id)
    for png in plots.plot_sweep(rows, Path(args.out).expanduser().resolve() / sweep.sweep_id):
        print(f"plot: {png}")
    return code


def _print_analysis(rows, sweep_dir: Path, experiment: str, tracking_uri: str | None, delta: float = 0.005) -> None:
    """After a run: the per-curve analysis table; analysis.parquet and the MLflow parent run get it too."""
    from orchestrator import analysis
    from orchestrator.sweep import default_tracking_uri

    a = analysis.publish(rows, sweep_dir, sweep_dir.name, experiment, tracking_uri or default_tracking_uri(), delta)
    print(f"\nper curve (winning ticket: largest compression with mean accuracy ≥ round 0 − {100 * delta:g} points):")
    print(analysis.render_curves(a.curves))


def cmd_results(args) -> int:
    from orchestrator import analysis
    from orchestrator.results import render
    from orchestrator.sinks import parquet
    from orchestrator.sweep import default_tracking_uri

    d = find_sweep_dir(args.out, args.sweep)
    rows = parquet.read_rounds(d.parent.resolve(), d.name)
    if rows.empty:
        raise BadInput(f"sweep: {d.name} has no rows yet")
    if (rows["kind"] == "construct").all():
        from orchestrator.results import construct_summary, render_construct

        print(render_construct(construct_summary(rows), args.format))
        return 0
    delta = args.delta / 100.0
    a = analysis.publish(rows, d.resolve(), d.name, analysis.experiment_of(d), args.tracking_uri or default_tracking_uri(), delta)
    if args.analysis and args.format in ("csv", "json"):
        print(render(a.curves, args.format))
        return 0
    print(render(a.rounds, args.format))
    if args.format in ("table", "markdown"):
        print(f"\nper curve (winning ticket: largest compression with mean accuracy ≥ round 0 − {args.delta:g} points; "
              f"jaccard: mask overlap across seeds):")
        print(analysis.render_curves(a.curves, args.format))
    return 0


def cmd_plot(args) -> int:
    from orchestrator import analysis, plots
    from orchestrator.sinks import mlflow as mlflow_sink
    from orchestrator.sinks import parquet
    from orchestrator.sweep import default_tracking_uri

    d = find_sweep_dir(args.out, args.sweep)
    rows = parquet.read_rounds(d.parent.resolve(), d.name)
    if rows.empty:
        raise BadInput(f"sweep: {d.name} has no rows yet")
    pngs = plots.plot_sweep(rows, d.resolve(), args.round, args.log_remaining, args.delta / 100.0, title=args.title)
    for png in pngs:
        print(f"plot: {png}")
    uri = args.tracking_uri or default_tracking_uri()
    try:
        if plots.log_to_mlflow(pngs, d.name, analysis.experiment_of(d), uri) is None:
            print(f"[glth] no MLflow parent run for {d.name} at {uri}; plots not logged", file=sys.stderr)
    except mlflow_sink.MlflowUnavailable as e:
        print(f"[glth] MLflow unavailable ({e}); plots not logged", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from orchestrator import export_cmd
    from orchestrator.sinks import parquet
    from orchestrator.sweep import default_tracking_uri

    d = find_sweep_dir(args.out, args.sweep)
    rows = parquet.read_rounds(d.parent.resolve(), d.name)
    if rows.empty:
        raise BadInput(f"sweep: {d.name} has no rows yet")
    try:
        export_cmd.export_trial(d.resolve(), rows, args.trial, args.round, Path(args.output), bench=args.bench,
                                bench_images=args.images, repeats=args.repeats, threads=args.threads,
                                tracking_uri=args.tracking_uri or default_tracking_uri())
    except export_cmd.ExportError as e:
        raise BadInput(str(e)) from None
    return 0


def cmd_runs(args) -> int:
    from orchestrator.sinks import mlflow as mlflow_sink
    from orchestrator.sweep import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    try:
        df = mlflow_sink.search_children(uri, args.experiment, args.filter)
    except mlflow_sink.BadFilter as e:
        raise BadInput(str(e) if str(e).startswith("--experiment") else f"--filter: {e}") from None
    except mlflow_sink.MlflowUnavailable as e:
        print(f"glth: MLflow at {uri} is unavailable: {e}", file=sys.stderr)
        return 1
    print(df.to_string(index=False) if not df.empty else "no matching runs")
    return 0


def cmd_construct(args) -> int:
    """One construction in this process (no Ray): train the target, build, evaluate, report."""
    import dataclasses

    from glth_core.strong.construct_run import TARGET_TRAIN, ConstructConfig, ConstructRun

    try:
        cfg = ConstructConfig(dataset=args.dataset, data_dir=args.data_dir, epsilon=args.epsilon, n=args.n, c=args.c,
                              distribution=args.distribution, seed=args.seed,
                              train=dataclasses.replace(TARGET_TRAIN, epochs=args.epochs))
        from glth_core import data as datasets

        datasets.check(cfg.dataset, cfg.data_dir)
    except ValueError as e:
        raise BadInput(str(e).splitlines()[0]) from None
    print(f"training the {cfg.model} target on {cfg.dataset}, then constructing (ε={cfg.epsilon:g}) …", file=sys.stderr)
    record = ConstructRun(cfg).run_round()
    for key in ("target_accuracy", "test_accuracy", "accuracy_gap", "max_weight_error", "mean_weight_error",
                "max_output_error", "mean_output_error", "kept", "target_weights", "kept_per_target", "total",
                "random_per_target", "n", "construct_seconds", "wall_seconds"):
        value = record[key]
        print(f"{key:>18}: {value:.6g}" if isinstance(value, float) else f"{key:>18}: {value}")
    return 0


def cmd_sync(args) -> int:
    from orchestrator.sweep import default_tracking_uri, sync_mlflow

    d = find_sweep_dir(args.out, args.sweep)
    sweep = _load_sweep(d / "spec.yaml")
    counts = sync_mlflow(sweep, d.parent.resolve(), args.tracking_uri or default_tracking_uri())
    print(f"sync {d.name}: {counts}")
    return 0 if counts is not None else 1


@contextlib.contextmanager
def _jobs_api():
    """Address, token and job-id problems from orchestrator.jobs are bad input too."""
    from orchestrator.jobs import JobsError

    try:
        yield
    except JobsError as e:
        raise BadInput(str(e)) from None


def cmd_submit(args) -> int:
    sweep = _load_sweep(Path(args.spec))  # a bad spec never reaches the cluster
    from orchestrator.jobs import Cluster

    with _jobs_api():
        cluster = Cluster(args.address, args.token_file)
        job_id, out = cluster.submit(Path(args.spec), sweep.sweep_id, args.out, args.tracking_uri)
    print(job_id)
    where = f" --address {cluster.address}" if args.address else ""
    print(f"glth: sweep {sweep.sweep_id} submitted; rows go to {out}/{sweep.sweep_id} on the cluster. "
          f"Follow it: glth status {job_id}{where}; glth logs {job_id} --follow{where}", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    from orchestrator.jobs import Cluster, describe

    with _jobs_api():
        cluster = Cluster(args.address, args.token_file)
        print(describe(cluster.info(args.job)) if args.job else cluster.table())
    return 0


def cmd_logs(args) -> int:
    from orchestrator.jobs import Cluster, describe, status_of

    with _jobs_api():
        cluster = Cluster(args.address, args.token_file)
        if not args.follow:
            print(cluster.logs(args.job), end="")
            return 0
        try:
            info = cluster.follow(args.job, lambda chunk: print(chunk, end="", flush=True))
        except KeyboardInterrupt:
            print(f"\nglth: stopped following; job {args.job} keeps running", file=sys.stderr)
            return 130
    print(f"glth: {describe(info)}", file=sys.stderr)
    return 0 if status_of(info) == "SUCCEEDED" else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "run":
            return cmd_run(args, Path(args.spec))
        commands = {"construct": cmd_construct, "demo": cmd_demo, "results": cmd_results, "runs": cmd_runs, "sync": cmd_sync,
                    "plot": cmd_plot, "export": cmd_export,
                    "submit": cmd_submit, "status": cmd_status, "logs": cmd_logs}
        return commands[args.command](args)
    except BadInput as e:
        print(f"glth: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
