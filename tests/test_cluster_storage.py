"""`glth run` across a node boundary that shares no disk (tests/cluster_ns.py), end to end (issue 11).

The cluster: a head with no CPU for trials, and one worker node in its own mount namespace with a
private tmpfs over ``private_dir`` (the driver's output directory), so every trial runs on the
worker and anything it writes to a local path lands on that node's disk only. The drivers are
real ``glth run`` processes; results, plot and export run from the driver's side afterwards.

a. ``--storage <a directory of the driver>``: refused before any trial, in one line naming the
   worker node that cannot see it (``run_cmd.check_nodes_reach``). What that check prevents is
   shown through the library call, which does not check: the trials "succeed", the driver has
   their rows, and their tickets and resume state are on the worker's disk, out of the driver's
   reach (so ``glth export`` cannot export them).
b. ``--storage <a directory both nodes see>`` (EFS/NFS): completes on the worker, rows exactly once.
c. ``--storage s3://…`` on the loopback S3 server: the same, nothing on either disk.
d. Node loss: the worker machine killed (raylet by pid, then its other processes) while a trial
   runs on it; a fresh worker (empty private dir) joins; the trial resumes from its last round's
   state in storage; rows exactly once; every ticket bit-identical to (b)'s uninterrupted run.
e. A local Ray with S3 storage: the ``glth run`` process group SIGKILLed once a round is stored,
   rerun: rows exactly once, rows and tickets equal to the uninterrupted run's.

All runs use one spec, so every storage must give the same numbers (CPU, one thread per trial).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import ray
import torch
from cluster_ns import NamespacedCluster, mount_namespace_unavailable
from mlflow_db import sqlite_uri

from orchestrator import cli, spec
from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet
from orchestrator.storage import Storage

# one pytest-xdist group for the modules that start multi-node Ray clusters (tests/conftest.py):
# two clusters at once on 2 cores, on the same loopback addresses, had a live worker node declared dead
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray_clusters")]

GLTH = str(Path(sys.executable).with_name("glth"))
SPEC = """name: xnode
experiment: glth-xnode
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.3
seeds: [0, 1]
rounds: 3
train: {epochs: 1, batch_size: 64, lr: 0.05}
resources: {cpu: 1}
max_concurrent: 1     # one trial after the other: a window to interrupt a sweep in
"""
SWEEP = spec.parse(SPEC)
IDS = sorted(t.trial_id for t in SWEEP.trials)
ROUNDS = SWEEP.rounds
#: the row columns that must not depend on where or when a trial ran
DETERMINISTIC = [
    "trial_id",
    "round",
    "seed",
    "dictionary",
    "kept",
    "total",
    "density",
    "compression",
    "test_accuracy",
    "test_loss",
    "val_accuracy",
    "train_accuracy",
    "train_loss",
    "epochs",
    "status",
    "config",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    """One cluster for the module, this process a driver too; S3 credentials in every node's env."""
    if why := mount_namespace_unavailable():
        pytest.skip(why)
    base = tmp_path_factory.mktemp("xs")
    (base / "spec.yaml").write_text(SPEC)
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("AWS_") or k in ("GLTH_S3_ENDPOINT", "GLTH_STORAGE")]:
            mp.delenv(k)
        for k, v in s3_server.env.items():
            mp.setenv(k, v)
        with (
            NamespacedCluster(base / "out", base / "shared", env=s3_server.env, head_cpus=0, worker_cpus=1) as c,
            c.driver(),
        ):
            c.base = base
            c.worker_nodes = [c.worker_node_id()]
            yield c
    assert c.leftovers() == [], "processes of the cluster outlived stop()"


