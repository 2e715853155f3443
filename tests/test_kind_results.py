"""A trial kind's results are what its ``Experiment`` declares (``results=``): its summary table,
its figures and its progress fields. A kind registered on the fly (one class, one registry line)
prints its own table, draws its figures and shows its fields, and no orchestrator module compares a
kind's name or the form of its results."""

from __future__ import annotations

import ast
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from glth_core import kinds
from glth_core.config import Config
from glth_core.experiment import Experiment
from glth_core.results_view import Results, Shown, Table
from glth_core.state import State
from orchestrator import plots
from orchestrator.cli.summary import RENDERERS, has_own_summary, render_results, renderer_of
from orchestrator.layout import SweepDir
from orchestrator.progress import Progress
from orchestrator.spec import Trial
from orchestrator.tune_trial import TrialCarry

ROOT = Path(__file__).resolve().parents[1]


# -- a toy kind: tosses a seeded coin `flips` times, one round -------------------------------------
@dataclass(frozen=True)
class TossConfig(Config):
    KIND = "toss"
    flips: int = 10
    dataset: str = "none"
    model: str = "none"
    seed: int = 0
    rounds: int = 1


@dataclass
class TossState(State):
    round: int = 0


class Toss:
    def __init__(self, config, state=None, data=None):
        self.config, self.state, self.ticket = config, state or TossState(), None

    @property
    def done(self) -> bool:
        return self.state.round >= 1

    def run_round(self) -> dict:
        g = torch.Generator().manual_seed(self.config.seed)
        heads = int((torch.rand(self.config.flips, generator=g) < 0.5).sum())
        self.state.round = 1
        return {
            "round": 0,
            "test_accuracy": heads / self.config.flips,
            "density": 1.0,
            "heads": heads,
            "flips": self.config.flips,
        }


TOSS = Experiment(
    name="toss",
    config_cls=TossConfig,
    state_cls=TossState,
    runner=Toss,
    run_name=lambda c: f"toss-{c.flips}-s{c.seed}",
    describe=lambda c: {
        "dictionary": "coin",
        "dictionary_kind": "coin",
        "basis": "",
        "tau": None,
        "rewind": "none",
        "control": "none",
    },
    columns={"heads": int, "flips": int},
    results=Table(
        keys=("flips",),
        metrics=("heads",),
        derived={"share": lambda s: s["heads_mean"] / s["flips"]},
        shown=(Shown("heads", "heads_mean", "{:.2f}", spread="heads_std"), Shown("share", "share", "{:.3f}")),
        progress=(("heads", "heads"),),
    ),
)


@pytest.fixture
def toss(monkeypatch):
    """The one registry line, for this test only."""
    monkeypatch.setitem(kinds.KINDS, TOSS.name, TOSS)
    trials = [Trial(TossConfig(flips=f, seed=s), TOSS.name) for f in (10, 40) for s in (0, 1, 2)]
    rows = pd.DataFrame([{**t.meta("toss-sweep"), **TOSS.runner(t.config).run_round(), "status": "ok"} for t in trials])
    return SimpleNamespace(trials=trials, rows=rows)


def test_a_kind_registered_in_one_line_prints_its_own_table(toss):
    rows = toss.rows
    assert has_own_summary(rows)  # a table of its own: not curves for the analysis
    by_hand = rows.groupby("flips")["heads"].agg(["mean", "std"])
    lines = render_results(rows).splitlines()
    assert lines[0].split() == ["flips", "seeds", "heads", "share"]
    for line, (flips, m) in zip(lines[1:], by_hand.iterrows()):
        assert line.split() == [str(flips), "3", f"{m['mean']:.2f}", "±", f"{m['std']:.2f}", f"{m['mean'] / flips:.3f}"]
    csv = pd.read_csv(io.StringIO(render_results(rows, "csv")))
    assert list(csv.columns) == ["flips", "seeds", "heads_mean", "heads_std", "share"]
    assert np.allclose(csv["heads_mean"], by_hand["mean"]) and np.allclose(csv["heads_std"], by_hand["std"])
    assert render_results(rows.assign(status="failed: x")).endswith("(no rows: no trial has a round with status ok)")


