"""Writes run on one thread behind the caller, in the order they were handed over: the driver's
Parquet rows (``parquet_writer``) leave Tune's event loop, which then never waits on a file's
build, its fsync or its rename.

``submit(key, fn, *args)`` queues ``fn(*args)`` and returns at once; one daemon thread runs the
queue in order (started when there is work, gone after ``IDLE_S`` without any), so two writes of one file
land in the order they were made — each a trial's whole history, the later one the newer.
``busy(key)`` says whether a write of ``key`` is queued or running (a reader of that file waits
for it: ``wait_for``); ``drain()`` waits for every write handed over so far.

A write that raises is not swallowed: the first exception is kept and raised on the caller's thread
by the next ``check`` or ``drain`` (its traceback is the write's); the writes queued after it
still run (a later write of the same file holds the failed one's rows too).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Hashable

#: how long the thread waits for more work before it ends (the next write starts another)
IDLE_S = 5.0


class WriteBehind:
    def __init__(self, name: str = "glth-write-behind"):
        self.name = name
        self._cond = threading.Condition()
        self._jobs: deque[tuple[Hashable, Callable, tuple]] = deque()
        self._pending: Counter = Counter()  # key → its writes queued or running
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.done = 0  # writes finished (raised or not)

    def submit(self, key: Hashable, fn: Callable, *args) -> None:
        """Queue ``fn(*args)`` (a write of ``key``) behind the writes already queued (even after
        one failed: the caller raises that by ``check`` where it chooses)."""
        with self._cond:
            self._jobs.append((key, fn, args))
            self._pending[key] += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                # kept a while when idle: a start waits for the new thread to run (ms on a busy driver)
                if not self._jobs and not self._cond.wait_for(lambda: self._jobs, timeout=IDLE_S):
                    self._thread = None
                    return
                key, fn, args = self._jobs.popleft()
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - raised on the caller's thread by check()
                with self._cond:
                    self._error = self._error or e
            finally:
                with self._cond:
                    self._pending[key] -= 1
                    if not self._pending[key]:
                        del self._pending[key]
                    self.done += 1
                    self._cond.notify_all()

    def busy(self, key: Hashable) -> bool:
        with self._cond:
            return key in self._pending

    def wait_for(self, key: Hashable) -> None:
        """Wait until no write of ``key`` is queued or running."""
        with self._cond:
            self._cond.wait_for(lambda: key not in self._pending)

    def drain(self) -> None:
        """Wait for every write handed over so far; raise the first one that failed."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending)
        self.check()

    def check(self) -> None:
        """Raise (once) the exception of the first write that failed, if one did."""
        with self._cond:
            error, self._error = self._error, None
        if error is not None:
            raise error
