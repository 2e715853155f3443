"""The ``glth`` argument parser: shared parent parsers, one per kind of option, and the commands.

Each option that several commands take is declared once, in a parent parser:
- storage: ``--storage DIR`` (alias ``--out``), default ``$GLTH_STORAGE``, else ``./glth-runs``;
- tracking: ``--tracking-uri URI``, default (a command reading a sweep) the URI its sweep.json recorded, else
  ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``;
- job: ``--address`` (the Ray dashboard) and ``--token-file``;
- analysis: ``--delta`` (winning-ticket tolerance in accuracy points) and ``--select-on val|test``.
Defaults are resolved by orchestrator.defaults when a command runs, not when the parser is built.
"""

from __future__ import annotations

import argparse

from orchestrator.cli.common import BadInput


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise BadInput(f"{self.prog}: {message}")


def _parent() -> argparse.ArgumentParser:
    return Parser(add_help=False)


def storage_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument(
        "--storage",
        "--out",
        dest="storage",
        default=None,
        metavar="DIR",
        help="where sweeps live, one directory per sweep: a path, a shared filesystem or s3://bucket/prefix "
        "(default: the spec's storage:, else $GLTH_STORAGE, else ./glth-runs)",
    )
    return p


def tracking_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI (default: for a sweep, the one its run recorded in sweep.json; else "
        "$MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)",
    )
    return p


def job_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--address", default=None, help="the Ray dashboard, http://HEAD:8265 (default $RAY_ADDRESS)")
    p.add_argument("--token-file", default=None, help="Ray auth token (default $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH)")
    return p


def analysis_parent() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument(
        "--delta",
        type=float,
        default=0.5,
        metavar="POINTS",
        help="winning-ticket tolerance in accuracy points below round 0 (default 0.5)",
    )
    p.add_argument(
        "--select-on",
        choices=["val", "test"],
        default="val",
        help="the split that picks the winning ticket (default val); test accuracy is reported",
    )
    return p


def build_parser() -> Parser:
    from orchestrator.cli import construct_cmd, job_cmds, read_cmds, run_cmd, schema_cmd

    parser = Parser(prog="glth", description="Generalized Lottery Ticket Hypothesis sweeps on Ray Tune")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    parents = {
        "storage": storage_parent(),
        "tracking": tracking_parent(),
        "job": job_parent(),
        "analysis": analysis_parent(),
    }
    for group in (run_cmd, read_cmds, construct_cmd, job_cmds, schema_cmd):
        group.add_parsers(sub, parents)
    return parser
