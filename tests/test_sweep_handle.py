"""One handle on a sweep's storage: the sweep directory (``orchestrator.layout.SweepDir``) is made
once, where a sweep is named (``run_sweep``, the CLI), and handed down; the sinks, the analysis,
the figures, the export and the trainable take it and resolve no storage setting of their own.

Two checks: an ``ast`` walk of the orchestrator (only the entry points call ``Storage.resolve``,
``SweepDir.at`` / ``SweepDir.under`` or ``Storage.child``), and a count of those calls, wrapped
around the real functions, during a real ``run_sweep`` and ``glth results`` of a sweep whose rows
are already complete (nothing is pending, so no Ray starts).
"""

from __future__ import annotations

import ast
from pathlib import Path

from orchestrator import cli, spec
from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet
from orchestrator.storage import Storage
from orchestrator.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
#: (module, function, call): the only places a storage setting becomes a sweep directory
ENTRIES = {
    ("orchestrator/layout.py", "SweepDir.__init__", "child"),
    ("orchestrator/layout.py", "SweepDir.at", "resolve"),
    ("orchestrator/layout.py", "SweepDir.under", "resolve"),
    ("orchestrator/sweep.py", "sweep_dir_of", "under"),
    ("orchestrator/cli/common.py", "resolve_storage", "resolve"),
    ("orchestrator/cli/common.py", "_find_by_uri", "resolve"),
    ("orchestrator/cli/common.py", "open_sweep", "at"),
}
MAKERS = {"resolve": {"Storage"}, "at": {"SweepDir"}, "under": {"SweepDir"}, "child": None}  # None: any object

SPEC = """
name: handle
experiment: glth-handle
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.3
seeds: [0, 1]
rounds: 2
train: {epochs: 1, batch_size: 64, lr: 0.05, steps: 2}
"""


def storage_calls(path: Path) -> list[tuple[str, str, int]]:
    """(enclosing function, call, line) of every Storage.resolve / SweepDir.at / SweepDir.under /
    .child call in a module's source."""
    found = []

    def visit(node, scope: list[str]):
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = [*scope, child.name]
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                attr, owner = child.func.attr, child.func.value
                if attr in MAKERS and (
                    MAKERS[attr] is None or (isinstance(owner, ast.Name) and owner.id in MAKERS[attr])
                ):
                    found.append((".".join(scope), attr, child.lineno))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), [])
    return found


def test_only_the_entry_points_turn_a_storage_setting_into_a_sweep_directory():
    stray = []
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("orchestrator/storage"):  # the Storage class itself
            continue
        stray += [
            f"{rel}:{line} {fn}: {call}" for fn, call, line in storage_calls(path) if (rel, fn, call) not in ENTRIES
        ]
    assert stray == []


def count_calls(monkeypatch) -> dict[str, int]:
    """Counts of Storage.resolve and Storage.child from now on (the real functions still run)."""
    counts = {"resolve": 0, "child": 0}
    resolve, child = Storage.resolve.__func__, Storage.child

    def counted_resolve(cls, *args, **kwargs):
        counts["resolve"] += 1
        return resolve(cls, *args, **kwargs)

    def counted_child(self, *args, **kwargs):
        counts["child"] += 1
        return child(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "resolve", classmethod(counted_resolve))
    monkeypatch.setattr(Storage, "child", counted_child)
    return counts


def complete_sweep(runs: Path):
    """A sweep directory whose trials all have their rows (written by the real writers)."""
    sweep = spec.parse(SPEC)
    where = SweepDir.under(runs, sweep.sweep_id)
    where.create(sweep.text)
    for t in sweep.trials:
        rows = [
            {**t.meta(sweep.sweep_id), "round": r, "status": "ok", "density": 0.7**r, "compression": 1 - 0.7**r}
            | {"test_accuracy": 0.9 - 0.01 * r + 0.001 * t.config.seed, "val_accuracy": 0.9 - 0.01 * r}
            for r in range(t.rows_expected)
        ]
        parquet.write_trial(where, t.trial_id, t.dictionary_label, rows)
    return sweep, where


def test_a_sweep_directory_is_resolved_once_by_run_sweep_and_by_glth_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLTH_STORAGE", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep, where = complete_sweep(tmp_path / "runs")

    counts = count_calls(monkeypatch)
    result = run_sweep(sweep, tmp_path / "runs", tracking_uri=uri)
    assert (result.computed, result.reused, result.failed) == (0, 2, [])
    assert result.out_dir == where.location == tmp_path / "runs" / sweep.sweep_id
    assert counts == {"resolve": 1, "child": 1}  # run_sweep's one SweepDir, handed to everything below

    counts.update(resolve=0, child=0)
    assert cli.main(["results", str(where.location), "--tracking-uri", uri, "--format", "csv"]) == 0
    assert counts == {"resolve": 1, "child": 1}  # the command's one SweepDir
    assert len(parquet.read_rounds(where)) == 4 and (tmp_path / "runs" / sweep.sweep_id / "analysis.parquet").is_file()
    capsys.readouterr()
