"""System metrics of a trial's worker (CPU, memory, disk, network; GPU where nvidia-ml-py is
installed), measured where the trial runs and written by the driver.

The driver is MLflow's only writer, so MLflow's ``SystemMetricsMonitor`` (a thread that logs to
a run itself) is not started in the worker; its monitor classes are, on a thread of ours: each
round's report carries ``take()`` (the mean of the samples since the previous round), and the
driver's ``MlflowWriter`` logs it as ``system/<name>`` at step = round, in the same batch as the
round's metrics, on the child run of every trial in the report. Sampling the driver instead
would measure the wrong machine on a cluster. Off unless the sweep asks for it.
"""

from __future__ import annotations

import threading

#: seconds between samples (MLflow's own monitor defaults to 10; a round is often shorter)
INTERVAL_S = 1.0


def _monitors() -> list:
    try:
        import psutil  # noqa: F401  (MLflow's monitors read the system through it)
    except ImportError:
        raise RuntimeError("system metrics: need psutil on every node (pip install psutil)") from None
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
    from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

    out = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
    try:  # NVIDIA (nvidia-ml-py); raises where there is no GPU or no library
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

        out.append(GPUMonitor())
    except Exception:
        pass
    return out


class SystemSampler:
    """``start()`` once in the trainable, ``take()`` with each report, ``stop()`` at its end."""

    def __init__(self, interval_s: float = INTERVAL_S):
        self.interval_s = interval_s
        self.monitors = _monitors()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples = 0

    def sample(self) -> None:
        with self._lock:
            for m in self.monitors:
                m.collect_metrics()
            self._samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # a monitor that fails once (a GPU reset) must not end the trial
                pass

    def start(self) -> "SystemSampler":
        if self._thread is None:
            self.sample()
            self._thread = threading.Thread(target=self._loop, name="glth-system-metrics", daemon=True)
            self._thread.start()
        return self

    def take(self) -> dict[str, float]:
        """Name → mean since the last take (network: megabytes since start); {} before any sample."""
        with self._lock:
            if self._samples == 0:
                return {}
            out: dict[str, float] = {}
            for m in self.monitors:
                out.update({k: float(v) for k, v in m.aggregate_metrics().items()})
                m.clear_metrics()
            self._samples = 0
            return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s + 1)
            self._thread = None
