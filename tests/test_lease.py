"""One driver per sweep: the lease in the sweep directory, on a local directory and on S3.

Unit level on both backends (the loopback S3 server of tests/s3_server.py): acquire, refuse a
second driver naming the owner, take over a stale lease (a heartbeat older than the timeout, or a
dead pid on this host), release. Then two real ``glth run`` drivers on one storage: the second is
refused in one line naming the first, writes nothing and starts no Ray; after a SIGKILL of the
first and the expiry of its heartbeat a rerun takes the lease over and completes the sweep with
every row exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import lease
from orchestrator.layout import SweepDir
from orchestrator.storage import Storage


@pytest.fixture(params=["local", "s3"])
def sweep_store(request, tmp_path):
    if request.param == "local":
        return Storage.resolve(str(tmp_path / "root")).child("sweep-1")
    server = request.getfixturevalue("s3_env")
    return Storage.resolve(f"s3://{server.make_bucket()}/pre").child("sweep-1")


def lost_calls():
    calls = []
    return calls, lambda store, owner: calls.append(owner)


def owner_file(store: Storage) -> dict:
    return json.loads(store.read_text(lease.LEASE))


def write_owner(store: Storage, **fields) -> dict:
    owner = {
        "host": "elsewhere",
        "pid": 4242,
        "started": time.time() - 100,
        "heartbeat": time.time(),
        "heartbeat_s": 10.0,
        "token": "theirs",
        **fields,
    }
    store.write_text(lease.LEASE, json.dumps(owner))
    return owner


def test_acquire_refuse_release(sweep_store):
    calls, on_lost = lost_calls()
    first = lease.Lease(sweep_store, heartbeat_s=30, on_lost=on_lost).acquire()
    written = owner_file(sweep_store)
    assert (written["host"], written["pid"], written["token"]) == (socket.gethostname(), os.getpid(), first.me["token"])
    assert written["started"] <= written["heartbeat"]

    with pytest.raises(lease.LeaseHeld) as e:
        lease.Lease(sweep_store).acquire()
    message = str(e.value)
    assert "\n" not in message and f"host {socket.gethostname()} pid {os.getpid()}" in message
    assert "sweep sweep-1 is being run by another driver" in message
    assert owner_file(sweep_store) == written  # the refused one wrote nothing

    first.release()
    assert not sweep_store.exists(lease.LEASE) and calls == []
    with lease.Lease(sweep_store, heartbeat_s=30).acquire() as again:  # free again
        assert owner_file(sweep_store)["token"] == again.me["token"]
    assert not sweep_store.exists(lease.LEASE)


def test_a_stale_heartbeat_is_taken_over_and_a_live_one_is_not(sweep_store, capsys):
    write_owner(sweep_store, heartbeat=time.time() - 1000)
    with pytest.raises(lease.LeaseHeld, match="host elsewhere pid 4242"):
        lease.Lease(sweep_store, timeout_s=3600).acquire()
    assert owner_file(sweep_store)["token"] == "theirs"

    with lease.Lease(sweep_store, heartbeat_s=30, timeout_s=1).acquire() as mine:
        assert owner_file(sweep_store)["token"] == mine.me["token"]
    said = capsys.readouterr().err
    assert re.search(
        r"took over the lease of host elsewhere pid 4242 \(its last heartbeat is 10\d\d s old "
        r"\(timeout 1 s\)\)",
        said,
    ), said


def test_default_timeout_is_three_heartbeats_of_the_owner(sweep_store, monkeypatch):
    monkeypatch.delenv(lease.TIMEOUT_ENV, raising=False)
    write_owner(sweep_store, heartbeat=time.time() - 20, heartbeat_s=10.0)  # 20 s < 3 × 10 s
    with pytest.raises(lease.LeaseHeld, match="taken over once its heartbeat is 30 s old"):
        lease.Lease(sweep_store).acquire()
    write_owner(sweep_store, heartbeat=time.time() - 20, heartbeat_s=5.0)  # 20 s > 3 × 5 s
    lease.Lease(sweep_store, heartbeat_s=30).acquire().release()


def test_a_dead_driver_on_this_host_is_taken_over_at_once(sweep_store, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_owner(sweep_store, host=socket.gethostname(), pid=gone.pid, heartbeat=time.time())
    with lease.Lease(sweep_store, heartbeat_s=30, timeout_s=3600).acquire():
        pass
    assert f"its pid {gone.pid} is gone from this host" in capsys.readouterr().err


def test_the_heartbeat_thread_renews_the_lease(sweep_store):
    with lease.Lease(sweep_store, heartbeat_s=0.2).acquire():
        first = owner_file(sweep_store)["heartbeat"]
        deadline = time.monotonic() + 60
        while owner_file(sweep_store)["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert owner_file(sweep_store)["heartbeat"] > first


def test_a_lost_lease_is_noticed_at_the_next_beat_and_left_to_its_new_owner(sweep_store):
    calls, on_lost = lost_calls()
    held = lease.Lease(sweep_store, heartbeat_s=3600, on_lost=on_lost).acquire()  # beats by hand below
    try:
        assert held.beat() and calls == []
        thief = write_owner(sweep_store, token="thief")
        assert held.beat() is False and calls == [thief]
    finally:
        held.release()
    assert owner_file(sweep_store) == thief


def test_holding_is_reentrant_in_one_process(tmp_path):
    store = Storage.resolve(str(tmp_path)).child("sweep-2")
    with lease.hold(store) as outer:
        with lease.hold(store) as inner:
            assert inner is outer
        assert owner_file(store)["token"] == outer.me["token"]
    assert not store.exists(lease.LEASE)


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_a_bad_timeout_setting_is_one_line(tmp_path, monkeypatch, value):
    monkeypatch.setenv(lease.TIMEOUT_ENV, value)
    with pytest.raises(lease.BadLeaseSetting, match=f"^{lease.TIMEOUT_ENV}: '{value}'"):
        lease.Lease(Storage.resolve(str(tmp_path)).child("s"))


def test_lost_lease_default_stops_the_driver_as_ctrl_c(tmp_path):
    """The default reaction interrupts the main thread, as Ctrl-C would (ray_session then stops Ray).
    Python's own SIGINT handler for the test: an earlier in-process ``tuner.fit`` of the suite leaves
    Tune's handler installed (glth's driver turns it off, ``ray_local``), which would swallow the interrupt."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _lost_lease_interrupts(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _lost_lease_interrupts(tmp_path):
    store = Storage.resolve(str(tmp_path)).child("sweep-3")
    held = lease.Lease(store, heartbeat_s=3600).acquire()
    write_owner(store, token="thief")
    with pytest.raises(KeyboardInterrupt):
        held.beat()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the interrupt arrives at the main thread's next bytecode
            time.sleep(0.01)  # (short sleeps: one long sleep is not woken by interrupt_main)
    held.release()