def glth_run(
    cluster,
    storage: str,
    db: str,
    wait: bool = True,
    cwd: Path | None = None,
    env: dict | None = None,
    name: str | None = None,
):
    """``glth run spec.yaml --storage STORAGE`` (a process group of its own) with MLflow in ``<cwd>/<db>.db``;
    on the cluster (``--address``) unless ``env`` is given (then a local Ray)."""
    cwd = cwd or cluster.base
    argv = [GLTH, "run", "spec.yaml", "--storage", storage, "--tracking-uri", sqlite_uri(cwd / f"{db}.db")]
    if env is None:
        argv += ["--address", cluster.address]
    stderr_path = cwd / f"{name or db}.stderr"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env or cluster.env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
    proc.stderr_path = stderr_path
    if wait:
        proc.stdout_text = proc.communicate(timeout=300)[0]
        proc.stderr_text = proc.stderr_path.read_text()
    return proc


def nodes_of(stderr: str) -> set[str]:
    return set(re.findall(r"runs on node (\w+)", stderr))


def exactly_once(rows) -> None:
    assert len(rows) == len(IDS) * ROUNDS and not rows.duplicated(["trial_id", "round"]).any()
    assert sorted(rows.trial_id.unique()) == IDS and (rows.status == "ok").all()
    assert rows.groupby("trial_id")["round"].apply(list).map(lambda r: r == list(range(ROUNDS))).all()


def same_tickets(a: SweepDir, b: SweepDir) -> None:
    """Every round's ticket of every trial, bit for bit: mask, kept coefficients, free weights."""
    for tid in IDS:
        ta, tb = a.tickets(tid), b.tickets(tid)
        assert sorted(ta) == sorted(tb) == list(range(ROUNDS)), (tid, sorted(ta), sorted(tb))
        for r in ta:
            assert torch.equal(ta[r].mask, tb[r].mask), (tid, r)
            assert torch.equal(ta[r].kept_coeffs, tb[r].kept_coeffs), (tid, r)
            assert ta[r].free.keys() == tb[r].free.keys() and all(
                torch.equal(ta[r].free[k], tb[r].free[k]) for k in ta[r].free
            )


def mlflow_steps(db: Path) -> dict[str, list[int]]:
    """trial id → the steps of its MLflow child run's test_accuracy (each round once)."""
    from mlflow.tracking import MlflowClient

    from orchestrator.sinks.mlflow import find_runs

    uri = f"sqlite:///{db}"
    out = {}
    for tid in IDS:
        _, child = find_runs(uri, "glth-xnode", SWEEP.sweep_id, tid)
        out[tid] = (
            sorted(m.step for m in MlflowClient(uri).get_metric_history(child, "test_accuracy")) if child else None
        )
    return out


def reads_from_the_driver(
    key: str, storage: str, where: SweepDir, rows, plots_dir: Path, cwd: Path, db: str, capsys, monkeypatch
) -> None:
    """``glth results | plot | export | sync`` of the sweep on ``storage`` from the driver's side (in-process)."""
    monkeypatch.chdir(cwd)
    uri = ["--tracking-uri", f"sqlite:///{cwd / db}.db"]
    capsys.readouterr()
    assert cli.main(["results", key, "--storage", storage, "--format", "json", *uri]) == 0
    table = json.loads(capsys.readouterr().out)
    means = rows.groupby("round")["test_accuracy"].mean()
    assert [t["round"] for t in table] == list(range(ROUNDS))
    for t in table:
        assert t["test_accuracy_mean"] == pytest.approx(means[t["round"]], abs=1e-12)
        assert t["overlap_seeds"] == 2  # both seeds' masks read from the storage for the overlap
    assert cli.main(["plot", where.uri, *uri]) == 0
    pngs = re.findall(r"plot: (\S+)", capsys.readouterr().out)
    assert pngs and all(Path(p).parent == plots_dir and Path(p).stat().st_size > 10_000 for p in pngs)
    out = cwd / f"{db}-ticket.pt"
    assert cli.main(["export", SWEEP.sweep_id[:8], "--storage", storage, "--trial", IDS[1], "-o", str(out), *uri]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    last = rows[(rows.trial_id == IDS[1]) & (rows["round"] == ROUNDS - 1)].iloc[0]
    assert meta["round"] == ROUNDS - 1 and meta["sweep_id"] == SWEEP.sweep_id
    assert meta["test_accuracy_recorded"] == last.test_accuracy and meta["max_abs_diff_vs_masked"] <= 1e-4
    capsys.readouterr()
    assert cli.main(["sync", where.uri, *uri]) == 0  # the run synced already: nothing is logged twice
    assert capsys.readouterr().out.startswith(f"sync {SWEEP.sweep_id}: ")
    assert mlflow_steps(cwd / f"{db}.db") == {tid: list(range(ROUNDS)) for tid in IDS}


# -- a. a directory of the driver ----------------------------------------------------------------
@ray.remote(num_cpus=0)
def tree(d: str) -> list[str]:
    """Every file under ``d`` as this node sees it."""
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob("*") if p.is_file()) if os.path.isdir(d) else []


