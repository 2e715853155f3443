"""A two-node Ray cluster on this machine whose nodes do NOT share the sweep's local directory.

The head runs as usual; the worker node's ``ray start`` runs in its own mount namespace with a
private tmpfs mounted over ``private_dir`` (the driver's output directory)::

    unshare --mount --propagation private sh -c \
        'mount -t tmpfs tmpfs DIR && exec ray start --address=HEAD_IP:PORT ... --block'

so a file the head (or the driver) writes under DIR is invisible to every process of the worker
node and vice versa, as on two machines. ``shared_dir`` (outside DIR) is seen by both: the
EFS/NFS case. Everything else (Ray's temp dir, /dev/shm, the venv) is shared as before.

Both nodes advertise loopback addresses drawn per cluster (``loopback_pair``) and run with token auth (``RAY_AUTH_MODE=token`` and a random
``RAY_AUTH_TOKEN`` in the environment of every process, ``env``). The worker node carries a custom
resource (``{"worker": 1}`` by default) so a test can pin tasks and trials to it. Every process is
stopped by pid (``ray start --block`` parents, their descendants, then any straggler that names
this cluster's temp dir); ``ray stop`` is never run.

    with NamespacedCluster(out_dir, shared_dir, env=s3.env) as cluster, cluster.driver():
        ray.get(f.options(resources={"worker": 1}).remote())
        cluster.kill_worker_raylet(); cluster.start_worker()
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from procs import free_port, kill_matching

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent


def loopback_pair() -> tuple[str, str]:
    """A cluster's head and worker node addresses, 127.A.B.2 and 127.A.B.3 with A, B drawn per
    cluster: loopback, but not 127.0.0.1, which Ray rewrites (in --node-ip-address and in the address
    a driver connects to) to the machine's routable address (resolve_ip_for_localhost); any other
    127/8 address is kept. Drawn, so that two clusters on one machine (two test workers, two test
    runs) never share a node address: a worker node's processes are found by the address they name."""
    rng = random.SystemRandom()
    a, b = rng.randint(10, 250), rng.randint(1, 250)
    return f"127.{a}.{b}.2", f"127.{a}.{b}.3"


#: dead nodes noticed in seconds rather than Ray's 30 s default (GCS health checks of each raylet)
FAST_FAILURE_DETECTION = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",  # a node lost is noticed in ~7-10 s; 1 s × 3 declared a
    "RAY_health_check_failure_threshold": "5",  # live worker dead on 2 cores running two test workers
}


def mount_namespace_unavailable() -> str | None:
    """Why a private mount namespace with a tmpfs cannot be made here (no unshare, no
    CAP_SYS_ADMIN), or None when it can: the harness and its tests need one."""
    import shutil as sh

    if sh.which("unshare") is None:
        return "unshare (util-linux) not found"
    with tempfile.TemporaryDirectory(prefix="glns-probe-") as d:
        r = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"mount -t tmpfs tmpfs {shlex.quote(d)} && mount --bind -o ro {shlex.quote(d)} {shlex.quote(d)}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    return None if r.returncode == 0 else f"no private mount namespace here: {' '.join(r.stderr.split())[:200]}"


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _child_named(pid: int, name: str) -> int | None:
    for p in _descendants(pid)[1:]:
        try:
            if p.name() == name:
                return p.pid
        except psutil.Error:
            pass
    return None


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=15)


