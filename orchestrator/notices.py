"""What a trial's worker asks the driver to tell the person: a report's ``notice``, one line on stderr.

Workers' own output does not reach the driver's terminal (the local Ray runs with
``log_to_driver=False``), so a worker that has something to say (its resume state was unreadable,
so it restarted from round 0) puts one line in its next report, and this Tune callback prints it.
"""

from __future__ import annotations

import sys

from ray.tune import Callback


class Notices(Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("notice"):
            print(f"[glth] {result['notice']}", file=sys.stderr, flush=True)
