"""Shared fixtures: where the offline datasets live, and a small CPU-friendly torch setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest_plugins = ["s3_server"]  # session fixture s3_server (moto on loopback), s3_env

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GLTH_SHARED_DATA", REPO.parent / "shared" / "data"))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

torch.set_num_threads(1)  # tests run next to Ray workers on 2 cores


#: session fixtures costly enough (a whole sweep) that their users share one xdist worker
SHARED_SESSION_FIXTURES = ("paper_sweep", "small_sweep")

#: the xdist groups that take longest (minutes each: real sweeps with faults injected, multi-node
#: clusters), collected first so that ``--no-loadscope-reorder`` hands them out first and the many
#: short groups fill the other worker meanwhile: xdist's own order (most tests first) left these,
#: which have few tests, to the end, where they ran alone
LONGEST_FIRST = ("ray_clusters", "test_faults", "test_faults_second")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(config, items):
    """``make test`` runs the suite on two xdist workers with ``--dist loadgroup``: a module's tests
    stay on one worker (its module fixtures start once), and so do the users of a shared session
    fixture. A test marked ``xdist_group(NAME)`` itself keeps that group: a long module splits its
    tests in two groups (each worker then builds the module fixtures the group uses)."""
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            shared = [f for f in SHARED_SESSION_FIXTURES if f in getattr(item, "fixturenames", ())]
            item.add_marker(pytest.mark.xdist_group(shared[0] if shared else item.module.__name__))
        if getattr(config.option, "loadgroup", False):  # set in xdist workers under --dist loadgroup
            _group_in_nodeid(item)
    items.sort(key=_longest_first)  # stable: the rest keep their order


def _longest_first(item: pytest.Item) -> int:
    names = {str(m.args[0]) for m in item.iter_markers("xdist_group") if m.args}
    return min((LONGEST_FIRST.index(n) for n in names if n in LONGEST_FIRST), default=len(LONGEST_FIRST))


def _group_in_nodeid(item: pytest.Item) -> None:
    """The group suffix ``@NAME`` that xdist's loadgroup scheduler reads from a test's nodeid.

    pytest-xdist 3.8 appends it by assigning ``item._nodeid``; pytest 9.2 keeps a node's id in
    ``item._id`` (a NodeId) and no longer reads ``_nodeid``, so the suffix never reached the
    scheduler: every test was a unit of its own, the two workers took a module's tests turn about,
    and two copies of a module's fixtures ran at once (test_cluster_storage's cluster on both
    workers, same node addresses: one's node-loss test killed the other's worker node). Here the
    suffix goes into ``_id`` as xdist would put it (group names sorted, joined by ``_``); on a
    pytest whose ``_nodeid`` still counts, xdist's own assignment does it and this does nothing."""
    if not hasattr(item, "_id") or "@" in item.nodeid:
        return
    from _pytest.nodeid import NodeId

    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(names))}")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _need(SHARED_DATA / "mnist", "MNIST (../shared/data/mnist)")


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    return _need(SHARED_DATA / "cifar10-approx", "approximate CIFAR-10 (../shared/data/cifar10-approx)")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return _need(FASHION_DIR, "Fashion-MNIST (Debian package dataset-fashion-mnist)")


# -- one small paper-style sweep shared by test_export / test_analysis / test_plots -------------
PAPER_SWEEP_SPEC = """
name: paper-digits
experiment: glth-paper-test
dataset: digits
model: mlp_300_100
dictionary:
  - {kind: canonical}
  - {kind: bottleneck, layer: "1", basis: identity}
  - {kind: bottleneck, layer: "1", basis: dct}
control: [none, random_mask, reinit]
tau: 0.5
seeds: [0, 1]
rounds: 5            # densities 1, 1/2, 1/4, 1/8, 1/16: the last round is 93.75% compressed
train: {epochs: 1, batch_size: 64, lr: 0.05}
resources: {cpu: 1}
max_concurrent: 2
"""


@pytest.fixture(scope="session")
def paper_sweep(tmp_path_factory):
    """`glth run` of PAPER_SWEEP_SPEC once per session: {"cwd", "out", "sweep_id", "sweep_dir", "uri", "rows"}."""
    import subprocess
    import sys

    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet

    cwd = tmp_path_factory.mktemp("paper_sweep")
    (cwd / "spec.yaml").write_text(PAPER_SWEEP_SPEC)
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    glth = str(Path(sys.executable).with_name("glth"))
    proc = subprocess.run(
        [glth, "run", "spec.yaml", "--out", "out", "--tracking-uri", uri],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = [d for d in (cwd / "out").iterdir() if d.is_dir()]
    return {
        "cwd": cwd,
        "out": cwd / "out",
        "sweep_id": sweep_dir.name,
        "sweep_dir": sweep_dir,
        "uri": uri,
        "rows": parquet.read_rounds(SweepDir.under(cwd / "out", sweep_dir.name)),
        "stdout": proc.stdout,
    }


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory):
    """`glth run` of test_sweep's small spec (canonical and bottleneck, 2 seeds, 3 rounds of 1 epoch)
    once per session, shared by test_sweep and test_batched_sweep (its separate trials):
    {"cwd", "uri", "proc", "sweep_id", "rows"}."""
    from test_sweep import glth, write_spec

    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet

    cwd = tmp_path_factory.mktemp("small_sweep")
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    proc = glth("run", str(write_spec(cwd)), "--out", "out", "--tracking-uri", uri, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_id = next((cwd / "out").iterdir()).name
    return {
        "cwd": cwd,
        "uri": uri,
        "proc": proc,
        "sweep_id": sweep_id,
        "rows": parquet.read_rounds(SweepDir.under(cwd / "out", sweep_id)),
    }
