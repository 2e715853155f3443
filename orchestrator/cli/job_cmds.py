"""Sweeps as Ray Jobs on a running cluster: submit, status, logs, stop (orchestrator.jobs does the talking)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from orchestrator.cli.common import BadInput, load_sweep, resolve_storage, storage_setting, sweep_lease


def add_parsers(sub, parents) -> None:
    job = parents["job"]
    p = sub.add_parser(
        "submit",
        parents=[parents["storage"], parents["tracking"], job],
        help="run a sweep spec as a Ray Job on a cluster; prints the job id. Storage: --storage > "
        "the spec's storage: > $GLTH_STORAGE > ./glth-runs; an s3:// one is checked from here "
        "(this machine's AWS credentials), a path by the job on the cluster before any trial "
        "(a relative path is made absolute here; '~/…' is the cluster's home); "
        "--tracking-uri defaults as for glth run here",
    )
    p.add_argument("spec")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", parents=[job], help="a Ray Job's status, or every job of the cluster")
    p.add_argument("job", nargs="?", help="job id (default: list the cluster's jobs)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("logs", parents=[job], help="a Ray Job's logs")
    p.add_argument("job")
    p.add_argument(
        "--follow", action="store_true", help="stream the logs until the job ends; exit 0 only if it succeeded"
    )
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "stop", parents=[job], help="stop a Ray Job (its finished rounds stay stored; glth run or submit resumes it)"
    )
    p.add_argument("job")
    p.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the job to end after asking (default 30; 0: do not wait)",
    )
    p.set_defaults(func=cmd_stop)


@contextlib.contextmanager
def _jobs_api():
    """Address, token and job-id problems from orchestrator.jobs are bad input too."""
    from orchestrator.jobs import JobsError

    try:
        yield
    except JobsError as e:
        raise BadInput(str(e)) from None


def _cluster(args):
    from orchestrator.jobs import Cluster

    return Cluster(args.address, args.token_file)


def cmd_submit(args) -> int:
    sweep = load_sweep(Path(args.spec))  # a bad spec (or storage) never reaches the cluster
    out, _ = storage_setting(args.storage, sweep.spec.storage)
    if not out.startswith("~"):  # '~/…' is a path of the cluster's: expanded and checked there
        # an object store is checked from here; a path is the cluster's, checked by the job's glth run
        storage = resolve_storage(args.storage, sweep.spec.storage, check="://" in out and not out.startswith("file:"))
        out = out if storage.is_local else storage.uri
        from orchestrator.layout import SweepDir

        sweep_lease(SweepDir(storage, sweep.sweep_id), check_only=True)  # a driver runs it now: refused here, Busy
    with _jobs_api():
        cluster = _cluster(args)
        job_id, out = cluster.submit(Path(args.spec), sweep.sweep_id, out, args.tracking_uri)
    print(job_id)
    where = f" --address {cluster.address}" if args.address else ""
    print(
        f"glth: sweep {sweep.sweep_id} submitted; rows go to {out}/{sweep.sweep_id} on the cluster. "
        f"Follow it: glth status {job_id}{where}; glth logs {job_id} --follow{where}",
        file=sys.stderr,
    )
    return 0


def cmd_status(args) -> int:
    from orchestrator.jobs import describe

    with _jobs_api():
        cluster = _cluster(args)
        print(describe(cluster.info(args.job)) if args.job else cluster.table())
    return 0


def cmd_logs(args) -> int:
    from orchestrator.jobs import describe, status_of

    with _jobs_api():
        cluster = _cluster(args)
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


def cmd_stop(args) -> int:
    """Exit 0 once the job has ended (stopped now, or already over); 1 if it still runs after --wait."""
    from orchestrator.jobs import TERMINAL, describe, status_of

    if args.wait < 0:
        raise BadInput(f"--wait: must be ≥ 0 seconds (got {args.wait:g})")
    with _jobs_api():
        stopped, info = _cluster(args).stop(args.job, wait_s=args.wait)
    print(describe(info))
    if not stopped:
        print(f"glth: job {args.job} had already ended; nothing to stop", file=sys.stderr)
    elif status_of(info) not in TERMINAL:
        print(f"glth: asked job {args.job} to stop; it has not ended yet (glth status {args.job})", file=sys.stderr)
        return 1 if args.wait else 0
    return 0
