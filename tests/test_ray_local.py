"""The local Ray that `glth run` starts (``orchestrator.ray_local.ray_session``): its dashboard head
and agent run as in a minimal Ray install, without the autoscaler's monitor or the log monitor,
Tune's trial actors have no runtime env there and still see the driver's environment, every process
it started is gone as the session ends (killed at once), and Ray's and Tune's functions are put back
afterwards."""

from __future__ import annotations

import signal

import psutil
import pytest

pytestmark = pytest.mark.slow


def _ray_commands() -> dict[str, str]:
    """{what: its command} of the dashboard head and agent under this process (the agent renames
    its process: its command is the one the raylet was given), and of any monitor."""
    found = {}
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if any(part.endswith("dashboard/dashboard.py") for part in cmd):
            found["head"] = " ".join(cmd)
        for part in cmd:
            if part.startswith("--dashboard_agent_command="):
                found["agent"] = part
            if part.endswith(("autoscaler/_private/monitor.py", "_private/log_monitor.py")):
                found[part.rsplit("/", 1)[-1]] = " ".join(cmd)
    return found


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_a_local_session_is_minimal_and_its_trial_actors_inherit_the_driver_env(tmp_path, monkeypatch):
    from ray import tune
    from ray._private import utils, worker
    from ray._private.node import Node
    from ray.tune.execution import class_cache

    from orchestrator.ray_local import ray_session

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    for k, v in {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GLTH_TEST_DRIVER_ENV", "seen")
    check, get = utils.get_dashboard_dependency_error, class_cache._ActorClassCache.get
    starts = Node.start_monitor, Node.start_log_monitor

    def trainable(config):
        import os

        import ray
        from ray import tune as t

        t.report(
            {"runtime_env": dict(ray.get_runtime_context().runtime_env), "env": os.environ.get("GLTH_TEST_DRIVER_ENV")}
        )

    others = set(psutil.Process().children(recursive=True))  # this test process's own, not Ray's (an S3 server)
    with ray_session(None, num_cpus=1):
        procs = _ray_commands()
        grid = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            run_config=tune.RunConfig(name="env", storage_path=str(tmp_path / "tune"), verbose=0),
        ).fit()
        # GCS, head, raylet, its agents and the trial's worker
        under = [p for p in psutil.Process().children(recursive=True) if p not in others]
        started = [i.process for infos in worker._global_node.all_processes.values() for i in infos]
    # stopped at once: each process Ray would have stopped in turn (SIGTERM, then up to 1 s) was
    # killed, and none of those under them is left to exit later
    assert sorted(p.returncode for p in started) == [-signal.SIGKILL] * len(started) and len(started) >= 3
    gone, left = psutil.wait_procs(under, timeout=1)
    assert len(under) >= 5 and _alive(left) == [], [p.cmdline()[:2] for p in _alive(left)]
    assert sorted(procs) == ["agent", "head"]  # no autoscaler monitor, no log monitor
    assert all("--minimal" in cmd.split() for cmd in procs.values()), procs
    (result,) = list(grid)
    assert result.error is None
    assert result.metrics["runtime_env"] == {}  # no runtime env: a plain worker, no setup_worker.py
    assert result.metrics["env"] == "seen"  # the driver's environment, inherited through the raylet
    assert utils.get_dashboard_dependency_error is check and class_cache._ActorClassCache.get is get
    assert (Node.start_monitor, Node.start_log_monitor) == starts