def test_submit_of_a_sweep_a_driver_runs_is_refused_before_the_cluster_is_asked(tmp_path):
    from procs import free_port

    from orchestrator import spec as spec_mod

    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(TWO_DRIVERS_SPEC.replace("NAME", "submitted"))
    sweep_id = spec_mod.load(spec_path).sweep_id
    root = tmp_path / "runs"
    glth = str(Path(sys.executable).with_name("glth"))
    with lease.hold(Storage.resolve(str(root)).child(sweep_id)):  # this process: a live driver of the sweep
        proc = subprocess.run(
            [
                glth,
                "submit",
                str(spec_path),
                "--storage",
                str(root),
                "--address",
                f"http://127.0.0.1:{free_port()}",
            ],  # nothing listens there
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"host {socket.gethostname()} pid {os.getpid()}" in proc.stderr
    assert not (root / sweep_id).exists()  # the lease released, and the directory it made removed


# -- two real drivers of one sweep --------------------------------------------------------------

TWO_DRIVERS_SPEC = """
name: NAME
experiment: glth-lease-test
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.3
seeds: [0]
rounds: 6
train: {epochs: 48, batch_size: 64, lr: 0.05}
resources: {cpu: 1}
"""
TWO_DRIVERS_ROUNDS = (
    6  # rounds long enough (~0.75 s quiet) that the driver writes some (held up to 2 s) before the trial ends
)


@pytest.mark.slow
def test_two_real_drivers_the_second_refused_then_a_rerun_takes_over_the_killed_first(tmp_path, monkeypatch):
    import pandas as pd
    from test_faults import Glth, InProcess, kill_tree, rows_per_trial, sweep_id_of, write_spec

    from orchestrator.sinks import parquet

    spec_path = write_spec(tmp_path, "lease", TWO_DRIVERS_SPEC)
    sweep_id, out = sweep_id_of(spec_path), tmp_path / "out"
    store = Storage.resolve(str(out)).child(sweep_id)
    from mlflow_db import sqlite_uri

    args = ("run", str(spec_path), "--out", "out", "--tracking-uri", sqlite_uri(tmp_path / "mlflow.db"))

    def driver(**env) -> Glth:
        g = Glth(*args, cwd=tmp_path)
        g.env.update({"RAY_AUTH_MODE": "disabled", lease.HEARTBEAT_ENV: "0.5", **env})
        return g

    first = driver().start()
    stopped = False
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and first.returncode is None:
            counts = rows_per_trial(out, sweep_id)
            if counts and 1 <= max(counts.values()) < TWO_DRIVERS_ROUNDS:
                os.kill(first.proc.pid, signal.SIGSTOP)  # the driver holds still: lease, rows, all
                stopped = True
                break
            time.sleep(0.2)
        assert stopped, f"the first driver never was mid-sweep: {first.returncode} {first.stderr[-2000:]}"
        held = owner_file(store)
        assert held["pid"] == first.proc.pid and held["host"] == socket.gethostname()
        files = {t: p.stat().st_mtime_ns for t, p in parquet.trial_files(SweepDir.under(out, sweep_id)).items()}

        second = driver(**{lease.TIMEOUT_ENV: "3600"}).run(timeout=600)
        print(
            f"\nsecond driver while the first (pid {first.proc.pid}) runs: exit {second.returncode}, "
            f"said {second.stderr.strip()!r}"
        )
        assert second.returncode == 4
        assert second.stderr.strip().count("\n") == 0 and "Traceback" not in second.stderr
        assert f"host {socket.gethostname()} pid {first.proc.pid}" in second.stderr
        assert second.ray_started() is False
        assert owner_file(store) == held  # nothing written
        assert {t: p.stat().st_mtime_ns for t, p in parquet.trial_files(SweepDir.under(out, sweep_id)).items()} == files
    finally:
        killed = kill_tree(first.proc.pid)  # SIGKILL: its lease stays behind, its heartbeat stops
        first.wait(timeout=60)
    before = parquet.read_rounds(SweepDir.under(out, sweep_id))
    assert killed and store.exists(lease.LEASE)

    # as if that driver had run on another machine: only its heartbeat's age can free the lease
    owner = {**owner_file(store), "host": "driver-host-elsewhere"}
    store.write_text(lease.LEASE, json.dumps(owner))
    monkeypatch.setenv(lease.TIMEOUT_ENV, "3600")  # in this process: refused before Ray, as the second was
    early = InProcess(*args, cwd=tmp_path)
    monkeypatch.delenv(lease.TIMEOUT_ENV)
    assert early.returncode == 4 and "host driver-host-elsewhere" in early.stderr, early.stderr[-2000:]
    while time.time() - owner["heartbeat"] <= 2.5:  # the heartbeat has stopped: it only ages
        time.sleep(0.2)

    rerun = driver(**{lease.TIMEOUT_ENV: "2"}).run(timeout=900)
    print(f"rerun: exit {rerun.returncode}; " + " ".join(ln for ln in rerun.stderr.splitlines() if "lease" in ln))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"took over the lease of host driver-host-elsewhere pid {first.proc.pid}" in rerun.stderr
    rows = parquet.read_rounds(SweepDir.under(out, sweep_id))
    assert not rows.duplicated(["trial_id", "round"]).any()
    assert sorted(rows["round"]) == list(range(TWO_DRIVERS_ROUNDS)) and set(rows.status) == {"ok"}
    kept = rows[rows["round"].isin(before["round"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.reset_index(drop=True), check_exact=True)  # not recomputed
    assert not store.exists(lease.LEASE)  # released at the clean end


def test_a_released_lease_leaves_no_directory_it_made_unless_something_was_written(tmp_path):
    """A run refused after taking the lease (say, a cluster node cannot see the storage) writes nothing."""
    refused = Storage.resolve(str(tmp_path / "runs")).child("sweep-r")
    with lease.hold(refused):
        assert (tmp_path / "runs" / "sweep-r" / lease.LEASE).exists()
    assert not (tmp_path / "runs").exists()
    ran = Storage.resolve(str(tmp_path / "runs")).child("sweep-w")
    with lease.hold(ran):
        ran.write_text("spec.yaml", "name: w\n")
    assert sorted(p.name for p in (tmp_path / "runs" / "sweep-w").iterdir()) == ["spec.yaml"]
