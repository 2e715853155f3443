"""Real faults in real processes: glth keeps working and loses nothing.

Every test here starts the real ``glth`` console script (its own local Ray on 127.0.0.1), injects a
fault from outside (SIGKILL of the driver's whole process tree, SIGKILL of trial workers, an MLflow
server that is down or dies) and compares what is left on disk and in MLflow with an uninterrupted
sweep of the same spec. Each test prints what it injected and what it found (``pytest -s``).

The reference sweep (module fixture) runs with its MLflow server down the whole time and a reader
process hammering its Parquet directory: it is the uninterrupted baseline, the "MLflow down" case
and the "readers during a sweep" case at once. Every run gets its own ``RAY_TMPDIR``, so the
processes of its Ray can be found (their environment carries it) and checked to be gone.

The reference's trials each read their dataset themselves (``GLTH_SHARE_DATASETS=0``); every
faulted run shares one read per node (``orchestrator.shared_data``), so each comparison with the
reference is also one of the two data paths, and each fault is one the shared dataset survives.

What MLflow could not take is kept on disk: a sweep's Parquet rows and its ``spec.yaml`` are the
record that ``glth sync`` (and the end of every ``glth run``) replays into MLflow, idempotently.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from mlflow_db import sqlite_uri
from procs import MlflowServer

from glth_core.experiment import TIMING_COLUMNS
from orchestrator import spec as spec_mod
from orchestrator.layout import SweepDir
from orchestrator.sinks import parquet

pytestmark = pytest.mark.slow
#: the module's longest tests, a group of their own under pytest-xdist (tests/conftest.py): the
#: module is a quarter of the suite, so on two workers these run beside the rest (each worker then
#: runs the reference sweep once)
SECOND_WORKER = pytest.mark.xdist_group("test_faults_second")

GLTH = str(Path(sys.executable).with_name("glth"))
ROUNDS = 7
EXPERIMENT = "glth-faults"

# Two trials of very different speed (epochs 2 vs 16), so that one is complete while the other is
# mid-trajectory; the slow one's round takes ~1-2 s on 2 busy cores.
SPEC = f"""
name: NAME
experiment: {EXPERIMENT}
dataset: digits
model: mlp_300_100
dictionary: {{kind: canonical}}
tau: 0.3
seeds: [0]
rounds: {ROUNDS}
train: {{epochs: [2, 16], batch_size: 64, lr: 0.05}}
resources: {{cpu: 1}}
max_concurrent: 2
max_failures: 10
"""


# -- running glth -----------------------------------------------------------------------------


def write_spec(folder: Path, name: str, text: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text.replace("NAME", name))
    return path


def sweep_id_of(spec_path: Path) -> str:
    return spec_mod.load(spec_path).sweep_id


class Glth:
    """One `glth` process with its own RAY_TMPDIR; output goes to files (a pipe could fill and block it)."""

    def __init__(self, *args: str, cwd: Path, env: dict | None = None):
        self.args, self.cwd = args, Path(cwd)
        self.ray_tmp = tempfile.mkdtemp(prefix="glf-", dir="/tmp")  # short: Ray's unix socket paths
        self.env = {**os.environ, **(env or {}), "RAY_TMPDIR": self.ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        self.env["PYTHONUNBUFFERED"] = "1"
        stamp = time.monotonic_ns()
        self.out_path, self.err_path = self.cwd / f"glth-{stamp}.out", self.cwd / f"glth-{stamp}.err"
        self.proc: subprocess.Popen | None = None
        self.started_ray: bool | None = None  # known once it has ended

    def start(self) -> "Glth":
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [GLTH, *self.args], cwd=self.cwd, env=self.env, stdout=out, stderr=err, start_new_session=True
            )
        return self

    def wait(self, timeout: float = 600) -> "Glth":
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                kill_tree(self.proc.pid)
            kill_ray_of(self.ray_tmp)
            self.started_ray = any(Path(self.ray_tmp).iterdir())
            shutil.rmtree(self.ray_tmp, ignore_errors=True)  # Ray's session dir: logs, sockets
        return self

    def run(self, timeout: float = 600) -> "Glth":
        return self.start().wait(timeout)

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def ray_started(self) -> bool:
        return self.started_ray


def glth(*args: str, cwd: Path, timeout: float = 600) -> Glth:
    return Glth(*args, cwd=cwd).run(timeout)


class InProcess:
    """A `glth` command that starts no Ray (``sync``) run in this process: the same CLI code path as
    the console script, without another interpreter's start (imports) on 2 busy cores."""

    def __init__(self, *args: str, cwd: Path):
        from orchestrator import cli

        out, err = io.StringIO(), io.StringIO()
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            self.returncode = cli.main(list(args))
        self.stdout, self.stderr = out.getvalue(), err.getvalue()


