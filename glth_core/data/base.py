"""What every dataset loader shares: the error, the loaded ``Dataset``, the raw arrays a format reader returns,
and the one way a ``data_dir`` is resolved."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the one-line message names the path and what was expected there."""


class Raw(NamedTuple):
    """The official train/test split as numpy arrays: x is N×C×H×W (any real dtype), y is N ints."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


class Source(Protocol):
    """One registered dataset: its shape, and how to check and read its files."""

    input_shape: tuple[int, int, int]
    num_classes: int

    def check(self, data_dir: str | Path | None) -> Path | None:
        """Cheap look at the files (existence, headers); returns the resolved directory."""

    def read(self, data_dir: str | Path | None) -> tuple[Raw, Path | None]:
        """The whole official split, validated, and the resolved directory."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a sweep spec needs to know before loading: the model's input and output sizes."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    data_dir: str | None


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/val/test tensors, float32 N×C×H×W normalised per channel: (x − mean) / std, ``mean`` and ``std``
    in raw units (``glth_core.data.normalize``; by default the train split's own)."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    split_seed: int
    val_fraction: float
    data_dir: str | None
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    is_image: bool = True

    def describe(self) -> dict:
        """A JSON-friendly summary for logs and run tags."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "n_train": len(self.train_y),
            "n_val": len(self.val_y),
            "n_test": len(self.test_y),
            "split_seed": self.split_seed,
            "val_fraction": self.val_fraction,
            "data_dir": self.data_dir,
        }


def resolve_dir(name: str, data_dir: str | Path | None, expected: str) -> Path:
    """``data_dir`` with ``~`` expanded, made absolute, or a DatasetError if it is missing or not a directory."""
    if data_dir is None or str(data_dir) == "":
        raise DatasetError(f"dataset.data_dir is required for {name} (a directory with {expected})")
    path = Path(data_dir).expanduser().absolute()  # messages and describe() then say exactly where
    if not path.exists():
        raise DatasetError(f"dataset.data_dir: {path} does not exist (expected {expected})")
    if not path.is_dir():
        raise DatasetError(f"dataset.data_dir: {path} is not a directory (expected {expected})")
    return path


def one_line(exc: BaseException) -> str:
    """A library exception's first line, for wrapping into a DatasetError."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
