"""``dataset.normalize``: the training split's own per-channel statistics (the default), none (pixels
on [0, 1]), or given means and stds on that scale; a spec key that leaves today's trial ids alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glth_core import data as datasets
from glth_core.data.base import Raw
from glth_core.data.splits import make_dataset
from glth_core.imp import TrajectoryConfig
from orchestrator import spec

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def raw() -> Raw:
    """uint8 colour images whose channels differ in brightness and spread, like photographs."""
    g = np.random.default_rng(0)

    def images(n):
        base = g.normal([60, 120, 200], [10, 40, 25], size=(n, 8, 8, 3)).transpose(0, 3, 1, 2)
        return np.clip(base, 0, 255).astype(np.uint8)

    return Raw(images(400), g.integers(0, 10, 400), images(100), g.integers(0, 10, 100))


def _load(raw: Raw, normalize):
    return make_dataset(
        "fake", raw, (3, 8, 8), 10, val_fraction=0.1, split_seed=0, device="cpu", data_dir=None, normalize=normalize
    )


def test_train_statistics_centre_and_scale_the_training_split(raw):
    d = _load(raw, "train")
    std, mean = torch.std_mean(d.train_x.double(), dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(std, torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert d.mean[0] < d.mean[1] < d.mean[2]  # recorded in raw units, per channel
    # val and test are normalized with the training split's statistics, not their own
    assert not torch.allclose(d.test_x.mean(dim=(0, 2, 3)).double(), torch.zeros(3, dtype=torch.float64), atol=1e-5)


def test_train_is_the_default_and_unchanged(raw):
    a, b = (
        _load(raw, "train"),
        make_dataset("fake", raw, (3, 8, 8), 10, val_fraction=0.1, split_seed=0, device="cpu", data_dir=None),
    )
    assert all(torch.equal(getattr(a, f"{s}_x"), getattr(b, f"{s}_x")) for s in ("train", "val", "test"))


def test_given_values_are_on_the_unit_pixel_scale(raw):
    d = _load(raw, IMAGENET)
    expect = (
        torch.from_numpy(raw.test_x).float() / 255 - torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1)
    ) / torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)
    assert torch.allclose(d.test_x, expect, atol=1e-5)
    assert d.mean == pytest.approx([m * 255 for m in IMAGENET["mean"]], rel=1e-6)


def test_none_keeps_pixels_on_zero_to_one(raw):
    d = _load(raw, "none")
    assert torch.equal(d.test_x, torch.from_numpy(raw.test_x).float() / 255)
    digits = datasets.load("digits", normalize="none")  # float pixels already on [0, 1]
    assert float(digits.train_x.min()) == 0.0 and float(digits.train_x.max()) == 1.0


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("imagenet", "'imagenet' is not a known name"),
        ({"mean": [0.5, 0.5], "std": [0.2, 0.2]}, "2 values for images of 3 channels"),
        ({"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}, "must be > 0"),
        ({"mean": [0.5] * 3}, "exactly mean and std"),
        ({"mean": [0.5] * 3, "std": [0.2] * 2}, "3 means and 2 stds"),
    ],
)
def test_bad_values_are_refused_in_one_line(raw, bad, needle):
    with pytest.raises(ValueError) as e:
        _load(raw, bad)
    assert needle in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("dataset.normalize")


def _spec(normalize: str) -> str:
    return f"name: n\nseeds: [0]\nrounds: 2\ndataset: {{name: digits{normalize}}}\n"


def test_a_spec_key_that_leaves_default_ids_alone():
    plain = spec.parse(_spec("")).trials[0].config
    explicit = spec.parse(_spec(", normalize: train")).trials[0].config
    given = spec.parse(_spec(", normalize: {mean: [0.5], std: [0.25]}")).trials[0].config
    assert plain.content_hash() == explicit.content_hash() == TrajectoryConfig(rounds=2).content_hash()
    assert given.normalize == {"mean": [0.5], "std": [0.25]} and given.content_hash() != plain.content_hash()
    assert spec.parse(_spec(", normalize: none")).trials[0].config.normalize == "none"
