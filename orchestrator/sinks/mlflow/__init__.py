"""MLflow as the sweep's dashboard: one parent run per sweep, one child run per trial, written
by the driver only.

- ``guard``: reaching the store fast-or-not-at-all (``MlflowUnavailable``);
- ``client``: the client, the experiment, finding or creating parent and child runs by their tags;
- ``values``: MLflow's size limits, params flattened from a config, metric values;
- ``rounds``: a row's metrics, a trial's rounds into its run idempotently;
- ``finish``: what a trial's rows say about its run (outcome, name) and ending the run;
- ``sync``: ``sync_sweep``, the backfill of a sweep from its Parquet rows;
- ``callback``: ``MlflowWriter``, the Tune callback that logs a trial's rounds in one batch (at its end, or within ``FLUSH_S`` of a report);
- ``curves``: the sweep's curves (mean ± CI over seeds) on the parent run at step = round;
- ``meta``: MLflow's own fields (experiment kind, source, dataset input);
- ``system``: the worker's system metrics, carried in the reports;
- ``query``: ``glth runs``, finding a trial's run, adding metrics/artifacts to existing runs;
- ``outputs``: the analysis table and exported models.

``from orchestrator.sinks import mlflow as mlflow_sink`` gives every public name below. The
callback (which imports Ray) is loaded on first use of ``MlflowWriter``.
"""

from orchestrator.sinks.mlflow.client import (
    TAG_ARTIFACTS,
    TAG_PARENT,
    TAG_ROLE,
    TAG_SPEC,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    client,
    ensure_experiment,
    get_or_create_child,
    get_or_create_parent,
)
from orchestrator.sinks.mlflow.curves import CurveBook
from orchestrator.sinks.mlflow.finish import finish_child
from orchestrator.sinks.mlflow.guard import HTTP_ENV, MlflowUnavailable
from orchestrator.sinks.mlflow.meta import EXPERIMENT_TAGS, source_tags
from orchestrator.sinks.mlflow.outputs import log_analysis_table, log_exported_model
from orchestrator.sinks.mlflow.query import BadFilter, find_runs, log_extra, log_to_parent, search_children
from orchestrator.sinks.mlflow.rounds import (
    IDENTITY,
    PROBE_METRIC,
    ROUND_METRICS,
    log_rounds,
    logged_rounds,
    metric_values,
)
from orchestrator.sinks.mlflow.sync import sync_sweep
from orchestrator.sinks.mlflow.system import SystemSampler
from orchestrator.sinks.mlflow.values import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VALUE,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE,
    TRUNCATED,
    flatten_params,
)

__all__ = [
    "HTTP_ENV",
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAM_VALUE",
    "MAX_PARAMS_PER_BATCH",
    "MAX_TAG_VALUE",
    "TAG_ARTIFACTS",
    "TAG_PARENT",
    "TAG_ROLE",
    "TAG_SPEC",
    "TAG_STATUS",
    "TAG_SWEEP",
    "TAG_TRIAL",
    "TRUNCATED",
    "BadFilter",
    "MlflowUnavailable",
    "client",
    "ensure_experiment",
    "flatten_params",
    "get_or_create_child",
    "get_or_create_parent",
    "CurveBook",
    "EXPERIMENT_TAGS",
    "source_tags",
    "log_analysis_table",
    "log_exported_model",
    "find_runs",
    "log_extra",
    "log_to_parent",
    "search_children",
    "IDENTITY",
    "PROBE_METRIC",
    "ROUND_METRICS",
    "finish_child",
    "log_rounds",
    "logged_rounds",
    "metric_values",
    "sync_sweep",
    "SystemSampler",
    "MlflowWriter",
]


def __getattr__(name):
    if name == "MlflowWriter":
        from orchestrator.sinks.mlflow.callback import MlflowWriter

        return MlflowWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
