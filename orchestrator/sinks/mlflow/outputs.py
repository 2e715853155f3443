"""What `glth results` and `glth export --mlflow` add to a finished sweep's runs: the analysis
table on the parent (``log_table``: MLflow's UI renders it) and an exported ticket as an MLflow
model on the trial's run (``mlflow.pytorch.log_model``, with a signature and an input example).
Both are logged once per distinct content."""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np
import pandas as pd

from orchestrator.sinks.mlflow.client import client
from orchestrator.sinks.mlflow.guard import _guarded
from orchestrator.sinks.mlflow.query import find_runs

TAG_TABLE = "glth.analysis_table"
TAG_MODEL, TAG_MODEL_URI = "glth.export.model", "glth.export.model_uri"


def _frame_digest(frame: pd.DataFrame) -> str:
    text = frame.to_json(orient="split", index=False, date_format="iso", double_precision=15)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@_guarded
def log_analysis_table(tracking_uri: str, experiment: str, sweep_id: str, frame: pd.DataFrame) -> str | None:
    """Log ``frame`` (the per-curve analysis) as ``tables/analysis-<digest>.json`` on the sweep's
    parent run. Returns the artifact's name, or None when the sweep has no parent run there.
    The same content again logs nothing (log_table would append it to the same file)."""
    parent_id, _ = find_runs(tracking_uri, experiment, sweep_id)
    if parent_id is None:
        return None
    digest = _frame_digest(frame)
    name = f"tables/analysis-{digest}.json"  # beside analysis/, which holds analysis.parquet
    c = client(tracking_uri)
    if c.get_run(parent_id).data.tags.get(TAG_TABLE) == name:
        return name
    c.log_table(parent_id, frame.reset_index(drop=True), name)
    c.set_tag(parent_id, TAG_TABLE, name)
    return name


@contextlib.contextmanager
def _fluent_uri(uri: str):
    """mlflow.pytorch.log_model resolves the store from the fluent API's tracking URI."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


@_guarded
def log_exported_model(tracking_uri: str, run_id: str, module, input_example, name: str = "ticket") -> str:
    """Log ``module`` (a torch.nn.Module: the exported ticket) on ``run_id`` as an MLflow model
    with a signature inferred from ``input_example`` (a batch: tensor or array) and the module's
    output on it. Returns the model's URI; the same weights and example again log nothing."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    x = _as_array(input_example)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            y = module(torch.from_numpy(x)).detach().cpu().numpy()
    finally:
        module.train(was_training)
    h = hashlib.sha256(name.encode() + repr(x.shape).encode() + x.tobytes())
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()[:16]
    c = client(tracking_uri)
    run = c.get_run(run_id)
    if run.data.tags.get(TAG_MODEL) == digest and run.data.tags.get(TAG_MODEL_URI):
        return run.data.tags[TAG_MODEL_URI]
    # the logged model goes in the run's experiment (left to itself, MLflow picks the fluent one)
    model = c.create_logged_model(
        experiment_id=run.info.experiment_id, name=name, source_run_id=run_id, tags={TAG_MODEL: digest}
    )
    with _fluent_uri(tracking_uri):
        info = mlflow.pytorch.log_model(
            module,
            name=name,
            signature=infer_signature(x, y),
            input_example=x,
            run_id=run_id,
            model_id=model.model_id,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    c.set_tag(run_id, TAG_MODEL_URI, info.model_uri)
    c.set_tag(run_id, TAG_MODEL, digest)
    return info.model_uri