def test_a_kind_draws_the_figures_it_declares(toss, tmp_path, monkeypatch):
    assert plots.plot_sweep(toss.rows, SweepDir.at(tmp_path)) == []  # it declares none
    drawn = []
    monkeypatch.setitem(plots.FIGURES, "heads_vs_flips", lambda ok, r: drawn.append(sorted(set(ok["flips"]))) or [])
    drawing = Table(keys=("flips",), metrics=("heads",), figures=("heads_vs_flips",))
    monkeypatch.setitem(kinds.KINDS, TOSS.name, dataclasses.replace(TOSS, results=drawing))
    plots.plot_sweep(toss.rows, SweepDir.at(tmp_path))
    assert drawn == [[10, 40]] and not list(tmp_path.rglob("*.png"))


def test_the_live_display_shows_the_fields_a_kind_declares(toss, capsys):
    trial = toss.trials[1]
    tune_trial = SimpleNamespace(config={"trial": TrialCarry.of([trial]).to_dict()})
    row = toss.rows.iloc[1]
    p = Progress(total_trials=1, rounds=1, live=False)
    p.on_trial_start(0, [], tune_trial)
    p.on_trial_result(0, [], tune_trial, {"round": 0, "test_accuracy": row["test_accuracy"], "heads": row["heads"]})
    said = capsys.readouterr().err.splitlines()[-1]
    assert said.endswith(f"trial {trial.trial_id} round 0: heads {row['heads']:.4f}   (1/1 rounds, 0/1 trials done)")
    assert p.lines(width=200)[1] == f"  {trial.trial_id}  round 0/0  heads {row['heads']:.4f}"


@pytest.mark.parametrize("name", list(kinds.KINDS))
def test_every_kind_declares_what_the_orchestrator_can_read(name):
    results = kinds.get(name).results
    assert isinstance(results, Results)
    assert renderer_of(results) in RENDERERS.values()
    assert set(results.figures) <= set(plots.FIGURES), f"{name}: figures not in orchestrator.plots.FIGURES"
    columns = kinds.get(name).all_columns()
    assert all(column in columns and columns[column] in (int, float) for column, _ in results.progress)


#: what reads a kind, or the form of its results: a name ``kind``, an attribute ``.kind`` /
#: ``.summary`` / ``.results``, a key ``["kind"]``, a call of ``summary_of``
KIND_READS = {("name", "kind"), ("attr", "kind"), ("attr", "summary"), ("attr", "results"), ("key", "kind")}
KIND_READS |= {("call", "summary_of")}


def _reads(node) -> set[tuple[str, str]]:
    """What a compared expression reads, as (how, name) pairs."""
    if isinstance(node, ast.Name):
        return {("name", node.id)}
    if isinstance(node, ast.Attribute):
        return {("attr", node.attr)} | _reads(node.value)
    if isinstance(node, ast.Subscript):
        key = node.slice
        own = {("key", key.value)} if isinstance(key, ast.Constant) and isinstance(key.value, str) else set()
        return own | _reads(node.value)
    if isinstance(node, ast.Call):
        func = node.func
        own = {("call", func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))}
        return own | _reads(func)
    return set()


def kind_dispatch(path: Path) -> list[str]:
    """Where ``path`` compares a trial kind's name, or a kind's ``kind`` / ``summary`` / ``results``
    to a string: choosing behaviour by kind instead of asking the kind's ``Experiment``."""
    names = set(kinds.KINDS)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        literals = {s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)}
        read = set().union(*(_reads(s) for s in sides))
        if literals & names or (literals and read & KIND_READS):
            where = path.relative_to(ROOT) if ROOT in path.parents else path.name
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_orchestrator_never_chooses_by_a_trial_kinds_name():
    # dictionary kinds and controls are tests/test_plugins.py's to scan
    files = sorted((ROOT / "orchestrator").rglob("*.py"))
    found = [hit for p in files for hit in kind_dispatch(p)]
    assert found == [], "trial kinds chosen by name:\n" + "\n".join(found)


def test_the_kind_scan_finds_what_it_forbids(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'a = summary_of(rows) == "construction"\nb = row["kind"] != "strong"\n'
        'c = kinds.get(k).summary == "curves"\nd = x == "other"\n'
    )
    assert [f.split(":")[1] for f in kind_dispatch(probe)] == ["1", "2", "3"]
