"""The ``glth`` command: run sweeps, read their results, query MLflow, backfill it, drive Ray Jobs.

Bad input anywhere (arguments, overrides, spec, dataset paths) prints ONE line naming the problem
and exits with status 2 before Ray starts or anything is written. A sweep that another driver runs
now (``glth run``/``glth submit`` of it twice; orchestrator.lease) is refused the same way, exit status 4.

- parser.py: the parser and its shared parent parsers (storage, tracking, job, analysis options);
- common.py: BadInput, loading a spec, ``find_sweep`` (a sweep by path, id, prefix or name);
- run_cmd.py: run, demo (and --dry-run); read_cmds.py: results, plot, export, sync, runs;
  job_cmds.py: submit, status, logs, stop; construct_cmd.py: construct; schema_cmd.py: schema;
- summary.py: prints rows as their trial kind declares (RENDERERS: one line a form of results).
"""

from __future__ import annotations

import sys

from orchestrator.cli.common import EXIT_BAD_INPUT, BadInput, find_sweep
from orchestrator.cli.parser import build_parser

__all__ = ["EXIT_BAD_INPUT", "BadInput", "build_parser", "find_sweep", "main", "parse_args"]


def parse_args(argv: list[str] | None = None):
    """Parsed arguments. ``glth run`` takes its overrides anywhere after the spec, options between
    them included (``glth run s.yaml tau=0.1 --dry-run seeds=0-4``)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command == "run" and not any(r.startswith("-") for r in rest):
        args.overrides = [*args.overrides, *rest]
    elif rest:
        raise BadInput(f"glth {args.command}: unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if argv is None and getattr(sys.modules.get("__main__"), "main", None) is main:  # the `glth` script
        _exit_now(code)
    return code


def _main(argv: list[str] | None) -> int:
    try:
        args = parse_args(argv)
        return args.func(args)
    except BadInput as e:
        print(f"glth: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:  # outside a Ray session (imports, MLflow set-up, the analysis)
        print("[glth] interrupted", file=sys.stderr)
        return 130


def _exit_now(code: int) -> None:
    """End the ``glth`` process as Python would, less its teardown of every module (torch, Ray, MLflow,
    pandas: ~1 s after a ``glth run``): other threads that are not daemons waited for, the atexit
    handlers run (logging's flush among them), stdout and stderr flushed, then ``os._exit``."""
    import atexit
    import os
    import threading

    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to tell
            pass
    os._exit(0 if code is None else code if isinstance(code, int) else 1)  # as sys.exit reads it


if __name__ == "__main__":
    sys.exit(main())
