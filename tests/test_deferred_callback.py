"""``orchestrator.deferred_callback.Deferred``: Tune's per-step hooks never wait for the callback's
inputs, the first other hook builds it (setup replayed first), and a pickle leaves the thread behind."""

from __future__ import annotations

import pickle
import threading

from ray.tune import Callback

from orchestrator.background import Background
from orchestrator.deferred_callback import Deferred


class Recorder(Callback):
    def __init__(self, info):
        self.info, self.calls = info, []

    def setup(self, **info):
        self.calls.append(("setup", info))

    def on_step_end(self, iteration, trials, **info):
        self.calls.append(("on_step_end", iteration))

    def on_trial_start(self, iteration, trials, trial, **info):
        self.calls.append(("on_trial_start", trial))


def test_per_step_hooks_skip_until_ready_and_the_first_event_builds_with_setup_replayed():
    gate = threading.Event()
    ready = Background(lambda: gate.wait(30) and {"experiment_id": "7"}, nice=0)
    d = Deferred(ready, Recorder)
    d.setup(stop=None, total_num_samples=3)
    d.on_step_begin(iteration=0, trials=[])
    d.on_step_end(iteration=0, trials=[])
    assert d.built is None and not ready.done()  # nothing waited for the set-up
    state = pickle.loads(pickle.dumps(d)).__dict__  # Tune pickles its run config: no thread in it
    assert state == {"_ready": None, "_make": None, "_real": None, "_setup": None}

    gate.set()
    d.on_trial_start(iteration=1, trials=[], trial="t1")  # waits for the set-up, then builds
    real = d.built
    assert real.info == {"experiment_id": "7"}
    assert real.calls == [("setup", {"stop": None, "total_num_samples": 3}), ("on_trial_start", "t1")]
    d.on_step_end(iteration=2, trials=[])  # built: every hook forwarded
    assert real.calls[-1] == ("on_step_end", 2) and d.build() is real
