"""One driver per sweep: a lease in the sweep directory, kept alive by a heartbeat.

``<sweep>/lease.json`` names the driver that runs the sweep now: its host, pid, start time, the
time of its last heartbeat, its heartbeat interval and a random token. Every write of it is atomic
(``Storage.write_bytes``: a local rename, or one S3 PUT), so it works on every storage.

- ``glth run`` (and the ``glth run`` a ``glth submit`` job runs) takes the lease before Ray starts
  and releases it when it ends, cleanly or not; a second driver of the same sweep is refused in one
  line naming the owner (``LeaseHeld``), having written nothing.
- A background thread rewrites the heartbeat every ``GLTH_LEASE_HEARTBEAT_S`` seconds (default 10).
- A lease is stale, and is taken over (said in one line), when its heartbeat is older than
  ``GLTH_LEASE_TIMEOUT_S`` (default 3 × the owner's heartbeat interval), or at once when its owner
  ran on this host and its pid is gone: a SIGKILLed driver's sweep resumes.
- Two drivers starting within the same instant can both write the lease; each reads it back, and
  every heartbeat first checks the lease is still its own: the one that lost it stops (as on
  Ctrl-C: the rows it wrote are the same rows, keyed by trial and round), the other goes on.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from datetime import datetime, timezone

import psutil

from orchestrator.storage import Storage

LEASE = "lease.json"
HEARTBEAT_ENV = "GLTH_LEASE_HEARTBEAT_S"
TIMEOUT_ENV = "GLTH_LEASE_TIMEOUT_S"
HEARTBEAT_S = 10.0
_HELD: dict[str, "Lease"] = {}  # storage uri → the lease this process holds there


class LeaseHeld(Exception):
    """Another driver runs this sweep now: one line naming it."""

    def __init__(self, store: Storage, owner: dict, timeout_s: float):
        self.owner = owner
        age = time.time() - float(owner.get("heartbeat", 0))
        super().__init__(
            f"sweep {_sweep_id(store)} is being run by another driver: host {owner.get('host')} "
            f"pid {owner.get('pid')}, since {_when(owner.get('started'))} (last heartbeat {age:.0f} s ago); "
            f"wait for it to end or stop it (its lease is taken over once its heartbeat is "
            f"{timeout_s:g} s old)"
        )


class BadLeaseSetting(ValueError):
    """GLTH_LEASE_HEARTBEAT_S / GLTH_LEASE_TIMEOUT_S that is not a positive number of seconds."""


def _sweep_id(store: Storage) -> str:
    return store.uri.rstrip("/").rpartition("/")[2]


def _when(epoch) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _seconds(env: str, default: float | None) -> float | None:
    raw = os.environ.get(env)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadLeaseSetting(f"{env}: {raw!r} is not a number of seconds") from None
    if not value > 0:
        raise BadLeaseSetting(f"{env}: {raw!r} must be > 0 seconds")
    return value


def pid_alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` of this host lives and is the one that started at ``started`` (a pid
    reused by a later process is not)."""
    try:
        proc = psutil.Process(int(pid))
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= float(started) + 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


def _stop_this_driver(store: Storage, owner: dict) -> None:
    print(
        f"[glth] sweep {_sweep_id(store)}: its lease was taken by host {owner.get('host')} pid {owner.get('pid')}; "
        f"stopping this driver (that one goes on)",
        file=sys.stderr,
        flush=True,
    )
    _thread.interrupt_main()  # as Ctrl-C: the local Ray stops, what was written stays