def on_worker(d: Path) -> list[str]:
    return ray.get(tree.options(resources={"worker": 1}).remote(str(d)))


def nothing_on_the_worker_disk(cluster) -> bool:
    """No file in the worker's private dir but what (a)'s library run left there on purpose."""
    return all(f.startswith("runs-lib/") for f in on_worker(cluster.private_dir))


def test_a_directory_of_the_driver_is_refused_before_any_trial(cluster):
    private = cluster.private_dir / "runs-a"
    proc = glth_run(cluster, str(private), "a")
    assert proc.returncode == 2, proc.stderr_text[-3000:]
    line = proc.stderr_text.strip()
    assert line == (
        f"glth: error: --storage: {private}: Ray node {cluster.worker_ip} does not see what this driver wrote there "
        f"(a directory of this machine only, not one every node mounts); on a cluster use a filesystem "
        f"every node mounts or s3://"
    ), line
    assert proc.stdout_text == "" and not private.exists()  # the probe file and the root it made are gone
    assert on_worker(cluster.private_dir) == []  # and no trial wrote anything there


def test_a_without_the_check_the_worker_refuses_a_storage_it_cannot_see(cluster, capsys):
    """Through ``run_sweep`` (the library call, which has no node check): each trial's worker finds
    no sweep directory where the driver made it and fails, rather than keep tickets and state on its
    own disk where the driver never sees them."""
    from orchestrator.sweep import run_sweep

    private = cluster.private_dir / "runs-lib"
    result = run_sweep(
        SWEEP.__class__(SWEEP.spec.model_copy(update={"max_failures": 0}), SWEEP.text, SWEEP.trials),
        str(private),
        tracking_uri=sqlite_uri(cluster.base / "lib.db"),
    )
    assert sorted(result.failed) == sorted(IDS)
    assert parquet.read_rounds(SweepDir.under(private, SWEEP.sweep_id)).empty
    assert on_worker(private / SWEEP.sweep_id) == []  # nothing stranded on the worker's disk
    capsys.readouterr()


# -- b. a directory both nodes see (EFS/NFS) -----------------------------------------------------
@pytest.fixture(scope="module")
def shared_run(cluster):
    """The uninterrupted run, on shared storage: (b) checks it, (d) and (e) compare with it."""
    storage = cluster.shared_dir / "runs-b"
    proc = glth_run(cluster, str(storage), "b")
    assert proc.returncode == 0, proc.stderr_text[-3000:]
    where = SweepDir(Storage.resolve(str(storage)), SWEEP.sweep_id)
    return {"proc": proc, "storage": storage, "where": where, "rows": parquet.read_rounds(where)}


def test_b_shared_directory_completes_on_the_worker(cluster, shared_run, capsys, monkeypatch):
    proc, storage, where, rows = (shared_run[k] for k in ("proc", "storage", "where", "rows"))
    assert nodes_of(proc.stderr_text) == {cluster.worker_nodes[0]}, proc.stderr_text[-2000:]
    exactly_once(rows)
    assert sorted(p.name for p in (storage / SWEEP.sweep_id / "state").iterdir()) == [f"{t}.pt" for t in IDS]
    assert mlflow_steps(cluster.base / "b.db") == {tid: list(range(ROUNDS)) for tid in IDS}
    assert nothing_on_the_worker_disk(cluster)
    reads_from_the_driver(
        "xnode", str(storage), where, rows, storage / SWEEP.sweep_id / "plots", cluster.base, "b", capsys, monkeypatch
    )
    assert (storage / SWEEP.sweep_id / "analysis.parquet").is_file()  # a local sweep keeps its outputs


