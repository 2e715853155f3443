"""The MLflow client, the experiment, and a sweep's runs found or created, each exactly once.

Runs are found by tags before any is created (``glth.sweep_id`` + ``glth.role = parent``;
``glth.trial_id`` + ``mlflow.parentRunId``), and the identifying tags are set in ``create_run``
itself, so no crash leaves an untagged run that a later call would duplicate. A store that is
down raises ``MlflowUnavailable`` quickly (``guard.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.sinks.mlflow import meta, sqlite_seed
from orchestrator.sinks.mlflow.guard import _guarded
from orchestrator.sinks.mlflow.values import MAX_PARAMS_PER_BATCH, MAX_TAG_VALUE, _chunks, flatten_params

TAG_SWEEP, TAG_TRIAL, TAG_ROLE = "glth.sweep_id", "glth.trial_id", "glth.role"
TAG_STATUS, TAG_ARTIFACTS, TAG_SPEC = "glth.status", "glth.artifacts", "glth.spec"
TAG_PARENT = "mlflow.parentRunId"


# -- small helpers -----------------------------------------------------------------------------


def _quoted(value: str) -> str:
    value = str(value)
    if "'" in value:
        raise ValueError(f"{value!r}: quotes are not allowed in ids")
    return f"'{value}'"


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, max_results=1000, page_token=token, order_by=["attributes.start_time ASC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _file_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _artifact_root(tracking_uri: str) -> str | None:
    """For a sqlite store: ``<db dir>/mlartifacts`` (MLflow would otherwise use ``./mlruns``)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///") :]).expanduser().resolve()
    return (db.parent / "mlartifacts").as_uri()


def _upload(client, run_id: str, name: str, local: Path, artifact_uri: str | None = None) -> None:
    """Log ``local`` as artifact ``name`` (which may contain a folder: ``masks/final.pt``).
    ``artifact_uri``: the run's (``run.info.artifact_uri``) when the caller has the run: the
    upload then skips the ``get_run`` that ``log_artifact`` reads it with (params, tags, latest
    metrics and inputs loaded for one field)."""
    folder, base = os.path.split(name)
    if artifact_uri is None:
        log = lambda path: client.log_artifact(run_id, path, folder or None)  # noqa: E731
    else:
        repo = _artifact_repo(client, artifact_uri)
        log = lambda path: repo.log_artifact(path, folder or None)  # noqa: E731
    if local.name == base:
        log(str(local))
        return
    with tempfile.TemporaryDirectory() as d:
        staged = Path(d) / base
        shutil.copyfile(local, staged)
        log(str(staged))


def _artifact_repo(client, artifact_uri: str):
    """The artifact repository of a run whose ``artifact_uri`` is known, as MLflow's
    ``log_artifact`` makes it (the tracking URI resolves ``mlflow-artifacts:`` URIs)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

    tracking_uri = client.tracking_uri
    return get_artifact_repository(
        add_databricks_profile_info_to_artifact_uri(artifact_uri, tracking_uri), tracking_uri=tracking_uri
    )


def _add_missing_tags(client, run, tags: dict) -> None:
    missing = {k: str(v)[:MAX_TAG_VALUE] for k, v in tags.items() if k not in run.data.tags}
    if missing:
        client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in missing.items()], synchronous=True)


# -- the experiment and its runs ---------------------------------------------------------------


@_guarded
def client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient for a server or a database store; a ``./mlruns`` file store is refused."""
    if not tracking_uri or _file_store(tracking_uri):
        raise ValueError(f"tracking URI {tracking_uri!r}: use sqlite:///PATH or http(s)://HOST, not a file store")
    sqlite_seed.seed(tracking_uri)  # a new sqlite store: copied at the schema head, not migrated here
    # MLflow's usage telemetry inspects every client call's signature and queues a record (~10 %
    # of the driver's CPU in its MLflow writes): off unless the user set it (MLFLOW_DISABLE_TELEMETRY=false)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return MlflowClient(tracking_uri=tracking_uri)


@_guarded
def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created if missing; tagged as a model-training experiment
    (``mlflow.experimentKind``) so MLflow's UI opens it on its runs, not on GenAI traces."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        for k, v in meta.EXPERIMENT_TAGS.items():
            if exp.tags.get(k) is None:  # a kind a person chose in the UI is kept
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    if artifact_location is None:
        artifact_location = _artifact_root(str(getattr(client._tracking_client, "tracking_uri", "")))
    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=meta.EXPERIMENT_TAGS)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":  # created by a concurrent caller
            raise
        return ensure_experiment.__wrapped__(client, name, artifact_location)


