"""The last of the driver's Tune callbacks: once the sinks have written a report's rows, the rows
leave the result Tune keeps.

Tune keeps each trial's last result for the whole sweep (``Trial.last_result``, and its JSON in the
experiment state it saves for every trial), so a report's ``new_rows`` (the round's row dicts, each
with the trial's config) and ``system_metrics`` would stay in the driver once per trial ever run,
not once per trial running. Tune hands the callbacks the result before it stores it and lets them
change it in place (``TuneController._process_trial_result``); this callback, listed after the
Parquet and MLflow writers and the progress display, takes those keys out. What Tune then keeps is
the round's numbers, which nothing of glth reads back from Tune (rows are judged from Parquet).
"""

from __future__ import annotations

from ray.tune import Callback

#: the bulky parts of a report, read only by the callbacks before this one
HANDED_OFF = ("new_rows", "system_metrics")


class TrimResult(Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        for key in HANDED_OFF:
            result.pop(key, None)
