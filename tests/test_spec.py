"""Sweep specs: grid expansion, stable ids, and one-line errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import cli, spec

GOOD = """
name: t
dataset: digits
model: mlp_300_100
dictionary:
  - {kind: canonical}
  - {kind: bottleneck, layer: "1", basis: identity}
tau: [0.2, 0.3]
seeds: [0, 1, 2]
rounds: 2
train: {epochs: 1, lr: [0.05, 0.1]}
"""


def test_grid_expands_every_list_axis():
    sweep = spec.parse(GOOD)
    assert len(sweep.trials) == 2 * 2 * 3 * 2
    ids = [t.trial_id for t in sweep.trials]
    assert len(set(ids)) == len(ids)
    assert {t.config.train.lr for t in sweep.trials} == {0.05, 0.1}
    assert {t.config.tau for t in sweep.trials} == {0.2, 0.3}
    again = spec.parse(GOOD)
    assert [t.trial_id for t in again.trials] == ids and again.sweep_id == sweep.sweep_id
    assert sweep.sweep_id.startswith("t-")
    assert spec.parse(GOOD.replace("rounds: 2", "rounds: 3")).sweep_id != sweep.sweep_id


def test_trial_roundtrips_through_dict():
    t = spec.parse(GOOD).trials[5]
    assert spec.Trial.from_dict(t.to_dict()).trial_id == t.trial_id


def _spec_with(**changes) -> str:
    lines = {
        "name": "bad",
        "dataset": "digits",
        "model": "mlp_300_100",
        "dictionary": "{kind: canonical}",
        "tau": "0.2",
        "seeds": "[0]",
        "rounds": "2",
    }
    lines.update(changes)
    return "\n".join(f"{k}: {v}" for k, v in lines.items() if v is not None) + "\n"


BAD = {
    "unknown key": (_spec_with(colour="blue"), "colour"),
    "unknown nested key": (_spec_with(train="{epochs: 1, speed: 3}"), "train.speed"),
    "unknown model": (_spec_with(model="resnet9000"), "model"),
    "unknown dictionary": (_spec_with(dictionary="{kind: wavelet}"), "dictionary"),
    "unknown dataset": (_spec_with(dataset="imagenet"), "imagenet"),
    "tau above 1": (_spec_with(tau="1.5"), "tau"),
    "tau zero": (_spec_with(tau="[0.2, 0.0]"), "tau"),
    "rounds < 1": (_spec_with(rounds="0"), "rounds"),
    "empty seeds": (_spec_with(seeds="[]"), "seeds"),
    "missing seeds": (_spec_with(seeds=None), "seeds"),
    "missing layer": (_spec_with(dictionary="{kind: bottleneck, layer: '9', basis: identity}"), "layer"),
    "layer not Linear": (_spec_with(dictionary="{kind: bottleneck, layer: '2', basis: identity}"), "layer"),
    "dct on non-image input": (_spec_with(dictionary="{kind: bottleneck, layer: '3', basis: dct}"), "dct"),
    "bad basis": (_spec_with(dictionary="{kind: bottleneck, layer: '1', basis: fourier}"), "basis"),
    "data_dir missing": (_spec_with(dataset="{name: mnist, data_dir: /nonexistent/mnist}"), "/nonexistent/mnist"),
    "bad optimizer": (_spec_with(train="{optimizer: lbfgs}"), "optimizer"),
    "bad rewind": (_spec_with(rewind="sometimes"), "rewind"),
    "not yaml": ("name: [unclosed\n", "YAML"),
    "not a mapping": ("- a\n- b\n", "mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    text, needle = BAD[case]
    (tmp_path / "spec.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", "spec.yaml", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert needle in err
    assert sorted(os.listdir(tmp_path)) == ["spec.yaml"]  # nothing written: no out dir, no mlflow.db
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["run"], "spec"),
        (["run", "missing.yaml"], "missing.yaml"),
        (["results", "nosuch", "--out", "."], "nosuch"),
        (["frobnicate"], "frobnicate"),
        (["results", "x", "--format", "xml"], "format"),
    ],
)
def test_bad_cli_arguments_exit_2_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert os.listdir(tmp_path) == []


def test_console_script_exit_status(tmp_path):
    (tmp_path / "s.yaml").write_text(_spec_with(tau="2"))
    glth = Path(sys.executable).with_name("glth")
    proc = subprocess.run([str(glth), "run", "s.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "tau" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["s.yaml"]