def _find_or_create_parent(client, experiment_id, sweep_id, spec_text, tags) -> tuple[str, bool]:
    found = _search_all(
        client, experiment_id, f"tags.`{TAG_SWEEP}` = {_quoted(sweep_id)} and tags.`{TAG_ROLE}` = 'parent'"
    )
    wanted = {**meta.source_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    if found:
        run, created = found[0], False
        _add_missing_tags(client, run, wanted)
        have_spec = run.data.tags.get(TAG_SPEC) == "logged"
    else:
        run_tags = {**wanted, TAG_SWEEP: sweep_id, TAG_ROLE: "parent"}
        run, created = client.create_run(experiment_id, tags=run_tags, run_name=sweep_id), True
        have_spec = False
    if not have_spec:
        client.log_text(run.info.run_id, spec_text, "spec.yaml")
        client.set_tag(run.info.run_id, TAG_SPEC, "logged")
    return run.info.run_id, created


@_guarded
def get_or_create_parent(
    client: MlflowClient, experiment_id: str, sweep_id: str, spec_text: str, tags: dict | None = None
) -> str:
    """The sweep's parent run (tag ``glth.sweep_id``); a new one gets ``tags``, the source tags
    (``mlflow.source.*``) and ``spec.yaml``."""
    return _find_or_create_parent(client, experiment_id, sweep_id, spec_text, tags)[0]


def _children(client, experiment_id, parent_run_id, trial_id: str | None = None) -> dict:
    """trial_id → its oldest child run under the parent."""
    query = f"tags.`{TAG_PARENT}` = {_quoted(parent_run_id)}"
    if trial_id is not None:
        query += f" and tags.`{TAG_TRIAL}` = {_quoted(trial_id)}"
    out = {}
    for run in _search_all(client, experiment_id, query):
        out.setdefault(run.data.tags.get(TAG_TRIAL), run)
    return out


def _log_params(client, run_id: str, params: dict[str, str], existing: dict[str, str]) -> None:
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    for chunk in _chunks(new, MAX_PARAMS_PER_BATCH):  # one call unless the config is huge
        client.log_batch(run_id, params=chunk, synchronous=True)


def _find_or_create_child(
    client,
    experiment_id,
    parent_run_id,
    trial_id,
    params,
    run_name,
    known: dict | None = None,
    dataset: str | None = None,
    params_out: list | None = None,
) -> tuple[str, bool]:
    """``known``: the parent's children when the caller already searched them. ``dataset``: the
    dataset's name, logged as the run's input (its digest from the dataset keys of ``params``).
    ``params_out``: a new run's params go there instead of into their own ``log_batch`` (the
    caller sends them with the run's first metrics: one commit instead of two)."""
    flat = flatten_params(params or {})
    if known is None:
        known = _children(client, experiment_id, parent_run_id, trial_id)
    inputs = meta.dataset_inputs(dataset, params or {}) if dataset else []
    existing = known.get(trial_id)
    if existing is not None:  # completes what a crash right after create_run left out
        _log_params(client, existing.info.run_id, flat, existing.data.params)
        _add_missing_tags(client, existing, meta.source_tags())
        if inputs and not meta.has_input(existing, inputs[0]):
            client.log_inputs(existing.info.run_id, datasets=inputs)
        return existing.info.run_id, False
    tags = {**meta.source_tags(), TAG_PARENT: parent_run_id, TAG_TRIAL: trial_id, TAG_ROLE: "child"}
    run = client.create_run(experiment_id, tags=tags, run_name=run_name)
    if params_out is not None:
        params_out.extend(Param(k, v) for k, v in flat.items())
    else:
        _log_params(client, run.info.run_id, flat, {})
    if inputs:
        client.log_inputs(run.info.run_id, datasets=inputs)
    return run.info.run_id, True


@_guarded
def get_or_create_child(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    trial_id: str,
    params: dict,
    run_name: str | None = None,
    dataset: str | None = None,
) -> str:
    """The trial's child run (tag ``glth.trial_id`` under the parent); params = the flattened config."""
    return _find_or_create_child(client, experiment_id, parent_run_id, trial_id, params, run_name, dataset=dataset)[0]
