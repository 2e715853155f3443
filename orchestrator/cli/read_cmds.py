"""Commands that read a finished (or running) sweep: results, plot, export, sync, and MLflow's runs.

Each names its sweep by a key that orchestrator.cli.common.find_sweep resolves: the sweep
directory's path (what ``glth run`` printed) or URI (``s3://bucket/prefix/<sweep_id>``), a sweep
id, a unique prefix, or the spec's name (under ``--storage``: a local directory or ``s3://…``).
A sweep on an object store is only read: what results and plot derive from it (analysis.parquet,
plots/) goes to ``./glth-outputs/<sweep_id>/`` (``common.outputs_dir``); a local sweep keeps them in
its own directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator import defaults
from orchestrator.cli.common import EXIT_ALL_FAILED, BadInput, open_sweep, outputs_dir, read_rows, spec_text_of

SWEEP_HELP = (
    "the sweep: its directory (as glth run printed it) or URI (s3://bucket/prefix/<sweep id>), "
    "its id, a unique prefix, or the spec's name (under --storage)"
)


def add_parsers(sub, parents) -> None:
    storage, tracking, analysis = parents["storage"], parents["tracking"], parents["analysis"]

    p = sub.add_parser(
        "results",
        parents=[storage, tracking, analysis],
        help="mean ± std over seeds per dictionary × τ × round, and the per-curve analysis",
    )
    p.add_argument("sweep", help=SWEEP_HELP)
    p.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    p.add_argument(
        "--analysis",
        action="store_true",
        help="csv/json: print the per-curve analysis (threshold, peak, overlap) instead of the rounds",
    )
    p.set_defaults(func=cmd_results)

    p = sub.add_parser(
        "plot",
        parents=[storage, tracking, analysis],
        help="the paper's figures for a sweep: PNGs under <sweep dir>/plots/ (a sweep on S3: "
        "./glth-outputs/<sweep id>/plots/), logged to MLflow",
    )
    p.add_argument("sweep", help=SWEEP_HELP)
    p.add_argument(
        "--round",
        type=int,
        default=None,
        help="round of the kept-coordinate maps (default: each curve's winning-ticket round)",
    )
    p.add_argument("--log-remaining", action="store_true", help="x-axis: remaining fraction on a log scale")
    p.add_argument("--title", default=None, help="title of the accuracy figure (default: model and dataset)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "export",
        parents=[storage, tracking],
        help="one round's ticket as a plain PyTorch module (pruned where the dictionary allows)",
    )
    p.add_argument("sweep", help=SWEEP_HELP)
    p.add_argument("--trial", required=True, help="trial id (or a unique prefix)")
    p.add_argument("--round", type=int, default=None, help="round to export (default: the trial's last)")
    p.add_argument(
        "-o", "--output", required=True, help="where to torch.save the module (metadata goes to the same name .json)"
    )
    p.add_argument(
        "--bench", action="store_true", help="time dense vs exported on test images; log to the trial's MLflow run"
    )
    p.add_argument(
        "--mlflow",
        action="store_true",
        help="also log the exported module as an MLflow model (signature, input example) on the trial's run",
    )
    p.add_argument("--images", type=int, default=1000, help="--bench batch size (default 1000 test images)")
    p.add_argument("--repeats", type=int, default=30, help="--bench repeats (the median is reported)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the export and the bench (default 1)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "sync", parents=[storage, tracking], help="backfill MLflow from a sweep's Parquet rows (exactly once)"
    )
    p.add_argument("sweep", help=SWEEP_HELP)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("runs", parents=[tracking], help="query MLflow child runs (mlflow.search_runs filter syntax)")
    p.add_argument("--filter", default="", help="e.g. \"params.tau = '0.2'\"")
    p.add_argument("--experiment", default="glth")
    p.set_defaults(func=cmd_runs)


def _tracking_uri(args, d) -> str:
    """``--tracking-uri``, else the URI the sweep recorded in its sweep.json, else the default."""
    return defaults.tracking_uri(args.tracking_uri, d.tracking_uri())


def cmd_results(args) -> int:
    from orchestrator import analysis, analysis_report
    from orchestrator.cli.summary import has_own_summary, render_results
    from orchestrator.results import THRESHOLD_RULE, render

    d = open_sweep(args.sweep, args.storage)
    rows = read_rows(d)
    if has_own_summary(rows):
        print(render_results(rows, args.format))
        return 0
    a = analysis.publish(
        rows,
        d,
        analysis.experiment_of(d),
        _tracking_uri(args, d),
        args.delta / 100.0,
        args.select_on,
        out_dir=outputs_dir(d),
    )
    if args.analysis and args.format in ("csv", "json"):
        print(render(a.curves, args.format))
        return 0
    print(render(a.rounds, args.format))
    if args.format in ("table", "markdown"):
        print(f"\n{THRESHOLD_RULE.format(delta=args.delta, split=args.select_on)}; jaccard: mask overlap across seeds:")
        print(analysis_report.render_curves(a.curves, args.format))
    return 0


def cmd_plot(args) -> int:
    from orchestrator import analysis, plots
    from orchestrator.sinks import mlflow as mlflow_sink

    d = open_sweep(args.sweep, args.storage)
    rows = read_rows(d)
    pngs = plots.plot_sweep(
        rows,
        d,
        args.round,
        args.log_remaining,
        args.delta / 100.0,
        title=args.title,
        select_on=args.select_on,
        out_dir=outputs_dir(d) / "plots",
    )
    if not pngs:
        print(f"plot: {d.sweep_id} has no completed trial to draw (every trial failed; glth results lists them)")
        return EXIT_ALL_FAILED
    for png in pngs:
        print(f"plot: {png}")
    uri = _tracking_uri(args, d)
    try:
        if plots.log_to_mlflow(pngs, d.sweep_id, analysis.experiment_of(d), uri) is None:
            print(f"[glth] no MLflow parent run for {d.sweep_id} at {uri}; plots not logged", file=sys.stderr)
    except mlflow_sink.MlflowUnavailable as e:
        print(f"[glth] MLflow unavailable ({e}); plots not logged", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from orchestrator import export_cmd

    d = open_sweep(args.sweep, args.storage)
    rows = read_rows(d)
    try:
        export_cmd.export_trial(
            d,
            rows,
            args.trial,
            args.round,
            Path(args.output),
            bench=args.bench,
            bench_images=args.images,
            repeats=args.repeats,
            threads=args.threads,
            tracking_uri=_tracking_uri(args, d),
            to_mlflow=args.mlflow,
        )
    except export_cmd.ExportError as e:
        raise BadInput(str(e)) from None
    return 0


def cmd_sync(args) -> int:
    from orchestrator import spec
    from orchestrator.sinks import parquet
    from orchestrator.sweep_end import sync_mlflow

    d = open_sweep(args.sweep, args.storage)
    try:
        sweep = spec.parse(spec_text_of(d))
    except spec.SpecError as e:
        raise BadInput(f"sweep: {d.location}: its spec.yaml: {e}") from None
    try:
        counts = sync_mlflow(sweep, d, _tracking_uri(args, d))
    except parquet.DamagedRows as e:
        raise BadInput(f"sweep: {sweep.sweep_id}: {e}") from None
    print(f"sync {d.sweep_id}: {counts}")
    return 0 if counts is not None else 1


def cmd_runs(args) -> int:
    from orchestrator.sinks import mlflow as mlflow_sink

    uri = defaults.tracking_uri(args.tracking_uri)
    try:
        df = mlflow_sink.search_children(uri, args.experiment, args.filter)
    except mlflow_sink.BadFilter as e:
        raise BadInput(str(e) if str(e).startswith("--experiment") else f"--filter: {e}") from None
    except mlflow_sink.MlflowUnavailable as e:
        print(f"glth: MLflow at {uri} is unavailable: {e}", file=sys.stderr)
        return 1
    print(df.to_string(index=False) if not df.empty else "no matching runs")
    return 0
