"""scikit-learn's embedded 8×8 digits: always present, tiny, the default for tests and demos."""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np

from glth_core.data.base import Raw
from glth_core.data.splits import heldout_split

TEST_FRACTION = 0.2
TEST_SEED = 0  # the test split is part of the dataset's definition, so it ignores split_seed


class Digits:
    """1,797 grey 8×8 images, 10 classes; test = 360 rows fixed by a seed-0 permutation."""

    input_shape = (1, 8, 8)
    num_classes = 10

    def check(self, data_dir: str | Path | None) -> None:
        return None  # embedded: data_dir is ignored

    def read(self, data_dir: str | Path | None) -> tuple[Raw, None]:
        images, target = _digits_table()
        x = (images / 16.0).astype(np.float32)[:, None]  # pixels are 0..16
        y = target.astype(np.int64)
        rest, test = heldout_split(len(y), math.ceil(TEST_FRACTION * len(y)), TEST_SEED)
        return Raw(x[rest], y[rest], x[test], y[test]), None


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64, target) as ``sklearn.datasets.load_digits`` returns them,
    read from scikit-learn's own ``digits.csv.gz`` the same way but without importing scikit-learn
    (its import takes seconds, paid by every trial's worker that reads digits); ``load_digits``
    itself where that file is not where it has always been."""
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(csv, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)
