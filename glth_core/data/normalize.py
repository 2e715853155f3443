"""Per-channel normalization of a dataset (``dataset.normalize``), applied once to the stored tensors.

* ``train`` (the default): each channel centred and scaled by the training split's own mean and
  standard deviation (a constant channel is only centred);
* ``none``: pixels on the [0, 1] scale (integer images divided by their type's maximum, 255 for
  uint8), not centred;
* ``{mean: [...], std: [...]}``: one mean and one std (> 0) per channel, given on that [0, 1]
  pixel scale, as torchvision's ``Normalize`` after ``ToTensor`` takes them (open_lth normalizes
  CIFAR-10 with ImageNet's: mean 0.485, 0.456, 0.406, std 0.229, 0.224, 0.225).

Every choice is x ↦ (x − mean) / std per channel, on the raw values, with (mean, std) recorded on
the ``Dataset`` in raw units; a black (zero) raw pixel is then −mean / std.
"""

from __future__ import annotations

import math

import numpy as np
import torch

NORMALIZES = ("train", "none")
KEYS = ("mean", "std")


def _fail(why: str):
    raise ValueError(
        f"dataset.normalize: {why}; allowed: train, none, or {{mean: [...], std: [...]}} with one value per channel"
    )


def check_normalize(normalize, channels: int | None = None) -> None:
    """Refuse (one line) a normalize value that is neither a name nor per-channel means and stds
    (std > 0, finite; ``channels`` of each where the dataset's channel count is known)."""
    if isinstance(normalize, str):
        if normalize not in NORMALIZES:
            _fail(f"{normalize!r} is not a known name")
        return
    if not isinstance(normalize, dict) or sorted(normalize) != sorted(KEYS):
        _fail(f"{normalize!r} is not train, none, or a mapping of exactly mean and std")
    values = {}
    for key in KEYS:
        v = _values(normalize, key)
        if not v or not all(isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in v):
            _fail(f"{key} {normalize[key]!r} is not a list of finite numbers")
        values[key] = v
    if len(values["mean"]) != len(values["std"]):
        _fail(f"{len(values['mean'])} means and {len(values['std'])} stds")
    if channels is not None and len(values["mean"]) != channels:
        _fail(f"{len(values['mean'])} values for images of {channels} channels")
    if not all(s > 0 for s in values["std"]):
        _fail(f"std {values['std']} must be > 0 in every channel")


def _values(normalize: dict, key: str) -> list:
    v = normalize[key]
    return list(v) if isinstance(v, (list, tuple)) else [v]


def pixel_scale(dtype: np.dtype) -> float:
    """The raw value of a white pixel: an integer type's maximum (255 for uint8), else 1."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def statistics(normalize, train_x: torch.Tensor, raw_dtype: np.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per channel in raw units: the stored tensors are (x − mean) / std."""
    check_normalize(normalize, train_x.shape[1])
    if normalize == "train":
        std, mean = torch.std_mean(train_x, dim=(0, 2, 3), correction=0)
        return mean, torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays centred, not inf
    scale, c = pixel_scale(raw_dtype), train_x.shape[1]
    if normalize == "none":
        mean, std = [0.0] * c, [1.0] * c
    else:
        mean, std = _values(normalize, "mean"), _values(normalize, "std")
    return tuple(torch.tensor(v, dtype=train_x.dtype, device=train_x.device) * scale for v in (mean, std))
