"""The Ray a sweep runs on: a cluster's (``--address`` / RAY_ADDRESS), or a local one that glth
starts on 127.0.0.1 with token authentication and stops afterwards.

Ctrl-C (SIGINT) inside the session: Tune's own handler is off (``TUNE_DISABLE_SIGINT_HANDLER``:
it would end ``tuner.fit`` as if the sweep were done and suggest ``Tuner.restore``, which glth never
uses), so the interrupt leaves ``tuner.fit`` at once; the session then stops the local Ray (a second
Ctrl-C cannot cut that short), prints one line saying how to resume, and exits with status 130.
Every round a trial finished is kept: its row is in Parquet, or in the resume state its worker wrote
before reporting, which the rerun reports first (``orchestrator.trainable``).

Start-up (measured by ``benchmarks/bench_sweep.py``): ``ray.init`` of a local Ray is the GCS, the
dashboard head (started even with ``include_dashboard=False``, for the job and state APIs), the
raylet, which registers only once its dashboard and runtime-env agents are up, and the driver's
connection; the agents' start (Python processes importing aiohttp, grpc, OpenTelemetry) is most
of it. ``ray.init`` has no public option to leave them out, and the ``RAY_*`` settings tried
(usage stats, metrics collection) did not change its time; the dashboard head and agent start as
in a minimal Ray install (``_minimal_processes``: 4.3 → 2.6 s quiet), without the autoscaler's
monitor and the log monitor (``_no_monitors``). The idle workers Ray prestarts for a driver are left
out (``NO_PRESTART``), and Tune's trial actors start without Tune's runtime env
(``_tune_actors_inherit_env``). Stop: every process of the local Ray killed at once
(``_stop_at_once``), not each stopped and waited for in turn.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import sys
import threading
from pathlib import Path

#: the local Ray's token, random, one per process
_LOCAL_TOKEN = secrets.token_urlsafe(32)


@contextlib.contextmanager
def _local_auth():
    """Token authentication for the local Ray, unless RAY_AUTH_MODE says otherwise.

    Ray 2.60 binds its GCS, raylet and worker servers to every interface whatever the node IP
    (and advertises the machine's address), so a local Ray without auth lets anyone who can reach
    this machine run code in it. Left to itself, a new local Ray enables token auth too, but saves
    a token to ~/.ray/auth_token; this one lives only in the environment of this process and of the
    Ray processes it starts, and both variables are put back as they were afterwards.
    """
    if "RAY_AUTH_MODE" in os.environ:
        yield
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    def refresh():  # as Ray's own _enable_token_auth: this process re-reads its config and token
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    added = {"RAY_AUTH_MODE": "token"}
    if "RAY_AUTH_TOKEN" not in os.environ:
        added["RAY_AUTH_TOKEN"] = _LOCAL_TOKEN
    os.environ.update(added)
    refresh()
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
        refresh()


#: A local Ray starts no idle workers for the driver: they took CPU (each imports Ray) while the
#: node and the MLflow set-up were starting, and Tune's trial actors, which had a runtime env, never
#: ran in them. Without it (``_tune_actors_inherit_env``) they do, and with Ray's
#: ``preload_python_modules`` = the trainable they start warm; measured (2026-12-08, one-trial sweep):
#: they start as ``ray.init`` returns, as a trial's own worker would, so the round began no sooner,
#: and each of the node's CPUs got one (a worker importing torch per CPU on a big machine)
NO_PRESTART = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}


@contextlib.contextmanager
def _minimal_processes():
    """A local Ray whose dashboard head and dashboard agent start as in a minimal Ray install
    (``--minimal``): no HTTP server, no gRPC metrics server, no OpenTelemetry exporter.

    Ray decides that by importing the dashboard's optional dependencies (aiohttp, grpc,
    OpenTelemetry, prometheus) in the driver (``ray._private.utils.get_dashboard_dependency_error``);
    with them installed it has no switch for it. A sweep uses none of it (Tune, actors and the
    object store run the same; the job and state APIs are a cluster's business: ``glth job``), while
    the raylet registers only once the agent's metrics server is up. So for the driver's
    ``ray.init`` only, that check answers "missing", and the driver skips those imports too.
    """
    from ray._private import utils

    real = getattr(utils, "get_dashboard_dependency_error", None)
    if real is None:  # a Ray without the check: started as it is
        yield
        return
    utils.get_dashboard_dependency_error = lambda: ImportError("glth: a local Ray without the dashboard's servers")
    try:
        yield
    finally:
        utils.get_dashboard_dependency_error = real


@contextlib.contextmanager
def _tune_actors_inherit_env():
    """Tune's trial actors without Tune's runtime env, on the local Ray only.

    Tune gives every trial actor ``runtime_env={"env_vars": ...}`` (``PL_DISABLE_FORK`` and the
    driver's AWS credentials, ``ray.tune.execution.class_cache``) so that a cluster's workers see
    them. A worker with a runtime env is started through the runtime-env agent and
    ``setup_worker.py``, which imports Ray before it execs the worker (which imports it again); a
    local Ray's workers inherit the driver's environment anyway, so that start is all it buys here.
    """
    from ray.tune.execution import class_cache

    cache = getattr(class_cache, "_ActorClassCache", None)
    real = getattr(cache, "get", None)
    if real is None:
        yield
        return
    import ray

    def get(self, trainable_cls):
        if trainable_cls not in self._cache:
            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    cache.get = get
    try:
        yield
    finally:
        cache.get = real


@contextlib.contextmanager
def _no_monitors():
    """A local Ray without the autoscaler's monitor and the log monitor: Python processes that
    start (importing Ray) while ``ray.init`` waits for the GCS, the raylet and its agents, on the
    same cores, and serve nothing here (one fixed node, nothing to scale; ``log_to_driver=False``:
    no worker's output is streamed to the driver). ``ray.init`` has no option for either (``ray
    start`` has ``--no-monitor``); the node's methods that start them do nothing meanwhile."""
    from ray._private.node import Node

    names = ("start_monitor", "start_log_monitor")
    real = {n: getattr(Node, n, None) for n in names}
    if any(fn is None for fn in real.values()):  # a Ray without them: started as it is
        yield
        return
    for n in names:
        setattr(Node, n, lambda self: None)
    try:
        yield
    finally:
        for n, fn in real.items():
            setattr(Node, n, fn)


def _stop_at_once() -> None:
    """The local Ray's stop, its processes killed at once: ``ray.shutdown`` stops them one by one,
    each sent SIGTERM and waited for up to a second (1.2–1.5 s in all on 2 quiet cores). Here, as it
    comes to that, each process this session's node started, with every process under them (the
    raylet's agents and workers), is sent SIGKILL first; Ray then finds them dead. Nothing written is
    lost: the rows and MLflow are written by the driver, and a worker writes its tickets and state
    (temp name + rename) before it reports, which ``tuner.fit`` waited for."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    real = getattr(node, "kill_all_processes", None)
    if real is None or not isinstance(getattr(node, "all_processes", None), dict):
        return

    def kill_all_processes(*args, **kwargs):
        _kill_tree([info.process.pid for infos in node.all_processes.values() for info in infos])
        return real(*args, **kwargs)

    node.kill_all_processes = kill_all_processes  # this node only: ray.shutdown drops it afterwards


def _kill_tree(pids: list[int]) -> None:
    """SIGKILL to ``pids`` and every process under them, each found before any is killed."""
    import psutil

    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
            found.extend(found[-1].children(recursive=True))
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.kill()  # psutil checks that the pid is still the process it found


#: the exit status of an interrupted run (128 + SIGINT, as a shell reports Ctrl-C)
EXIT_INTERRUPTED = 130


def resume_hint(argv: list[str] | None = None) -> str:
    """How to resume: the same ``glth run`` command line when this process is one, else in words."""
    argv = sys.argv if argv is None else argv
    if argv and Path(argv[0]).name == "glth" and len(argv) > 1:
        return "run again: " + shlex.join(["glth", *argv[1:]])
    return "run the same `glth run` again"


@contextlib.contextmanager
def _tune_leaves_sigint_alone():
    saved = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored (main thread only: elsewhere signals cannot be set, nor delivered)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None):
    """Attach to ``address``/RAY_ADDRESS, or start (and later stop) a local Ray on 127.0.0.1.
    Ctrl-C inside: Ray shut down, one line on stderr, ``SystemExit(EXIT_INTERRUPTED)``."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    interrupted = False
    with contextlib.ExitStack() as stack:
        stack.enter_context(_tune_leaves_sigint_alone())
        try:
            if started:
                if address:
                    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
                else:
                    stack.enter_context(_local_auth())
                    with _minimal_processes(), _no_monitors():
                        ray.init(
                            address="local",
                            _node_ip_address="127.0.0.1",
                            num_cpus=num_cpus or os.cpu_count(),
                            include_dashboard=False,
                            logging_level="WARNING",
                            log_to_driver=False,
                            _system_config=NO_PRESTART,
                        )
                    stack.enter_context(_tune_actors_inherit_env())
            yield
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if started:
                with _sigint_ignored():
                    if not address:
                        _stop_at_once()
                    ray.shutdown()
    if interrupted:
        what = "disconnected from the Ray cluster" if address else "local Ray stopped"
        print(
            f"[glth] interrupted: {what}, every finished round kept; to resume, {resume_hint()}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(EXIT_INTERRUPTED)
