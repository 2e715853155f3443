"""The last of the driver's Tune callbacks: once the sinks have written a report's rows, the result
Tune keeps is cut down to Tune's own bookkeeping.

Tune keeps each trial's last result for the whole sweep (``Trial.last_result``, and its JSON in the
experiment state it saves for every trial), and for every number in it a running max/min/avg and
last-5/last-10 windows (``Trial.run_metadata.metric_analysis``, also in that JSON): per trial ever
run, not per trial running. A report carries the round's row dicts (``new_rows``, each with the
trial's config), MLflow's ``system_metrics``, the round's numbers (some 30 for kind imp) and, added
by Tune, the trial's whole config. Tune hands the callbacks the result before it stores it and lets
them change it in place (``TuneController._process_trial_result``); this callback, listed after the
Parquet and MLflow writers, the progress display and the notices, keeps only the keys Tune fills in
itself (less the config): nothing of glth reads a result back from Tune (rows are judged from
Parquet). Each number kept costs ~2.5 KB a trial in Tune's analysis of it.
"""

from __future__ import annotations

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS, DONE, SHOULD_CHECKPOINT, TRIAL_ID

#: what Tune keeps of a report: its own keys (a trial's config is in ``Trial.config`` already)
KEPT = frozenset(AUTO_RESULT_KEYS) - {"config"} | {DONE, SHOULD_CHECKPOINT, TRIAL_ID}


class TrimResult(Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        for key in [k for k in result if k not in KEPT]:
            del result[key]
