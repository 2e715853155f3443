"""Shared fixtures: where the offline datasets live, and a small CPU-friendly torch setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GLTH_SHARED_DATA", REPO.parent / "shared" / "data"))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

torch.set_num_threads(1)  # tests run next to Ray workers on 2 cores


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _need(SHARED_DATA / "mnist", "MNIST (../shared/data/mnist)")


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    return _need(SHARED_DATA / "cifar10-approx", "approximate CIFAR-10 (../shared/data/cifar10-approx)")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return _need(FASHION_DIR, "Fashion-MNIST (Debian package dataset-fashion-mnist)")
