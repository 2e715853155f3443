"""Progress on stderr: plain lines when it is not a terminal (as CI and the fault tests read them), a live
block redrawn in place when it is (checked under a real pseudo-terminal)."""

from __future__ import annotations

import os
import pty
import re
import sys
from types import SimpleNamespace

import pytest

from glth_core.trajectory import TrajectoryConfig
from orchestrator import progress
from orchestrator import spec as specs
from orchestrator.progress import Progress, clock, live_lines
from orchestrator.spec import Trial
from orchestrator.sweep import grid_entries
from orchestrator.tune_trial import TrialCarry

BATCHED_SPEC = """
name: batched
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
seeds: [0, 1, 2]
rounds: 2
batch_seeds: 2
"""


def trial(tid: str, batch: int = 0):
    """What the callback reads of a Tune trial: its config's ``trial`` entry, a ``TrialCarry`` of
    one trial (or of ``batch`` seeds)."""
    members = tuple(Trial(TrajectoryConfig(seed=k)) for k in range(max(1, batch)))
    return SimpleNamespace(config={"trial": TrialCarry(tid, members).to_dict()})


def result(rnd: int, acc: float, density: float, **extra) -> dict:
    return {"round": rnd, "test_accuracy": acc, "density": density, "node_id": "n1", **extra}


def drive(p: Progress) -> None:
    """Two trials of two rounds: a starts and finishes; b starts, reports one round, fails."""
    a, b = trial("aaaa"), trial("bbbb")
    p.on_trial_start(0, [], a)
    p.on_trial_start(0, [], b)
    p.on_trial_result(0, [], a, result(0, 0.5, 1.0))
    p.on_trial_result(0, [], a, result(1, 0.75, 0.3))
    p.on_trial_result(0, [], b, result(0, 0.25, 1.0))
    p.on_trial_complete(0, [], a)
    p.on_trial_error(0, [], b)
    p.on_experiment_end([])


def test_clock():
    assert [clock(s) for s in (0, 59.6, 61, 3600 + 62, None, float("nan"))] == [
        "0:00:00",
        "0:01:00",
        "0:01:01",
        "1:01:02",
        "-",
        "-",
    ]


def test_live_lines():
    running = [
        {"trial_id": "aaaa", "size": 1, "round": 2, "rounds": 5, "test_accuracy": 0.91234, "density": 0.25},
        {"trial_id": "batch-1", "size": 4},
    ]
    lines = live_lines(
        done=3,
        running=running,
        pending=2,
        failed=1,
        rounds_done=17,
        rounds_total=50,
        elapsed=83.4,
        eta=250.0,
        width=200,
    )
    assert lines == [
        "[glth 0:01:23] 17/50 rounds · trials: 3 done, 5 running, 2 pending, 1 failed · ETA 0:04:10",
        "  aaaa  round 2/4  test acc 0.9123  density 0.2500",
        "  batch-1 ×4  starting",
    ]
    many = [{"trial_id": f"t{i}", "size": 1} for i in range(progress.MAX_RUNNING_SHOWN + 3)]
    lines = live_lines(
        done=0, running=many, pending=0, failed=0, rounds_done=0, rounds_total=1, elapsed=0, eta=None, width=30
    )
    assert len(lines) == progress.MAX_RUNNING_SHOWN + 2 and lines[-1] == "  … and 3 more running"
    assert lines[0] == "[glth 0:00:00] 0/1 rounds · tr" and all(len(line) <= 30 for line in lines)


def test_plain_lines_when_not_a_terminal(capsys):
    p = Progress(total_trials=2, rounds=2)
    assert not p._is_live()  # pytest's captured stderr is no terminal
    drive(p)
    err = capsys.readouterr().err
    lines = [re.sub(r"^\[glth +\d+s\] ", "", line) for line in err.splitlines()]
    assert all(re.match(r"^\[glth +\d+s\] ", line) for line in err.splitlines()) and "\x1b" not in err
    assert lines == [
        "trial aaaa RUNNING   (0/4 rounds, 0/2 trials done)",
        "trial bbbb RUNNING   (0/4 rounds, 0/2 trials done)",
        "trial aaaa runs on node n1",
        "trial aaaa round 0: test acc 0.5000, density 1.0000   (1/4 rounds, 0/2 trials done)",
        "trial aaaa round 1: test acc 0.7500, density 0.3000   (2/4 rounds, 0/2 trials done)",
        "trial bbbb runs on node n1",
        "trial bbbb round 0: test acc 0.2500, density 1.0000   (3/4 rounds, 0/2 trials done)",
        "trial aaaa TERMINATED (3/4 rounds, 1/2 trials done)",
        "trial bbbb ERROR (3/4 rounds, 1/2 trials done)",
    ]


