"""The sweep remembers where it logged: sweep.json records the tracking URI, and the commands that
read a sweep use it unless --tracking-uri says otherwise (no Ray: a sweep directory written by hand)."""

from __future__ import annotations

import json

from orchestrator import defaults
from orchestrator.cli import parse_args
from orchestrator.cli.read_cmds import _tracking_uri
from orchestrator.layout import SweepDir
from orchestrator.storage import Storage


def test_sweep_json_records_the_uri_and_reads_it_back(tmp_path):
    d = SweepDir(Storage.resolve(str(tmp_path)), "s-1")
    d.create("name: s\n", "sqlite:////data/runs/mlflow.db")
    assert json.loads((tmp_path / "s-1" / "sweep.json").read_text())["tracking_uri"] == "sqlite:////data/runs/mlflow.db"
    assert SweepDir.at(tmp_path / "s-1").tracking_uri() == "sqlite:////data/runs/mlflow.db"
    old = SweepDir(Storage.resolve(str(tmp_path)), "s-old")
    old.create("name: s\n")  # as an older glth wrote it: no tracking_uri
    assert "tracking_uri" not in json.loads((tmp_path / "s-old" / "sweep.json").read_text())
    assert old.tracking_uri() is None


def test_the_flag_then_the_recorded_uri_then_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    SweepDir(Storage.resolve(str(tmp_path)), "s-1").create("name: s\n", "sqlite:////data/runs/mlflow.db")
    SweepDir(Storage.resolve(str(tmp_path)), "s-old").create("name: s\n")
    s1, old = SweepDir.at(tmp_path / "s-1"), SweepDir.at(tmp_path / "s-old")
    for command in ("results", "plot", "sync"):
        args = parse_args([command, "s-1"])
        assert _tracking_uri(args, s1) == "sqlite:////data/runs/mlflow.db"
        flagged = parse_args([command, "s-1", "--tracking-uri", "http://127.0.0.1:5000"])
        assert _tracking_uri(flagged, s1) == "http://127.0.0.1:5000"
        assert _tracking_uri(args, old) == f"sqlite:///{tmp_path / 'mlflow.db'}"  # today's default


def test_a_relative_sqlite_path_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert defaults.absolute_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    for uri in ("sqlite:////abs/mlflow.db", "http://127.0.0.1:5000"):
        assert defaults.absolute_uri(uri) == uri