class Lease:
    """This process's claim on one sweep directory (``store``)."""

    def __init__(
        self,
        store: Storage,
        heartbeat_s: float | None = None,
        timeout_s: float | None = None,
        on_lost=_stop_this_driver,
    ):
        self.store = store
        self.heartbeat_s = heartbeat_s or _seconds(HEARTBEAT_ENV, HEARTBEAT_S)
        self.timeout_s = timeout_s or _seconds(TIMEOUT_ENV, None)
        self.on_lost = on_lost
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "heartbeat_s": self.heartbeat_s,
            "token": secrets.token_hex(8),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._made: list[str] = []

    # -- reading ------------------------------------------------------------------------------
    def holder(self) -> dict | None:
        """What the lease file says (None when there is none, or it is not a lease: taken over)."""
        if not self.store.exists(LEASE):
            return None
        try:
            owner = json.loads(self.store.read_text(LEASE))
        except FileNotFoundError:  # released meanwhile
            return None
        except ValueError:
            return None
        return owner if isinstance(owner, dict) else None

    def timeout_for(self, owner: dict) -> float:
        return self.timeout_s or 3 * float(owner.get("heartbeat_s") or HEARTBEAT_S)

    def why_stale(self, owner: dict) -> str | None:
        """Why ``owner``'s lease may be taken over, or None while it is alive."""
        if owner.get("host") == self.me["host"] and not pid_alive(owner.get("pid"), owner.get("started")):
            return f"its pid {owner.get('pid')} is gone from this host"
        try:
            age = time.time() - float(owner["heartbeat"])
        except (KeyError, TypeError, ValueError):
            return "it has no heartbeat"
        timeout = self.timeout_for(owner)
        return f"its last heartbeat is {age:.0f} s old (timeout {timeout:g} s)" if age > timeout else None

    def check(self) -> tuple[dict, str] | None:
        """Raise LeaseHeld when another live driver holds the lease; else the stale owner (and why)
        that taking it would replace, or None."""
        owner = self.holder()
        if owner is None or owner.get("token") == self.me["token"]:
            return None
        why = self.why_stale(owner)
        if why is None:
            raise LeaseHeld(self.store, owner, self.timeout_for(owner))
        return owner, why

    # -- holding ------------------------------------------------------------------------------
    def _write(self) -> None:
        self.store.write_text(LEASE, json.dumps({**self.me, "heartbeat": time.time()}) + "\n")

    def acquire(self) -> "Lease":
        """Take the lease (LeaseHeld if a live driver has it) and start the heartbeat."""
        stale = self.check()
        self._made = self._missing_dirs()
        self._write()
        owner = self.holder()
        if owner is None or owner.get("token") != self.me["token"]:  # another driver wrote it just now
            raise LeaseHeld(self.store, owner or {}, self.timeout_for(owner or {}))
        if stale is not None:
            print(
                f"[glth] sweep {_sweep_id(self.store)}: took over the lease of host {stale[0].get('host')} "
                f"pid {stale[0].get('pid')} ({stale[1]})",
                file=sys.stderr,
                flush=True,
            )
        _HELD[self.store.uri] = self
        self._thread = threading.Thread(target=self._beat, name="glth-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def beat(self) -> bool:
        """One heartbeat: renew the lease if it is still this driver's (True); else ``on_lost``
        and False. A storage that cannot be reached now is tried again at the next beat."""
        try:
            owner = self.holder()
            if owner is not None and owner.get("token") != self.me["token"]:
                self._stop.set()
                self.on_lost(self.store, owner)
                return False
            self._write()
        except OSError:
            pass
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s) and self.beat():
            pass

    def release(self) -> None:
        """Stop the heartbeat; remove the lease if it is still this driver's."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if _HELD.get(self.store.uri) is self:
            del _HELD[self.store.uri]
        with contextlib.suppress(OSError):
            owner = self.holder()
            if owner is not None and owner.get("token") == self.me["token"]:
                self.store.delete(LEASE)
        for d in self._made:  # a run refused after the lease was taken leaves no directory behind
            with contextlib.suppress(OSError):
                os.rmdir(d)  # only if empty: what a run wrote there stays

    def _missing_dirs(self) -> list[str]:
        """The local directories writing the lease will make, innermost first (none on S3)."""
        if not self.store.is_local:
            return []
        made, d = [], os.path.abspath(self.store.root)
        while not os.path.exists(d) and os.path.dirname(d) != d:
            made.append(d)
            d = os.path.dirname(d)
        return made

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold(store: Storage):
    """The lease of the sweep directory ``store``, taken now (LeaseHeld if another driver has it),
    as a context manager that releases it; a no-op when this process holds it already."""
    if store.uri in _HELD:
        return contextlib.nullcontext(_HELD[store.uri])
    return Lease(store).acquire()
