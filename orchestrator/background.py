"""Driver work started on a thread and waited for where its result is needed: the MLflow set-up of
a sweep (importing MLflow's store, the experiment, the parent run) runs while the local Ray starts,
whose ``ray.init`` mostly waits for Ray's own processes, and the end of a sweep (its rows checked,
the MLflow sync) runs while ``ray.shutdown`` waits for them to end (``orchestrator.sweep``).

The set-up's thread runs at a lower priority (Linux: a nice value per thread): it takes the cores
Ray's start leaves idle, never Ray's own, whose raylet must register within Ray's fixed 30 s. The
end's runs at the driver's: nothing else is left to run then."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


#: how much lower the thread's priority is than the driver's
NICE = 10


class Background(Generic[T]):
    """``fn(*args)`` on a daemon thread (a Ctrl-C never waits for it), ``nice`` steps below the
    driver's priority; ``result()`` waits for it and returns its value or raises its exception, as
    often as it is called."""

    def __init__(self, fn: Callable[..., T], *args, nice: int = NICE):
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(fn, args, nice), name=f"glth-{fn.__name__}", daemon=True
        )
        self._thread.start()

    def _run(self, fn, args, nice: int) -> None:
        with contextlib.suppress(AttributeError, OSError):  # where threads have no nice value of their own
            me = threading.get_native_id()
            if nice:
                os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + nice)
        try:
            self._value = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller of result()
            self._error = e

    def done(self) -> bool:
        """Whether ``fn`` has returned (or raised)."""
        return not self._thread.is_alive()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
