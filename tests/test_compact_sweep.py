"""A real sweep compacts its rows at its end; a damaged part heals on the rerun with the same rows.

``GLTH_COMPACT_MIN_TRIALS=4`` makes test_heal's 4-trial sweep count as large. Its first run ends
with one part and no trial files; the part then loses its second half, and ONE rerun rebuilds all
four trials from their resume states (nothing recomputed: timings included, the rows are the
same) and compacts them again.
"""

from __future__ import annotations

import pandas as pd
import pytest
from test_heal import ROUNDS, SPEC, TRIALS, glth, truncate

from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

pytestmark = pytest.mark.slow


def run(cwd, monkeypatch):
    monkeypatch.setenv("GLTH_COMPACT_MIN_TRIALS", str(TRIALS))
    return glth(cwd, "run", "spec.yaml", "--out", "out", "--tracking-uri", f"sqlite:///{cwd / 'mlflow.db'}")


def test_a_sweep_compacts_at_its_end_and_a_damaged_part_heals_on_the_rerun(tmp_path, monkeypatch):
    (tmp_path / "spec.yaml").write_text(SPEC)
    first = run(tmp_path, monkeypatch)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"rows of {TRIALS} finished trial(s) compacted into 1 file(s)" in first.stderr
    (sweep_dir,) = [d for d in (tmp_path / "out").iterdir() if d.is_dir()]
    where = SweepDir.under(tmp_path / "out", sweep_dir.name)
    part = sweep_dir / "rounds" / "dictionary=canonical" / "part-000001.parquet"
    assert sorted(p.name for p in (sweep_dir / "rounds").rglob("*.parquet")) == [part.name]
    rows = parquet.read_rounds(where)
    assert len(rows) == TRIALS * ROUNDS and set(rows.status) == {"ok"} and parquet.trial_files(where) == {}
    assert (rows.sort_values(["trial_id", "round"]).index == rows.index).all()

    truncate(part)
    rerun = run(tmp_path, monkeypatch)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    print(f"\ninjected: {part.name} truncated; the rerun said: {rerun.stderr.strip().splitlines()[:3]}")
    assert str(part) in rerun.stderr and "rebuil" in rerun.stderr
    assert sorted(p.name for p in (sweep_dir / "rounds").rglob("*.parquet")) == ["part-000001.parquet"]
    pd.testing.assert_frame_equal(parquet.read_rounds(where), rows, check_exact=True)
