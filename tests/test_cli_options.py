"""The parser: each shared option declared once, with one default rule, for every command that takes it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from orchestrator import cli, defaults

CLI_DIR = Path(cli.__file__).parent
STORAGE_COMMANDS = {
    "run": ["s.yaml"],
    "demo": [],
    "results": ["x"],
    "plot": ["x"],
    "sync": ["x"],
    "submit": ["s.yaml"],
    "export": ["x", "--trial", "t", "-o", "m.pt"],
}
TRACKING_COMMANDS = {**STORAGE_COMMANDS, "runs": []}
ANALYSIS_COMMANDS = {k: STORAGE_COMMANDS[k] for k in ("run", "demo", "results", "plot")}


def parse(*argv: str):
    return cli.parse_args(list(argv))


@pytest.mark.parametrize("command", list(STORAGE_COMMANDS))
def test_storage_and_its_out_alias(command):
    args = STORAGE_COMMANDS[command]
    assert parse(command, *args).storage is None  # resolved when the command runs
    assert parse(command, *args, "--storage", "a").storage == "a"
    assert parse(command, *args, "--out", "b").storage == "b"


@pytest.mark.parametrize("command", list(TRACKING_COMMANDS))
def test_tracking_uri_everywhere(command):
    assert (
        parse(command, *TRACKING_COMMANDS[command], "--tracking-uri", "http://127.0.0.1:5000").tracking_uri
        == "http://127.0.0.1:5000"
    )


@pytest.mark.parametrize("command", list(ANALYSIS_COMMANDS))
def test_delta_in_points_and_select_on(command):
    args = parse(command, *ANALYSIS_COMMANDS[command])
    assert (args.delta, args.select_on) == (0.5, "val")
    args = parse(command, *ANALYSIS_COMMANDS[command], "--delta", "1.5", "--select-on", "test")
    assert (args.delta, args.select_on) == (1.5, "test")


@pytest.mark.parametrize("command", ["submit", "status", "logs", "stop"])
def test_job_options(command):
    args = parse(
        command, *(["s.yaml"] if command == "submit" else ["j"]), "--address", "http://h:8265", "--token-file", "t"
    )
    assert (args.address, args.token_file) == ("http://h:8265", "t")


def test_each_shared_option_is_declared_once():
    source = "\n".join(p.read_text() for p in sorted(CLI_DIR.glob("*.py")))
    for flag in ("--storage", "--out", "--tracking-uri", "--token-file", "--delta", "--select-on"):
        assert len(re.findall(rf"add_argument\([^)]*\"{flag}\"", source)) == 1, flag


def test_defaults_resolve_once(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for var in ("GLTH_STORAGE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    assert defaults.storage(None) == "glth-runs" and defaults.storage("x") == "x"
    assert defaults.tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("GLTH_STORAGE", "/data/runs")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert defaults.storage(None) == "/data/runs"
    assert defaults.tracking_uri(None) == "http://127.0.0.1:5000" and defaults.tracking_uri("y") == "y"


def test_the_entry_point_is_the_package_main():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'glth = "orchestrator.cli:main"' in text and callable(cli.main)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "s.yaml", "--resume", "--force"], "glth: error: --resume, --force: pick one"),
        (["results", "x", "extra"], "glth: error: glth results: unrecognized arguments: extra"),
        (["run", "s.yaml", "tau=0.1", "--workers", "3"], "glth: error: glth run: unrecognized arguments: --workers 3"),
        (
            ["results", "x", "--select-on", "train"],
            "glth: error: glth results: argument --select-on: invalid choice: 'train'",
        ),
        (["stop", "j", "--wait", "-1", "--address", "http://127.0.0.1:1"], "glth: error: --wait: must be ≥ 0 seconds"),
    ],
)
def test_bad_options_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "s.yaml").write_text("name: s\nseeds: [0]\nrounds: 2\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err
    assert os.listdir(tmp_path) == ["s.yaml"]


def test_demo_dry_run_writes_nothing(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 trials: 0 done, 0 partial, 8 pending" in out and "would compute: 8 trials, 64 rounds" in out
    assert os.listdir(tmp_path) == [] and not ray.is_initialized()