# -- c. S3 -------------------------------------------------------------------------------------
def test_c_s3_completes_on_the_worker(cluster, shared_run, s3_env, capsys, monkeypatch):
    bucket = s3_env.make_bucket()
    uri = f"s3://{bucket}/sweeps"
    proc = glth_run(cluster, uri, "c")
    assert proc.returncode == 0, proc.stderr_text[-3000:]
    assert nodes_of(proc.stderr_text) == {cluster.worker_nodes[0]}
    where = SweepDir(Storage.resolve(uri), SWEEP.sweep_id)
    rows = parquet.read_rounds(where)
    exactly_once(rows)
    cols = DETERMINISTIC
    assert rows[cols].equals(shared_run["rows"][cols])  # the same numbers as on a shared disk
    keys = s3_env.keys(bucket, f"sweeps/{SWEEP.sweep_id}/")
    expected = {f"tickets/{tid}/round-{r:04d}.pt" for tid in IDS for r in range(ROUNDS)} | {
        f"state/{t}.pt" for t in IDS
    }
    assert expected | {"spec.yaml", "sweep.json"} <= {k.split("/", 2)[2] for k in keys}
    same_tickets(where, shared_run["where"])
    assert nothing_on_the_worker_disk(cluster) and not (cluster.base / "glth-runs").exists()
    reads_from_the_driver(
        SWEEP.sweep_id,
        uri,
        where,
        rows,
        cluster.base / "glth-outputs" / SWEEP.sweep_id / "plots",
        cluster.base,
        "c",
        capsys,
        monkeypatch,
    )
    assert (cluster.base / "glth-outputs" / SWEEP.sweep_id / "analysis.parquet").is_file()
    after = s3_env.keys(bucket, f"sweeps/{SWEEP.sweep_id}/")
    assert after == keys  # reading wrote nothing into the bucket


# -- d. node loss ------------------------------------------------------------------------------
def _stored_rounds(storage: Path, tid: str) -> int:
    d = storage / SWEEP.sweep_id / "tickets" / tid
    return len([n for n in os.listdir(d) if n.endswith(".pt")]) if d.is_dir() else 0


def _states(where: SweepDir) -> dict[str, int]:
    """trial id → the round its saved state resumes at (absent: no state yet)."""
    cls = SWEEP.trials[0].experiment.state_cls
    return {
        tid: where.load_batch_state(tid, cls).states[tid].round for tid in IDS if where.store.exists(f"state/{tid}.pt")
    }


