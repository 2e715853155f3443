"""MLflow's own fields, filled so its UI shows a sweep as a training project: the experiment's
kind, each run's source (git commit, entry point) and each child's dataset as a run input."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag

#: MLflow 3 opens an experiment without a kind on its GenAI pages (traces); this kind, on its runs
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
SOURCE_NAME = "glth"  # the entry point: `glth run` / `glth sync`
#: the config keys that decide which examples a trial sees: the dataset input's digest
DATASET_KEYS = ("dataset", "data_dir", "val_fraction", "split_seed")
INPUT_CONTEXT = "training"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the glth checkout this code runs from, or None (not a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def source_tags() -> dict[str, str]:
    """``mlflow.source.*`` for a run glth creates (the commit only where it is known)."""
    tags = {"mlflow.source.name": SOURCE_NAME, "mlflow.source.type": "LOCAL"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def dataset_entity(name: str, config: dict) -> Dataset:
    """The trial's dataset as MLflow records it: a name, a source and a digest of what decides
    its examples (name, data_dir, validation fraction and split seed); no data is uploaded.

    The source is the data directory (``local``) where the config names one, else glth's loader
    (``code``: bundled datasets such as scikit-learn's digits)."""
    keys = {k: config.get(k) for k in DATASET_KEYS if k in config}
    keys["dataset"] = name
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]
    if config.get("data_dir"):
        source_type, source = "local", {"uri": str(config["data_dir"])}
    else:
        source_type, source = "code", {"tags": {"glth.loader": "glth_core.data", "glth.dataset": name}}
    return Dataset(
        name=name,
        digest=digest,
        source_type=source_type,
        source=json.dumps(source, sort_keys=True),
        schema=None,
        profile=json.dumps({k: v for k, v in keys.items() if k != "dataset"}, sort_keys=True),
    )


def dataset_inputs(name: str, config: dict) -> list[DatasetInput]:
    return [DatasetInput(dataset_entity(name, config), tags=[InputTag("mlflow.data.context", INPUT_CONTEXT)])]


def has_input(run, dataset_input: DatasetInput) -> bool:
    """Whether ``run`` (as get_run or search_runs returned it) already has this dataset input."""
    inputs = getattr(run, "inputs", None)
    for d in getattr(inputs, "dataset_inputs", None) or []:
        if d.dataset.name == dataset_input.dataset.name and d.dataset.digest == dataset_input.dataset.digest:
            return True
    return False
