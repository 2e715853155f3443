"""The one place that turns an official train/test split into train/val/test tensors.

The validation split is held out of the official training data with ``torch.Generator(split_seed)``;
normalisation statistics (``normalize: train``) come from what remains for training, so neither val nor
test leaks into them.
"""

from __future__ import annotations

import numpy as np
import torch

from glth_core.data.base import Dataset, DatasetError, Raw
from glth_core.data.normalize import statistics


def heldout_split(n: int, n_heldout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) row indices, each sorted, from one seeded permutation of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    return np.sort(perm[n_heldout:]), np.sort(perm[:n_heldout])


def check_val_fraction(val_fraction: float) -> float:
    if not 0.0 < float(val_fraction) < 1.0:
        raise DatasetError(f"dataset.val_fraction: {val_fraction} must be strictly between 0 and 1")
    return float(val_fraction)


def _tensor(x: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Readers may hand over read-only views of file buffers; copy only when torch would need to.
    x = np.require(x, requirements=["C", "W"])
    return torch.from_numpy(x).to(device).to(dtype)  # move the compact (often uint8) array, convert there


def make_dataset(
    name: str,
    raw: Raw,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    val_fraction: float,
    split_seed: int,
    device: str | torch.device,
    data_dir: str | None,
    normalize="train",
) -> Dataset:
    """Hold out val, normalise every split per channel (``normalize``: see ``glth_core.data.normalize``; by
    default with the train split's mean and std), place on ``device``."""
    val_fraction = check_val_fraction(val_fraction)
    where = data_dir or name
    for split, x, y in (("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)):
        if tuple(x.shape[1:]) != tuple(input_shape) or y.shape != (len(x),):
            raise DatasetError(
                f"{where}: {split} images {tuple(x.shape)} with labels {tuple(y.shape)} "
                f"(expected N×{'×'.join(map(str, input_shape))} with N labels)"
            )
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DatasetError(f"{where}: {split} labels span {y.min()}..{y.max()} (expected 0..{num_classes - 1})")
    n = len(raw.train_y)
    n_val = round(val_fraction * n)
    if not 0 < n_val < n:
        raise DatasetError(f"dataset.val_fraction: {val_fraction} of {n} training rows leaves an empty split")
    train_idx, val_idx = heldout_split(n, n_val, split_seed)

    device = torch.device(device)
    xs = {
        "train": _tensor(raw.train_x[train_idx], torch.float32, device),
        "val": _tensor(raw.train_x[val_idx], torch.float32, device),
        "test": _tensor(raw.test_x, torch.float32, device),
    }
    mean, std = statistics(normalize, xs["train"], raw.train_x.dtype)
    for x in xs.values():
        x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return Dataset(
        name=name,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        train_x=xs["train"],
        train_y=_tensor(raw.train_y[train_idx], torch.int64, device),
        val_x=xs["val"],
        val_y=_tensor(raw.train_y[val_idx], torch.int64, device),
        test_x=xs["test"],
        test_y=_tensor(raw.test_y, torch.int64, device),
        split_seed=int(split_seed),
        val_fraction=val_fraction,
        data_dir=data_dir,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )
