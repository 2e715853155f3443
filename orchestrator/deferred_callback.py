"""A Tune callback built when a trial first needs it, so that ``tuner.fit`` need not wait for its inputs.

The driver's MLflow writer needs the MLflow set-up (store, experiment, parent run: a thread started
before Ray, ``orchestrator.background``), which on 2 cores can end a second or more after ``ray.init``.
Waiting for it before ``tuner.fit`` delayed the trials' workers, whose start and imports (~2.5 s)
are most of the time to a sweep's first round. ``Deferred`` is handed to Tune in the writer's
place: ``setup`` is kept and replayed, the per-step hooks are skipped while the inputs are not ready
(the writer holds nothing before a trial's first result), and any other hook (a trial started, a
result, an error, the experiment's end) waits for them, builds the callback and forwards to it.
The set-up then overlaps the trials' workers' start.
"""

from __future__ import annotations

from ray.tune import Callback

#: Tune's hooks of every step of its loop, before and between trials' events
_EVERY_STEP = frozenset({"on_step_begin", "on_step_end"})


class Deferred(Callback):
    """``make(ready.result())`` built on the first hook that needs it; ``ready`` has ``done()`` and
    ``result()`` (``orchestrator.background.Background``)."""

    def __init__(self, ready, make):
        self._ready, self._make = ready, make
        self._real: Callback | None = None
        self._setup: dict | None = None

    @property
    def built(self) -> Callback | None:
        """The callback, if built."""
        return self._real

    def build(self) -> Callback:
        if self._real is None:
            self._real = self._make(self._ready.result())
            if self._setup is not None:
                self._real.setup(**self._setup)
        return self._real

    def setup(self, **info):
        self._setup = info

    def __getstate__(self):  # Tune pickles its run config: the thread and the factory stay here
        return {"_ready": None, "_make": None, "_real": self._real, "_setup": None}


def _forward(name: str):
    def hook(self, *args, **kwargs):
        if name in _EVERY_STEP and self._real is None and not self._ready.done():
            return None
        return getattr(self.build(), name)(*args, **kwargs)

    hook.__name__ = name
    return hook


for _name in vars(Callback):
    if _name.startswith("on_") and callable(getattr(Callback, _name)):
        setattr(Deferred, _name, _forward(_name))