class NamespacedCluster:
    """Head + one worker node in a private mount namespace; see the module docstring."""

    def __init__(
        self,
        private_dir: str | os.PathLike,
        shared_dir: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        head_cpus: int = 1,
        worker_cpus: int = 1,
        head_resources: dict | None = None,
        worker_resources: dict | None = None,
        object_store_bytes: int = 100 * 1024 * 1024,
        keep_logs: bool = False,
    ):
        self.private_dir = Path(private_dir).resolve()
        self.shared_dir = Path(shared_dir).resolve() if shared_dir else None
        self.private_dir.mkdir(parents=True, exist_ok=True)  # the mount point must exist
        if self.shared_dir:
            self.shared_dir.mkdir(parents=True, exist_ok=True)
            if self.private_dir in (self.shared_dir, *self.shared_dir.parents):
                raise ValueError(f"shared_dir {self.shared_dir} is inside private_dir {self.private_dir}")
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.head_resources = head_resources if head_resources is not None else {"head": 1}
        self.worker_resources = worker_resources if worker_resources is not None else {"worker": 1}
        self.object_store_bytes = object_store_bytes
        # GLTH_KEEP_CLUSTER_LOGS=1: every cluster's temp dir (Ray's logs, head.log, worker-N.log) is kept
        self.keep_logs = keep_logs or os.environ.get("GLTH_KEEP_CLUSTER_LOGS") == "1"
        self.head_ip, self.worker_ip = loopback_pair()
        self.temp_dir = tempfile.mkdtemp(prefix="glns-", dir="/tmp")  # short: unix socket paths
        self.port = free_port()
        self.address = f"{self.head_ip}:{self.port}"
        self.token = secrets.token_hex(32)
        self.env = {
            **os.environ,
            **FAST_FAILURE_DETECTION,
            **(env or {}),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        # functions defined in test modules are pickled by module name: workers import them from here
        self.env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)
        self.env.pop("RAY_ADDRESS", None)
        self.head: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []  # every worker node started, the live one last

    # -- processes ------------------------------------------------------------------------------
    def _popen(self, argv: list[str], log_name: str) -> subprocess.Popen:
        with open(Path(self.temp_dir) / log_name, "wb") as log:  # the child keeps its own descriptor
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def _ray_start(self, ip: str, *args: str) -> list[str]:
        return [
            str(BIN / "ray"),
            "start",
            *args,
            f"--node-ip-address={ip}",
            "--block",
            "--disable-usage-stats",
            f"--object-store-memory={self.object_store_bytes}",
        ]

    def _wait_started(self, proc: subprocess.Popen, log_name: str, timeout: float = 180) -> None:
        log = Path(self.temp_dir) / log_name
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"{log_name}: ray start did not come up (rc={proc.poll()}): {text}")
            time.sleep(0.2)

    def start(self) -> "NamespacedCluster":
        self.head = self._popen(
            self._ray_start(
                self.head_ip,
                "--head",
                f"--port={self.port}",
                f"--num-cpus={self.head_cpus}",
                "--num-gpus=0",
                "--include-dashboard=false",
                f"--temp-dir={self.temp_dir}",
                f"--resources={json.dumps(self.head_resources)}",
            ),
            "head.log",
        )
        self._wait_started(self.head, "head.log")
        self.start_worker()
        return self

    def start_worker(self) -> subprocess.Popen:
        """A (new) worker node in its own mount namespace, with a fresh empty tmpfs over private_dir."""
        ray = shlex.join(
            self._ray_start(
                self.worker_ip,
                f"--address={self.address}",
                f"--num-cpus={self.worker_cpus}",
                "--num-gpus=0",
                f"--resources={json.dumps(self.worker_resources)}",
            )
        )
        script = f"mount -t tmpfs -o size=64m tmpfs {shlex.quote(str(self.private_dir))} && exec {ray}"
        name = f"worker-{len(self.workers)}.log"
        proc = self._popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], name)
        self.workers.append(proc)
        self._wait_started(proc, name)
        return proc

    @property
    def pids(self) -> dict[str, int | None]:
        """The head's gcs_server and raylet, and the live worker node's raylet (None once gone)."""
        worker = self.workers[-1].pid if self.workers else None
        return {
            "head_gcs": _child_named(self.head.pid, "gcs_server") if self.head else None,
            "head_raylet": _child_named(self.head.pid, "raylet") if self.head else None,
            "worker_raylet": _child_named(worker, "raylet") if worker else None,
            "worker_ray_start": worker,
        }

    def kill_worker_raylet(self) -> int:
        """SIGKILL the live worker node's raylet (node loss); returns its pid. Its `ray start --block`
        then takes down the rest of that node."""
        pid = self.pids["worker_raylet"]
        if pid is None:
            raise RuntimeError("no live worker raylet")
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(timeout=30)
        return pid

    def freeze_worker_node(self) -> list[psutil.Process]:
        """SIGSTOP every process of the live worker node (a machine that hangs): nothing on it
        advances until `thaw` or `lose_worker_node` (SIGKILL reaches stopped processes)."""
        frozen: dict[int, psutil.Process] = {}
        for _ in range(10):  # until no process of the node is left running: one may fork meanwhile
            new = [p for p in self._worker_node_processes() if p.pid not in frozen]
            if not new:
                break
            for p in new:
                with contextlib.suppress(psutil.Error):
                    p.suspend()
                frozen[p.pid] = p
        return list(frozen.values())

    def _worker_node_processes(self) -> list[psutil.Process]:
        """The live worker node's processes: its ``ray start`` and their descendants, and any Ray
        worker of that node that was reparented out of that tree (it names the node's address and
        carries this cluster's token: another cluster's worker node has the same address)."""
        if not self.workers:
            return []
        procs = {p.pid: p for p in _descendants(self.workers[-1].pid)}
        marker = f"--node-ip-address={self.worker_ip}"
        for p in psutil.process_iter(["cmdline"]):
            if p.pid not in procs and marker in " ".join(p.info["cmdline"] or ()) and self._ours(p):
                procs.update({q.pid: q for q in _descendants(p.pid)})
        return list(procs.values())

    def _ours(self, p: psutil.Process) -> bool:
        try:
            return p.environ().get("RAY_AUTH_TOKEN") == self.token
        except psutil.Error:
            return False

    @staticmethod
    def thaw(procs: list[psutil.Process]) -> None:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.resume()

    def lose_worker_node(self) -> int:
        """The worker machine gone at once: SIGKILL every process of that node (its Python workers,
        reparented ones included), then its raylet (by pid; returned). In that order: a frozen
        worker whose raylet dies first is orphaned in a process group of its own, and the kernel
        then wakes a stopped orphaned group (SIGHUP, SIGCONT: POSIX), so it would run on, writing
        rounds, until its own SIGKILL lands."""
        raylet = self.pids["worker_raylet"]
        if raylet is None:
            raise RuntimeError("no live worker raylet")
        procs = [p for p in self._worker_node_processes() if p.pid != raylet]
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(raylet))
        for p in procs:  # no wait in between: a stopped raylet reaps nothing until it is gone too
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=30)
        return raylet

    def stop(self) -> None:
        victims = []
        for proc in [p for p in (self.head, *self.workers) if p is not None]:
            victims += _descendants(proc.pid)
        _kill(victims)
        for proc in [p for p in (self.head, *self.workers) if p is not None]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        kill_matching(self.temp_dir)  # workers Ray reparented away from their raylet
        self.head, self.workers = None, []
        if not self.keep_logs:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def leftovers(self) -> list[int]:
        """Pids of any process still naming this cluster's temp dir (none after stop())."""
        out = []
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if self.temp_dir in " ".join(p.info["cmdline"] or []):
                    out.append(p.pid)
        return out

    def __enter__(self) -> "NamespacedCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the driver (this process) --------------------------------------------------------------
    @contextlib.contextmanager
    def auth_env(self):
        """This cluster's token auth in os.environ (and Ray's cached config), put back afterwards."""
        from ray._raylet import AuthenticationTokenLoader, Config

        keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
        saved = {k: os.environ.get(k) for k in keys}

        def refresh():
            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()

        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        refresh()
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            refresh()

    @contextlib.contextmanager
    def driver(self, nodes: int = 2, timeout: float = 60):
        """``ray.init`` this process into the cluster (once ``nodes`` nodes are alive); shut down after."""
        import ray

        with self.auth_env():
            ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
            try:
                self.wait_nodes(nodes, timeout)
                yield ray
            finally:
                ray.shutdown()

    def wait_nodes(self, n: int, timeout: float = 60) -> list[dict]:
        """Wait (connected driver) until exactly ``n`` nodes are alive; returns them."""
        import ray

        deadline = time.monotonic() + timeout
        while True:
            alive = [node for node in ray.nodes() if node["Alive"]]
            if len(alive) == n:
                return alive
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(alive)} nodes alive after {timeout}s, wanted {n}")
            time.sleep(0.5)

    def worker_node_id(self) -> str:
        """The node id of the live worker node (the alive node with the worker resource)."""
        import ray

        key = next(iter(self.worker_resources))
        (node,) = [n for n in ray.nodes() if n["Alive"] and key in n["Resources"]]
        return node["NodeID"]