def test_d_worker_node_loss_mid_trial(cluster, shared_run):
    storage = cluster.shared_dir / "runs-d"
    where = SweepDir(Storage.resolve(str(storage)), SWEEP.sweep_id)
    proc = glth_run(cluster, str(storage), "d", wait=False)
    try:
        deadline = time.monotonic() + 240
        state = storage / SWEEP.sweep_id / "state"
        while True:  # a round takes ~0.1 s: freeze the node the moment a trial has a state, then look
            while not any((state / f"{tid}.pt").exists() and _stored_rounds(storage, tid) < ROUNDS for tid in IDS):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr_path.read_text()[-3000:]
                time.sleep(0.005)
            frozen = cluster.freeze_worker_node()
            at_loss = _states(where)
            interrupted = [tid for tid, r in at_loss.items() if r < ROUNDS]
            if interrupted:
                break
            cluster.thaw(frozen)  # that trial had finished before the freeze: wait for the next one
            assert time.monotonic() < deadline, f"the sweep was never frozen mid-trial: {at_loss}"
        lost = cluster.pids["worker_raylet"]
        assert cluster.lose_worker_node() == lost
        assert _states(where) == at_loss  # nothing ran between the freeze and the loss
        assert len(cluster.wait_nodes(1, timeout=60)) == 1  # the head alone: nowhere to run a trial
        cluster.start_worker()
        cluster.wait_nodes(2, timeout=120)
        cluster.worker_nodes.append(cluster.worker_node_id())
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    err = proc.stderr_path.read_text()
    assert proc.returncode == 0, err[-3000:]
    for tid in interrupted:
        assert f"trial {tid} RECOVERING" in err and f"trial {tid} resumed at round {at_loss[tid]} " in err, err[-3000:]
    # the resumed trial ran on the new node; that it had run on the lost one is the state it left
    # there before the freeze (the only node with a CPU then). The driver's "runs on node" line for
    # the lost node is not asserted: the freeze can land before the driver got that node's first report.
    assert nodes_of(err) <= set(cluster.worker_nodes[-2:]) and cluster.worker_nodes[-1] in nodes_of(err)
    # the lost node's dataset reader went with it; the new node's read the dataset once for its trials
    assert "[glth] shared datasets: 1 read(s) on 1 node(s), " in err and "; 1 reader(s) lost with their node" in err
    rows = parquet.read_rounds(SweepDir.under(storage, SWEEP.sweep_id))
    exactly_once(rows)
    assert rows[DETERMINISTIC].equals(shared_run["rows"][DETERMINISTIC])
    same_tickets(where, shared_run["where"])
    assert mlflow_steps(cluster.base / "d.db") == {tid: list(range(ROUNDS)) for tid in IDS}


# -- e. a local Ray on S3, the driver killed ------------------------------------------------------
def test_e_local_ray_on_s3_survives_a_driver_kill(cluster, shared_run, s3_env, tmp_path):
    bucket = s3_env.make_bucket()
    uri = f"s3://{bucket}/local"
    where = SweepDir(Storage.resolve(uri), SWEEP.sweep_id)
    (tmp_path / "spec.yaml").write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_")) and k != "GLTH_STORAGE"}
    env.update({**s3_env.env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "glth-e-" + os.urandom(8).hex()})
    env["GLTH_ROWS_FLUSH_S"] = "0.3"  # rows on S3 mid-sweep (held 2 s, a quick sweep could end first)
    proc = glth_run(cluster, uri, "e", wait=False, cwd=tmp_path, env=env, name="e-killed")
    family: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 240
        while not s3_env.keys(bucket, f"local/{SWEEP.sweep_id}/rounds/"):  # a round's rows are stored
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr_path.read_text()[-3000:]
            with_children = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            family.update({p.pid: p for p in with_children})
            time.sleep(0.01)
        family.update({p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)})
        os.killpg(proc.pid, signal.SIGKILL)  # the driver's process group...
        for p in family.values():  # ...and every process it started, by pid (its local Ray's too)
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)
        psutil.wait_procs(list(family.values()), timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not [p.pid for p in family.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    before = parquet.read_rounds(where)
    assert 0 < len(before) < len(IDS) * ROUNDS, "the driver was not killed mid-sweep"
    at_kill = _states(where)
    complete = {tid for tid, r in at_kill.items() if (before.trial_id == tid).sum() == ROUNDS}

    again = glth_run(cluster, uri, "e", cwd=tmp_path, env=env, name="e-again")
    assert again.returncode == 0, again.stderr_text[-3000:]
    assert f"{len(IDS)} trials ({len(complete)} already complete)" in again.stderr_text
    assert f"{len(IDS) - len(complete)} trials computed, {len(complete)} reused" in again.stdout_text
    assert "[glth] shared datasets: 1 read(s) on 1 node(s), " in again.stderr_text  # the new Ray's reader
    for tid, r in at_kill.items():
        if tid not in complete and 0 < r < ROUNDS:
            assert f"trial {tid} resumed at round {r} " in again.stderr_text, again.stderr_text[-3000:]
    rows = parquet.read_rounds(where)
    exactly_once(rows)
    assert rows[DETERMINISTIC].equals(shared_run["rows"][DETERMINISTIC])
    same_tickets(where, shared_run["where"])
    assert mlflow_steps(tmp_path / "e.db") == {tid: list(range(ROUNDS)) for tid in IDS}
