"""`glth ARGS` called in the test's own process: what the console script runs (``orchestrator.cli:main``)
without a Python start-up and its imports (seconds each on a loaded machine). For the commands that
start no Ray (results, plot, export, a dry run, a rerun that reuses every trial); a `glth run` that
computes stays a subprocess."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

from orchestrator import cli


def glth_here(*args: str, cwd: Path, drop_env: tuple[str, ...] = (), env: dict | None = None):
    """``glth ARGS`` run by ``cli.main`` in ``cwd`` with ``drop_env`` unset and ``env`` set (both put
    back afterwards): a CompletedProcess with its exit status, stdout and stderr."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        for k in drop_env:
            os.environ.pop(k, None)
        os.environ.update(env or {})
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in args])
            except SystemExit as e:  # argparse's own errors
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["glth", *map(str, args)], code, out.getvalue(), err.getvalue())