def kill_tree(pid: int) -> list[psutil.Process]:
    """SIGKILL ``pid`` and every descendant at once, as a crash of the machine would; returns them."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    return procs


def ray_processes(ray_tmp: str) -> list[psutil.Process]:
    """Live processes of the Ray started with RAY_TMPDIR=ray_tmp (children inherit the variable)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("RAY_TMPDIR") == ray_tmp and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def kill_ray_of(ray_tmp: str) -> int:
    procs = ray_processes(ray_tmp)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    return len(procs)


def summary_counts(stdout: str) -> tuple[int, int]:
    m = re.search(r"(\d+) trials computed, (\d+) reused", stdout)
    assert m, stdout[-2000:]
    return int(m.group(1)), int(m.group(2))


def shared_reads(stderr: str) -> tuple[int, int, int] | None:
    """(reads of the dataset's files, nodes, requests served) from the driver's line about its
    shared datasets (orchestrator.shared_data); None without one (sharing off)."""
    m = re.findall(r"\[glth\] shared datasets: (\d+) read\(s\) on (\d+) node\(s\), (\d+) request", stderr)
    assert len(m) <= 1, m
    return tuple(map(int, m[0])) if m else None


def sync_counts(stdout: str) -> dict:
    m = re.search(r"^sync \S+: (\{.*\})$", stdout, re.M)
    assert m, stdout[-2000:]
    return ast.literal_eval(m.group(1))


# -- reading results --------------------------------------------------------------------------


def rows_per_trial(out: Path, sweep_id: str) -> dict[str, int]:
    counts = {}
    for tid, f in parquet.trial_files(SweepDir.under(out, sweep_id)).items():
        try:
            counts[tid] = pq.read_metadata(f).num_rows
        except (OSError, ValueError):  # replaced between the listing and the read: read it next time
            pass
    return counts


def comparable(rows: pd.DataFrame) -> pd.DataFrame:
    """Every column but wall_seconds (the only one that may differ between identical computations)."""
    return rows.drop(columns=list(TIMING_COLUMNS)).sort_values(["trial_id", "round"]).reset_index(drop=True)


