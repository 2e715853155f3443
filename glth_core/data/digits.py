"""scikit-learn's embedded 8×8 digits: always present, tiny, the default for tests and demos."""

from __future__ import annotations

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
        from sklearn.datasets import load_digits  # sklearn import is slow; pay it only when used

        bunch = load_digits()
        x = (bunch.images / 16.0).astype(np.float32)[:, None]  # pixels are 0..16
        y = bunch.target.astype(np.int64)
        rest, test = heldout_split(len(y), math.ceil(TEST_FRACTION * len(y)), TEST_SEED)
        return Raw(x[rest], y[rest], x[test], y[test]), None
