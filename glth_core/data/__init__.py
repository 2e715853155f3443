"""Datasets by name: ``load(name, data_dir)`` gives normalised train/val/test tensors.

Adding one is a reader (``input_shape``, ``num_classes``, ``check``, ``read`` returning the official
train/test arrays) and a line in DATASETS; splitting and normalising are shared (``splits.py``,
``normalize.py``); augmenting training batches is ``augment.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glth_core.data.base import Dataset, DatasetError, DatasetInfo, Raw, Source
from glth_core.data.cifar10 import Cifar10
from glth_core.data.digits import Digits
from glth_core.data.idx import IdxSource
from glth_core.data.normalize import NORMALIZES, check_normalize
from glth_core.data.splits import check_val_fraction, make_dataset

DATASETS: dict[str, Source] = {
    "digits": Digits(),
    "mnist": IdxSource("mnist", "MNIST"),
    "fashion_mnist": IdxSource("fashion_mnist", "Fashion-MNIST"),
    "cifar10": Cifar10(),
}

__all__ = [
    "DATASETS",
    "NORMALIZES",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "check",
    "check_normalize",
    "load",
    "load_for",
    "read",
]


def _source(name: str) -> Source:
    if name not in DATASETS:
        raise DatasetError(f"dataset: {name!r} is not one of {', '.join(DATASETS)}")
    return DATASETS[name]


def check(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """Shapes and a cheap look at the files (existence, headers), without loading: for validating specs."""
    source = _source(name)
    where = source.check(data_dir)
    return DatasetInfo(name, source.input_shape, source.num_classes, None if where is None else str(where))


def read(name: str, data_dir: str | Path | None = None) -> tuple[Raw, Path | None]:
    """The official train/test arrays as the files hold them, and the resolved directory: what
    ``load`` reads before it splits and normalizes (``raw=`` hands it over, read once elsewhere)."""
    return _source(name).read(data_dir)


def load(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
    normalize="train",
    raw: tuple[Raw, Path | None] | None = None,
) -> Dataset:
    """The dataset with val held out of the official train split (seeded by ``split_seed``), normalized
    per channel (``normalize``: ``glth_core.data.normalize``), on ``device``. ``raw``: what
    ``read(name, data_dir)`` returns, when it was read once for several loads (never written to)."""
    source = _source(name)
    check_val_fraction(val_fraction)
    try:
        check_normalize(normalize, source.input_shape[0])
    except ValueError as e:
        raise DatasetError(str(e)) from None
    raw, where = raw if raw is not None else source.read(data_dir)
    return make_dataset(
        name,
        raw,
        source.input_shape,
        source.num_classes,
        val_fraction=val_fraction,
        split_seed=split_seed,
        device=device,
        data_dir=None if where is None else str(where),
        normalize=normalize,
    )


def load_for(config, raw: tuple[Raw, Path | None] | None = None) -> Dataset:
    """The dataset a trial's config names: its ``dataset``, ``data_dir``, ``val_fraction``,
    ``split_seed``, ``device`` and ``normalize`` (every trial kind has these fields); ``raw`` as for ``load``."""
    return load(
        config.dataset,
        config.data_dir,
        val_fraction=config.val_fraction,
        split_seed=config.split_seed,
        device=config.device,
        normalize=config.normalize,
        raw=raw,
    )