def assert_rows_equal(rows: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert not rows.duplicated(["trial_id", "round"]).any(), "duplicate (trial_id, round) rows"
    pd.testing.assert_frame_equal(comparable(rows), comparable(reference), check_exact=True)


def mlflow_runs(uri: str, sweep_id: str) -> tuple:
    """(parent run, {trial_id: child run}) of a sweep."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], f"tags.`glth.sweep_id` = '{sweep_id}'", max_results=1000)
    parents = [r for r in runs if r.data.tags.get("glth.role") == "parent"]
    assert len(parents) == 1, f"{len(parents)} parent runs for {sweep_id}"
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'", max_results=1000
    )
    by_trial: dict = {}
    for c in children:
        tid = c.data.tags["glth.trial_id"]
        assert tid not in by_trial, f"two child runs for trial {tid}"
        by_trial[tid] = c
    return parents[0], by_trial


def histories(uri: str, sweep_id: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """trial_id → metric → [(step, value)] for every metric but the timings and the worker's system
    metrics (system/*: CPU and memory use differ from run to run); one entry per step."""
    client = MlflowClient(uri)
    out = {}
    for tid, run in mlflow_runs(uri, sweep_id)[1].items():
        out[tid] = {}
        for key in sorted(run.data.metrics):
            if key in TIMING_COLUMNS or key.startswith("system/"):
                continue
            hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            steps = [s for s, _ in hist]
            assert len(steps) == len(set(steps)), f"trial {tid} {key}: a step logged twice: {steps}"
            out[tid][key] = hist
    return out


def assert_one_step_per_round(hist: dict, rows: pd.DataFrame) -> None:
    for tid, metrics in hist.items():
        rounds = sorted(rows.loc[(rows.trial_id == tid) & (rows.status == "ok"), "round"])
        assert [s for s, _ in metrics["density"]] == rounds, (
            f"trial {tid}: steps {metrics['density']} vs rounds {rounds}"
        )
        got = [v for _, v in metrics["test_accuracy"]]
        want = rows.loc[(rows.trial_id == tid) & (rows.status == "ok")].sort_values("round").test_accuracy.tolist()
        assert got == want, f"trial {tid}: MLflow test_accuracy {got} vs Parquet {want}"


# -- the reference sweep: MLflow down all along, readers all along ----------------------------

READER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import duckdb, pandas as pd
    rounds, stop, report = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    seen, errors = {"pandas": [], "duckdb": []}, []
    while not stop.exists():
        if not any(rounds.glob("*/*.parquet")):  # before the first file there is nothing to read
            time.sleep(0.05)
            continue
        for how in seen:
            try:
                if how == "pandas":
                    n = len(pd.read_parquet(rounds))
                else:
                    q = f"SELECT count(*) FROM read_parquet('{rounds}/**/*.parquet', hive_partitioning=true)"
                    n = duckdb.sql(q).fetchall()[0][0]
                seen[how].append(n)
            except Exception as e:  # any failure is the finding
                errors.append(f"{how}: {e!r}"[:300])
        time.sleep(0.1)
    report.write_text(json.dumps({"seen": seen, "errors": errors}))
""")


INTRUDER_PATIENCE_S = 30  # a refused client says why within seconds; the fixture waits this long for it
INTRUDER = (
    "import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); print('JOINED', ray.cluster_resources())"
)


def intrude(run: Glth, timeout: float = 300) -> dict:
    """Once the sweep's Ray is up, what it listens on, and a client without its token trying to join."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.returncode is None:
        time.sleep(0.5)
        gcs = [p for p in ray_processes(run.ray_tmp) if p.name() == "gcs_server"]
        try:  # the GCS picks its port at start (--gcs_server_port=0): ask the kernel where it listens
            port = next(
                (c.laddr.port for p in gcs for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN), None
            )
        except psutil.Error:
            port = None
        if port and any(p.name() == "raylet" for p in ray_processes(run.ray_tmp)):
            break
    else:
        return {"port": None}
    listening = set()
    for p in ray_processes(run.ray_tmp):
        try:
            listening |= {
                f"{p.name()}@{c.laddr.ip}" for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN
            }
        except psutil.Error:
            pass
    auth_mode = set()
    for p in gcs:  # read now: the sweep may end (and its GCS with it) while the client below tries
        try:
            auth_mode.add(p.environ().get("RAY_AUTH_MODE"))
        except psutil.Error:
            auth_mode.add("<gone>")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="gli-", dir="/tmp")
    # A refused client may exit at once or keep retrying (Ray retries an InvalidAuthToken answer
    # for minutes on some machines): give it INTRUDER_PATIENCE_S, then end it; it never joined.
    probe = subprocess.Popen(
        [sys.executable, "-c", INTRUDER, f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = probe.communicate(timeout=INTRUDER_PATIENCE_S)
        gave_up = False
    except subprocess.TimeoutExpired:
        kill_tree(probe.pid)
        stdout, stderr = probe.communicate()
        gave_up = True
    kill_ray_of(env["RAY_TMPDIR"])
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    return {
        "port": port,
        "listening": sorted(listening),
        "rc": probe.returncode,
        "stdout": stdout,
        "stderr": stderr[-3000:],
        "still_retrying": gave_up,
        "token_line": next((ln for ln in stderr.splitlines() if "token" in ln.lower()), ""),
        "auth_mode": auth_mode,
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted sweep: MLflow server down from start to end, a reader process throughout;
    then the server comes up (same backend DB) and `glth sync` runs twice. Its trials read their
    dataset each for itself (``GLTH_SHARE_DATASETS=0``), as a library call does: the faulted runs,
    which share one read per node, must give its rows bit for bit."""
    tmp = tmp_path_factory.mktemp("reference")
    server = MlflowServer(tmp)  # not started: the sweep logs to a port where nothing listens
    spec_path = write_spec(tmp, "faults")
    sweep_id = sweep_id_of(spec_path)
    stop, report = tmp / "reader.stop", tmp / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp / "out" / sweep_id / "rounds"), str(stop), str(report)]
    )
    t0 = time.monotonic()
    run = Glth(
        "run", str(spec_path), "--out", "out", "--tracking-uri", server.uri, cwd=tmp, env={"GLTH_SHARE_DATASETS": "0"}
    ).start()
    try:
        intruder = intrude(run)
        run.wait(timeout=600)
    finally:
        stop.touch()
        reader.wait(timeout=120)
        if run.returncode is None:
            run.wait(timeout=60)
    sweep_s = time.monotonic() - t0
    rows = parquet.read_rounds(SweepDir.under(tmp / "out", sweep_id))
    server.start()
    syncs = [InProcess("sync", sweep_id, "--out", "out", "--tracking-uri", server.uri, cwd=tmp) for _ in range(2)]
    yield {
        "tmp": tmp,
        "spec": spec_path,
        "sweep_id": sweep_id,
        "run": run,
        "rows": rows,
        "server": server,
        "uri": server.uri,
        "syncs": syncs,
        "reader": json.loads(report.read_text()),
        "sweep_s": sweep_s,
        "intruder": intruder,
    }
    server.stop()


def test_mlflow_down_for_the_whole_sweep_then_sync_backfills_exactly_once(reference):
    run, rows = reference["run"], reference["rows"]
    print(
        f"\ninjected: MLflow tracking server at {reference['uri']} down for the whole sweep ({reference['sweep_s']:.0f} s)"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "unavailable" in run.stderr
    assert shared_reads(run.stderr) is None  # sharing off: the baseline loads as a library call does
    assert len(rows) == 2 * ROUNDS and set(rows.status) == {"ok"}
    first, second = (sync_counts(s.stdout) for s in reference["syncs"])
    print(f"found: exit 0, {len(rows)} Parquet rows; first sync {first}; second sync {second}")
    assert all(s.returncode == 0 for s in reference["syncs"]), reference["syncs"][0].stderr[-2000:]
    assert first == {"parents_created": 1, "children_created": 2, "steps_logged": 2 * ROUNDS, "children_finished": 2}
    assert second == {"parents_created": 0, "children_created": 0, "steps_logged": 0, "children_finished": 0}
    parent, children = mlflow_runs(reference["uri"], reference["sweep_id"])
    assert parent.info.status == "FINISHED" and {c.info.status for c in children.values()} == {"FINISHED"}
    assert set(children) == set(rows.trial_id)
    assert_one_step_per_round(histories(reference["uri"], reference["sweep_id"]), rows)


def test_readers_during_a_sweep_never_see_a_partial_parquet_file(reference):
    seen, errors = reference["reader"]["seen"], reference["reader"]["errors"]
    print(
        "\ninjected: a reader process looping pandas.read_parquet + duckdb read_parquet on the rounds dir "
        "while the sweep wrote it"
    )
    print(
        f"found: {len(seen['pandas'])} pandas reads, {len(seen['duckdb'])} duckdb reads, {len(errors)} errors; "
        f"row counts seen {sorted(set(seen['pandas']) | set(seen['duckdb']))}"
    )
    assert errors == []
    for how, counts in seen.items():
        assert len(counts) >= 3, f"{how}: only {len(counts)} reads during the sweep"
        assert counts == sorted(counts), f"{how}: row count went down: {counts}"
        assert max(counts) <= 2 * ROUNDS
    assert len(reference["rows"]) == 2 * ROUNDS


def test_the_local_ray_refuses_a_client_without_its_token(reference):
    """Ray binds its servers to every interface (not only 127.0.0.1), so the local Ray glth
    starts must authenticate: a per-process random token (orchestrator.sweep._local_auth)."""
    intruder = reference["intruder"]
    print(f"\ninjected: during the sweep, a client without the token joins its GCS at 127.0.0.1:{intruder['port']}")
    assert intruder["port"], "never saw the sweep's GCS"
    exposed = [x for x in intruder["listening"] if not x.endswith(("@127.0.0.1", "@::1"))]
    print(
        f"found: Ray listens beyond loopback on {exposed}; GCS auth mode {intruder['auth_mode']}; "
        f"the client {f'was still retrying after {INTRUDER_PATIENCE_S} s, ended' if intruder['still_retrying'] else 'exited'} "
        f"{intruder['rc']}: {intruder['token_line'][-200:]}"
    )
    assert intruder["auth_mode"] == {"token"}
    assert "JOINED" not in intruder["stdout"]
    assert intruder["still_retrying"] or intruder["rc"] != 0  # ended by us (its status then is moot), or failed
    assert intruder["token_line"]  # refused for its missing token, not for another reason


# -- 1. the driver dies ------------------------------------------------------------------------


def received_rounds(stderr: str) -> dict[str, int]:
    """trial_id → rounds the driver has received from it (Progress says each round's report, after
    the row writer took it: ``trial <id> round <n>: …``)."""
    got: dict[str, int] = {}
    for m in re.finditer(r"trial (\w+) round (\d+):", stderr):
        got[m.group(1)] = max(got.get(m.group(1), 0), int(m.group(2)) + 1)
    return got


def held_unwritten(counts: dict[str, int], received: dict[str, int]) -> bool:
    """One trial complete on disk, and one with rows on disk and more rounds received, not all of
    them: the driver holds rounds it has not written."""
    complete = [t for t, n in counts.items() if n == ROUNDS]
    return bool(complete) and any(1 <= n < received.get(t, 0) < ROUNDS for t, n in counts.items())


def test_driver_killed_mid_sweep_then_resume_finishes_it_without_recomputing(reference, tmp_path):
    """Killed while it holds rounds it received but has not written (the rows writer holds a trial's
    rows up to 2 s and writes behind Tune's loop): the resumed trial's saved state carries them, and
    the next run has every row once, equal to the uninterrupted sweep's."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    spec_path = write_spec(tmp_path, "faults")
    sweep_id, out = reference["sweep_id"], tmp_path / "out"
    # rows held 0.3 s, not 2: on a quiet machine the slow trial's 7 rounds take ~2 s, and rows must
    # reach the disk mid-trial for a moment with some written and later ones held
    run = Glth(
        "run", str(spec_path), "--out", "out", "--tracking-uri", uri, cwd=tmp_path, env={"GLTH_ROWS_FLUSH_S": "0.3"}
    ).start()
    killed, counts, received = None, {}, {}
    deadline = time.monotonic() + 420
    try:
        while killed is None and time.monotonic() < deadline and run.returncode is None:
            time.sleep(0.1)
            received = received_rounds(run.stderr)  # read before the files: what is on disk is never newer
            if not held_unwritten(counts := rows_per_trial(out, sweep_id), received):
                continue
            os.kill(run.proc.pid, signal.SIGSTOP)  # the driver frozen: no write lands while the files are read
            if held_unwritten(counts := rows_per_trial(out, sweep_id), received):
                complete = [t for t, n in counts.items() if n == ROUNDS]
                mtimes = {t: parquet.trial_files(SweepDir.under(out, sweep_id))[t].stat().st_mtime_ns for t in complete}
                killed = kill_tree(run.proc.pid)
            else:
                os.kill(run.proc.pid, signal.SIGCONT)
    finally:
        if killed is None:
            run.wait(timeout=60)
    assert killed is not None, (
        f"never saw one trial complete and one with rounds received but not written: on disk {counts}, "
        f"received {received}; {run.stderr[-2000:]}"
    )
    orphans = ray_processes(run.ray_tmp)  # anything the kill missed (forked meanwhile) is killed too
    kill_ray_of(run.ray_tmp)
    left = ray_processes(run.ray_tmp)
    print(
        f"\ninjected: SIGKILL of the driver and its {len(killed) - 1} descendants (Ray included) "
        f"with rows per trial on disk {counts}, rounds received {received}; {len(orphans)} orphans found after, "
        f"{len(left)} left"
    )
    assert left == []
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in killed)
    run.wait(timeout=30)  # reaps the killed driver, removes its Ray's temp dir

    resumed = glth("run", str(spec_path), "--out", "out", "--tracking-uri", uri, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    computed, reused = summary_counts(resumed.stdout)
    resumed_at = {
        m.group(1): int(m.group(2)) for m in re.finditer(r"trial (\w+) resumed at round (\d+)", resumed.stderr)
    }
    now = {t: parquet.trial_files(SweepDir.under(out, sweep_id))[t].stat().st_mtime_ns for t in mtimes}
    print(
        f"found: resume exit 0, '{computed} trials computed, {reused} reused'; partial trials resumed at "
        f"rounds {resumed_at}; complete trials' Parquet files untouched: {now == mtimes}"
    )
    assert "resuming" in resumed.stderr  # the partial trial resumed from its saved state
    assert shared_reads(resumed.stderr)[:2] == (1, 1)  # the new Ray's reader read the dataset once
    assert (computed, reused) == (len(counts) - len(mtimes), len(mtimes))
    assert now == mtimes, "a complete trial was recomputed"
    partial = [t for t in counts if t not in mtimes]
    for t in partial:  # from its saved state, past the rounds received but never written: not from round 0
        assert t in resumed_at and counts[t] < received[t] <= resumed_at[t], (t, resumed_at, resumed.stderr[-3000:])

    rows = parquet.read_rounds(SweepDir.under(out, sweep_id))
    assert_rows_equal(rows, reference["rows"])
    assert histories(uri, sweep_id) == histories(reference["uri"], sweep_id)
    parent, children = mlflow_runs(uri, sweep_id)
    assert parent.info.status == "FINISHED" and {c.info.status for c in children.values()} == {"FINISHED"}
    print(
        f"found: {len(rows)} rows equal to the uninterrupted sweep's (all columns but wall_seconds), each once; "
        f"MLflow histories equal, one step per round"
    )


# -- 2. trial workers die ----------------------------------------------------------------------


def trial_workers(driver_pid: int, trial_ids: set[str]) -> dict[str, psutil.Process]:
    """trial_id → its live worker (Tune names a trial's working directory by its trial id)."""
    try:
        procs = psutil.Process(driver_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for p in procs:
        try:
            if (
                "ImplicitFunc" in " ".join(p.cmdline())
                and p.status() != psutil.STATUS_ZOMBIE
                and Path(p.cwd()).name in trial_ids
            ):  # not before it has entered its trial's directory
                out[Path(p.cwd()).name] = p
        except psutil.Error:
            pass
    return out


def test_trial_workers_killed_five_times_lose_nothing(reference, tmp_path):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    spec_path = write_spec(tmp_path, "faults")
    sweep_id, out = reference["sweep_id"], tmp_path / "out"
    trial_ids = set(reference["rows"].trial_id)
    rng = random.Random(20261122)
    run = Glth("run", str(spec_path), "--out", "out", "--tracking-uri", uri, cwd=tmp_path).start()
    kills: list[tuple[str, int, int]] = []  # (trial, rounds the driver had received when killed, pid)
    killed_pids: set[int] = set()
    last_kill_rows: dict[str, int] = {}
    plan = None  # (trial, kill once the driver has received this many of its rounds)
    deadline = time.monotonic() + 480
    try:
        while len(kills) < 5 and time.monotonic() < deadline and run.returncode is None:
            time.sleep(0.2)
            # the driver's progress lines, not the rows on disk: those lag a running trial by up to 2 s
            counts = received_rounds(run.stderr)
            workers = {
                t: p
                for t, p in trial_workers(run.proc.pid, trial_ids).items()
                if p.pid not in killed_pids and counts.get(t, 0) < ROUNDS
            }
            if plan is not None and counts.get(plan[0], 0) >= ROUNDS:
                plan = None  # it finished first: choose again
            if plan is None and workers:
                tid = rng.choice(sorted(workers))
                now = counts.get(tid, 0)
                plan = (tid, min(ROUNDS - 1, max(now, last_kill_rows.get(tid, -1) + 1) + rng.randint(0, 1)))
            if plan is not None and plan[0] in workers and counts.get(plan[0], 0) >= plan[1]:
                tid, p = plan[0], workers[plan[0]]
                p.kill()
                killed_pids.add(p.pid)
                kills.append((tid, counts.get(tid, 0), p.pid))
                last_kill_rows[tid] = counts.get(tid, 0)
                plan = None
        run.wait(timeout=600)
    finally:
        if run.returncode is None:
            run.wait(timeout=60)
    print(f"\ninjected: {len(kills)} SIGKILLs of trial workers (trial, rounds received, pid): {kills}")
    reads = shared_reads(run.stderr)
    print(f"found: the dataset read {reads[0]} time(s) on {reads[1]} node(s), {reads[2]} worker request(s) served")
    assert reads[:2] == (1, 1)  # the reader outlives the workers: a restarted worker maps the data, unread
    assert len(kills) == 5, f"only {len(kills)} kills before the sweep ended: {run.stderr[-3000:]}"
    assert run.returncode == 0, run.stderr[-3000:]
    recovering = run.stderr.count("RECOVERING")
    resumed = re.findall(r"trial (\w+) resumed at round (\d+)", run.stderr)
    rows = parquet.read_rounds(SweepDir.under(out, sweep_id))
    print(
        f"found: exit 0, {recovering} trial recoveries, resumed at {resumed}, {len(rows)} rows, "
        f"{int(rows.duplicated(['trial_id', 'round']).sum())} duplicate (trial, round) rows"
    )
    assert recovering == 5
    assert_rows_equal(rows, reference["rows"])
    assert histories(uri, sweep_id) == histories(reference["uri"], sweep_id)
    print(
        "found: rows bit-identical to the uninterrupted sweep's (all columns but wall_seconds); "
        "MLflow histories equal, no step twice"
    )


# -- 3b. the MLflow server dies mid-sweep ------------------------------------------------------


def live_steps(uri: str) -> int:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return 0
    runs = client.search_runs([exp.experiment_id], "tags.`glth.role` = 'child'", max_results=1000)
    return sum(len(client.get_metric_history(r.info.run_id, "density")) for r in runs)


@SECOND_WORKER
def test_mlflow_server_dying_mid_sweep_is_backfilled_by_the_next_run(reference, tmp_path):
    server = reference["server"]  # up, with the reference sweep in its database
    # the reference's slow trial alone, under another sweep name (so another parent run)
    spec_path = write_spec(tmp_path, "faults-mlflow-dies", SPEC.replace("epochs: [2, 16]", "epochs: 16"))
    sweep_id, out = sweep_id_of(spec_path), tmp_path / "out"
    before = live_steps(server.uri)
    # rounds held 0.3 s, not 2: the trial's 7 rounds take ~2 s on a quiet machine, and steps must reach
    # MLflow mid-trial before the server is killed
    run = Glth(
        "run",
        str(spec_path),
        "--out",
        "out",
        "--tracking-uri",
        server.uri,
        cwd=tmp_path,
        env={"GLTH_ROWS_FLUSH_S": "0.3"},
    ).start()
    stopped_at = None
    deadline = time.monotonic() + 420
    try:
        while stopped_at is None and time.monotonic() < deadline and run.returncode is None:
            time.sleep(0.5)
            logged = live_steps(server.uri) - before
            if logged >= 1:
                server.stop()
                stopped_at = (logged, rows_per_trial(out, sweep_id))
        run.wait(timeout=600)
    finally:
        if server.proc is None:
            server.start()  # same port, same backend DB
    print(
        f"\ninjected: MLflow server SIGKILLed mid-sweep after {stopped_at and stopped_at[0]} step(s) were logged "
        f"live (rows on disk then: {stopped_at and stopped_at[1]})"
    )
    assert stopped_at is not None, "the sweep never logged to MLflow"
    assert run.returncode == 0, run.stderr[-3000:]
    rows = parquet.read_rounds(SweepDir.under(out, sweep_id))
    assert len(rows) == ROUNDS and set(rows.status) == {"ok"}
    ref = reference["rows"]
    assert_rows_equal(rows, ref[ref.trial_id.isin(rows.trial_id)].assign(sweep_id=sweep_id))
    _, children = mlflow_runs(server.uri, sweep_id)
    missing = ROUNDS * len(rows.trial_id.unique()) - sum(
        len(MlflowClient(server.uri).get_metric_history(c.info.run_id, "density")) for c in children.values()
    )
    print(f"found: sweep exit 0 with all {len(rows)} rows in Parquet; MLflow (back up) misses {missing} steps")
    assert missing > 0

    again = glth("run", str(spec_path), "--out", "out", "--tracking-uri", server.uri, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert summary_counts(again.stdout) == (0, 1) and not again.ray_started()
    hist = histories(server.uri, sweep_id)
    assert_one_step_per_round(hist, rows)
    parent, children = mlflow_runs(server.uri, sweep_id)
    assert parent.info.status == "FINISHED" and {c.info.status for c in children.values()} == {"FINISHED"}
    sync = InProcess("sync", sweep_id, "--out", "out", "--tracking-uri", server.uri, cwd=tmp_path)
    counts = sync_counts(sync.stdout)
    print(
        f"found: the next `glth run` (every trial complete: no Ray) backfilled MLflow to one step per round; "
        f"a `glth sync` after it: {counts}"
    )
    assert sync.returncode == 0 and counts == {
        "parents_created": 0,
        "children_created": 0,
        "steps_logged": 0,
        "children_finished": 0,
    }
    assert histories(server.uri, sweep_id) == hist


# -- 4 + 7. an overlapping spec with a diverging grid point ----------------------------------


@pytest.fixture(scope="module")
def overlap(reference, tmp_path_factory):
    """The reference spec again (nothing to do), then, into the same --out, a spec of another name
    whose grid shares one trial with it (epochs 2, lr 0.05, seed 0) and has lr 1e6 points that
    diverge. One run covers dedupe across sweeps and a diverging trial."""
    tmp = tmp_path_factory.mktemp("overlap")
    uri = sqlite_uri(tmp / "mlflow.db")
    ref_out = reference["tmp"] / "out"
    ref_files = parquet.trial_files(SweepDir.under(ref_out, reference["sweep_id"]))
    ref_mtimes = {t: f.stat().st_mtime_ns for t, f in ref_files.items()}
    same = glth("run", str(reference["spec"]), "--out", str(ref_out), "--tracking-uri", uri, cwd=tmp)
    text = (
        SPEC.replace("epochs: [2, 16], batch_size: 64, lr: 0.05", "epochs: 2, batch_size: 64, lr: [0.05, 1.0e+6]")
        .replace("seeds: [0]", "seeds: [0, 1]")
        .replace("resources: {cpu: 1}", "resources: {cpu: 0.5}")
        .replace("max_concurrent: 2", "max_concurrent: 4")
    )
    spec_path = write_spec(tmp, "overlap", text)
    sweep = spec_mod.load(spec_path)
    run = glth("run", str(spec_path), "--out", str(ref_out), "--tracking-uri", uri, cwd=tmp)
    rows = parquet.read_rounds(SweepDir.under(ref_out, sweep.sweep_id))
    parent, children = mlflow_runs(uri, sweep.sweep_id)
    return {
        "tmp": tmp,
        "uri": uri,
        "out": ref_out,
        "ref_files": ref_files,
        "ref_mtimes": ref_mtimes,
        "same": same,
        "spec": spec_path,
        "sweep": sweep,
        "run": run,
        "rows": rows,
        "parent": parent,
        "children": children,
        "diverging": sorted(t.trial_id for t in sweep.trials if t.config.train.lr == 1e6),
    }


@SECOND_WORKER
def test_a_diverging_trial_fails_alone_with_its_reason_recorded(overlap):
    run, rows, bad = overlap["run"], overlap["rows"], overlap["diverging"]
    print(f"\ninjected: lr 1e6 in two of four grid points (trials {bad})")
    assert run.returncode == 1, run.stderr[-3000:]
    named = re.findall(r"failed trials: (.*)", run.stderr)
    assert named and sorted(named[-1].split(", ")) == bad
    for tid in bad:
        last = rows[rows.trial_id == tid].sort_values("round").iloc[-1]
        child = overlap["children"][tid]
        print(
            f"found: trial {tid}: last row round {last['round']} status {last.status!r}; MLflow child "
            f"{child.info.status}, glth.status {child.data.tags.get('glth.status')!r}"
        )
        assert last.status.startswith("failed:") and ("nan" in last.status.lower() or "inf" in last.status.lower())
        assert child.info.status == "FAILED" and child.data.tags["glth.status"] == last.status
    good = rows[~rows.trial_id.isin(bad)]
    assert len(good) == 2 * ROUNDS and set(good.status) == {"ok"}
    assert {c.info.status for t, c in overlap["children"].items() if t not in bad} == {"FINISHED"}
    assert overlap["parent"].info.status == "FAILED"
    print(
        f"found: exit 1 naming {named[-1]}; the other {good.trial_id.nunique()} trials complete with "
        f"{len(good)} ok rows and FINISHED runs; the parent run FAILED"
    )


@SECOND_WORKER
def test_complete_trials_are_reused_by_the_same_or_an_overlapping_spec_and_force_recomputes(overlap, reference):
    same, run, rows, out, sweep = overlap["same"], overlap["run"], overlap["rows"], overlap["out"], overlap["sweep"]
    print(
        f"\ninjected: the same spec again -> '{same.stdout.strip().splitlines()[-1]}', Ray started: {same.ray_started()}"
    )
    assert same.returncode == 0, same.stderr[-3000:]
    assert summary_counts(same.stdout) == (0, 2) and not same.ray_started()

    shared = {t.trial_id for t in sweep.trials} & set(overlap["ref_files"])
    assert len(shared) == 1
    print(
        f"injected: an overlapping spec (another name; 1 of its 4 trials is complete in the reference sweep) -> "
        f"'{summary_counts(run.stdout)[0]} trials computed, {summary_counts(run.stdout)[1]} reused'"
    )
    assert summary_counts(run.stdout) == (3, 1)
    ref = reference["rows"]
    copied = rows[rows.trial_id.isin(shared)].reset_index(drop=True)
    # same values; only dtypes differ (integer columns that hold the failed rows' nulls read back as float)
    pd.testing.assert_frame_equal(
        copied,
        ref[ref.trial_id.isin(shared)].assign(sweep_id=sweep.sweep_id).reset_index(drop=True),
        check_exact=True,
        check_dtype=False,
    )
    assert {t: f.stat().st_mtime_ns for t, f in overlap["ref_files"].items()} == overlap["ref_mtimes"]

    before = {t: f.stat().st_mtime_ns for t, f in parquet.trial_files(SweepDir.under(out, sweep.sweep_id)).items()}
    forced = glth(
        "run", str(overlap["spec"]), "--out", str(out), "--tracking-uri", overlap["uri"], "--force", cwd=overlap["tmp"]
    )
    after = {t: f.stat().st_mtime_ns for t, f in parquet.trial_files(SweepDir.under(out, sweep.sweep_id)).items()}
    rewritten = sorted(t for t in before if after[t] > before[t])
    print(
        f"injected: --force -> '{summary_counts(forced.stdout)[0]} trials computed, "
        f"{summary_counts(forced.stdout)[1]} reused'; files rewritten: {len(rewritten)}/{len(before)}"
    )
    assert forced.returncode == 1  # the diverging points diverge again
    assert summary_counts(forced.stdout) == (4, 0)
    assert rewritten == sorted(before)
    assert_rows_equal(parquet.read_rounds(SweepDir.under(out, sweep.sweep_id)), rows)
    assert {t: f.stat().st_mtime_ns for t, f in overlap["ref_files"].items()} == overlap["ref_mtimes"]
    print(
        "found: recomputed rows equal the first ones (all columns but wall_seconds); "
        "the reference sweep's files untouched throughout"
    )