def test_live_counts_and_eta():
    p = Progress(total_trials=4, rounds=3, already_done=1, complete=["done"], live=False)
    p.on_trial_start(0, [], trial("done"))  # complete on disk: not running
    p.on_trial_start(0, [], trial("batch", batch=2))
    p.on_trial_result(0, [], trial("batch", batch=2), result(0, 0.5, 1.0))
    p.t0 -= 10.0  # 2 rounds in 10 s; 12 − 3 (already done) − 2 = 7 left
    header, row = p.lines(width=300)
    assert header.startswith("[glth 0:00:10] 5/12 rounds · trials: 1 done, 2 running, 1 pending · ETA 0:00:3")
    assert row == "  batch ×2  round 0/2  test acc 0.5000  density 1.0000"


def test_a_batch_seeds_sweep_is_counted_in_trials_not_tune_trials():
    """The Tune trials of a real ``batch_seeds: 2`` grid (seeds 0, 1 together, seed 2 alone): each
    counts its members' trials and rounds, so the counts and the ETA reach the sweep's own."""
    sweep = specs.parse(BATCHED_SPEC)
    entries = grid_entries(sweep.trials, sweep.spec.batch_seeds)
    assert [len(e["members"]) for e in entries] == [2, 1]
    pair, alone = (SimpleNamespace(config={"trial": e, "sweep": {}}) for e in entries)
    p = Progress(total_trials=len(sweep.trials), rounds=sweep.rounds, live=False)
    p.on_trial_start(0, [], pair)
    p.on_trial_result(0, [], pair, result(0, 0.5, 1.0))
    p.t0 -= 10.0  # 2 of the 6 rounds in 10 s: 4 left, 20 s
    header, row = p.lines(width=300)
    assert header == "[glth 0:00:10] 2/6 rounds · trials: 0 done, 2 running, 1 pending · ETA 0:00:20"
    assert row == f"  {entries[0]['trial_id']} ×2  round 0/1  test acc 0.5000  density 1.0000"
    p.on_trial_result(0, [], pair, result(1, 0.6, 0.7))
    p.on_trial_complete(0, [], pair)
    assert p._count() == "4/6 rounds, 2/3 trials done"
    p.on_trial_start(0, [], alone)
    p.on_trial_result(0, [], alone, result(0, 0.5, 1.0))
    p.on_trial_result(0, [], alone, result(1, 0.6, 0.7))
    p.on_trial_complete(0, [], alone)
    assert p._count() == "6/6 rounds, 3/3 trials done"


def test_a_trial_carry_survives_tunes_param_space():
    sweep = specs.parse(BATCHED_SPEC)
    for entry in grid_entries(sweep.trials, sweep.spec.batch_seeds):
        carry = TrialCarry.from_dict(entry)
        assert carry.to_dict() == entry and carry.size == len(entry["members"])
        assert [t.trial_id for t in carry.members] == [m["trial_id"] for m in entry["members"]]
    alone = grid_entries(sweep.trials, 1)
    assert [TrialCarry.from_dict(e).trial_id for e in alone] == [t.trial_id for t in sweep.trials]


@pytest.fixture
def terminal(monkeypatch):
    """The slave side of a real pseudo-terminal as a stream, and a reader of its master side."""
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", buffering=1)
    monkeypatch.delenv("GLTH_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    # the block fits the terminal's width (shutil.get_terminal_size: COLUMNS, else the size of the
    # process's own stdout, which under pytest-xdist is not this pty): a wide one, so no line is cut
    monkeypatch.setenv("COLUMNS", "200")

    def read() -> str:
        stream.flush()
        chunks = []
        while True:
            import select

            if not select.select([master], [], [], 0.2)[0]:
                return b"".join(chunks).decode().replace("\r\n", "\n")
            chunks.append(os.read(master, 65536))

    yield stream, read
    stream.close()
    os.close(master)


def test_live_block_on_a_terminal(terminal, monkeypatch):
    stream, read = terminal
    monkeypatch.setattr(sys, "stderr", stream)  # here, not in the fixture: pytest's capture resets it after setup
    p = Progress(total_trials=2, rounds=2)
    assert p._is_live() and progress.live_wanted()
    drive(p)
    out = read()
    # the block is redrawn in place: cursor up over the last drawing, clear to the end of the screen
    assert out.count("\x1b[J") >= 5 and re.search(r"\x1b\[\d+F\x1b\[J", out)
    assert "round 0: test acc" not in out and "RUNNING" not in out  # per-round lines live in the block
    assert re.search(r"\[glth +\d+s\] trial aaaa TERMINATED \(3/4 rounds, 1/2 trials done\)", out)
    assert re.search(r"\[glth +\d+s\] trial bbbb ERROR", out)
    assert "  aaaa  round 1/1  test acc 0.7500  density 0.3000" in out
    final = out.rsplit("\x1b[J", 1)[1]  # what stays on the screen
    assert re.match(r"\[glth 0:00:0\d\] 3/4 rounds · trials: 1 done, 0 running, 0 pending, 1 failed · ETA", final), (
        final
    )
    monkeypatch.setenv("GLTH_PROGRESS", "plain")
    assert not progress.live_wanted()
