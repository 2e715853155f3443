"""Dataset loaders: sizes, splits, normalisation, the on-disk formats, and one-line errors naming the path."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from glth_core import data
from glth_core.data import DatasetError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def assert_normalised(ds: data.Dataset) -> None:
    std, mean = torch.std_mean(ds.train_x, dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4), mean
    assert torch.allclose(std, torch.ones_like(std), atol=1e-4), std


def error_of(name: str, data_dir, **kw) -> str:
    with pytest.raises(DatasetError) as err:
        data.load(name, data_dir, **kw)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# -- digits ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load("digits")


def test_digits_sizes_shapes_and_types(digits):
    n_val = round(0.1 * 1437)
    assert (len(digits.train_y), len(digits.val_y), len(digits.test_y)) == (1437 - n_val, n_val, 360)
    assert digits.train_x.shape == (1437 - n_val, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10 and digits.is_image
    assert {x.dtype for x in (digits.train_x, digits.val_x, digits.test_x)} == {torch.float32}
    assert {y.dtype for y in (digits.train_y, digits.val_y, digits.test_y)} == {torch.int64}
    assert digits.describe() == {
        "name": "digits",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "n_train": 1437 - n_val,
        "n_val": n_val,
        "n_test": 360,
        "split_seed": 0,
        "val_fraction": 0.1,
        "data_dir": None,
    }


def test_digits_read_without_importing_sklearn_equals_load_digits(monkeypatch):
    """The digits come from scikit-learn's file without the seconds its import costs a worker;
    the table read is load_digits' own, value for value."""
    import sys

    from glth_core.data.digits import Digits, _digits_table

    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # importing it now raises ImportError
    Digits().read(None)
    images, target = _digits_table()
    monkeypatch.undo()
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert images.dtype == bunch.images.dtype and images.shape == (1797, 8, 8)
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
    assert target.dtype == bunch.target.dtype


def test_digits_train_split_is_normalised(digits):
    assert_normalised(digits)


def test_splits_are_seeded(digits):
    again = data.load("digits", split_seed=0)
    other = data.load("digits", split_seed=1)
    assert torch.equal(again.val_x, digits.val_x) and torch.equal(again.train_y, digits.train_y)
    assert not torch.equal(other.val_y, digits.val_y) or not torch.equal(other.val_x, digits.val_x)
    # the test split is fixed by the dataset, not by split_seed (its normalisation follows the train split)
    assert torch.equal(other.test_y, digits.test_y)
    assert torch.allclose(
        other.test_x * other.std[0] + other.mean[0], digits.test_x * digits.std[0] + digits.mean[0], atol=1e-5
    )


def test_val_fraction_sets_the_val_size():
    assert len(data.load("digits", val_fraction=0.25).val_y) == round(0.25 * 1437)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_val_fraction(fraction):
    assert "val_fraction" in error_of("digits", None, val_fraction=fraction)


def test_check_gives_shapes_without_loading():
    assert data.check("digits") == data.DatasetInfo("digits", (1, 8, 8), 10, None)


def test_unknown_name_lists_the_allowed_ones():
    msg = error_of("imagenet", None)
    assert msg.startswith("dataset: 'imagenet' is not one of") and all(n in msg for n in data.DATASETS)
    with pytest.raises(DatasetError):
        data.check("imagenet")


# -- MNIST-style IDX ---------------------------------------------------------------------------------


def test_mnist(mnist_dir):
    ds = data.load("mnist", mnist_dir)
    assert (len(ds.train_y) + len(ds.val_y), len(ds.test_y)) == (60000, 10000)
    assert ds.train_x.shape[1:] == (1, 28, 28) and int(ds.test_y[0]) == 7
    assert_normalised(ds)
    assert data.check("mnist", mnist_dir).input_shape == (1, 28, 28)


def test_fashion_mnist(fashion_dir):
    ds = data.load("fashion_mnist", fashion_dir)
    assert (len(ds.train_y) + len(ds.val_y), len(ds.test_y)) == (60000, 10000)
    assert int(ds.test_y[0]) == 9  # the first Fashion-MNIST test image is an ankle boot


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 2048 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, gz: bool = True, n_train: int = 20, n_test: int = 6, side: int = 28, **override) -> dict:
    """A tiny IDX dataset; ``override`` maps a file stem to replacement bytes."""
    rng = np.random.default_rng(0)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (n_train, side, side)),
        IDX_FILES[1]: np.arange(n_train) % 10,
        IDX_FILES[2]: rng.integers(0, 256, (n_test, side, side)),
        IDX_FILES[3]: np.arange(n_test)[::-1] % 10,
    }
    folder.mkdir(exist_ok=True)
    for stem, array in arrays.items():
        blob = override.get(stem, idx_bytes(array))
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_files_gzipped_or_not(tmp_path, gz):
    arrays = write_idx(tmp_path, gz=gz)
    ds = data.load("mnist", tmp_path, val_fraction=0.25)
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (15, 5, 6)
    assert ds.test_y.tolist() == arrays[IDX_FILES[3]].tolist()
    pixels = ds.test_x * ds.std[0] + ds.mean[0]
    assert torch.allclose(pixels[:, 0], torch.tensor(arrays[IDX_FILES[2]], dtype=torch.float32), atol=1e-3)
    assert ds.data_dir == str(tmp_path)


def test_tilde_in_data_dir_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_idx(tmp_path / "mnist")
    assert data.load("fashion_mnist", "~/mnist", val_fraction=0.25).data_dir == str(tmp_path / "mnist")


def test_data_dir_is_required_for_mnist():
    assert "data_dir is required for mnist" in error_of("mnist", None)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dir(tmp_path, name):
    missing = tmp_path / "nope"
    msg = error_of(name, missing)
    assert msg.startswith(f"dataset.data_dir: {missing} does not exist (expected")
    with pytest.raises(DatasetError, match="does not exist"):
        data.check(name, missing)


@pytest.mark.parametrize(
    "name, expected", [("mnist", "train-images-idx3-ubyte.gz"), ("cifar10", "cifar-10-batches-py")]
)
def test_empty_dir(tmp_path, name, expected):
    msg = error_of(name, tmp_path)
    assert str(tmp_path) in msg and expected in msg


def test_wrong_idx_magic(tmp_path):
    write_idx(tmp_path, **{IDX_FILES[0]: idx_bytes(np.zeros((20, 28, 28)), magic=1234)})
    msg = error_of("mnist", tmp_path)
    assert msg == f"{tmp_path / IDX_FILES[0]}.gz: bad IDX magic 1234 (expected 2051)"
    with pytest.raises(DatasetError, match="bad IDX magic 1234"):
        data.check("mnist", tmp_path)


def test_idx_byte_count_must_match_dims(tmp_path):
    write_idx(tmp_path, **{IDX_FILES[2]: idx_bytes(np.zeros((6, 28, 28)))[:-5]})
    msg = error_of("mnist", tmp_path)
    assert msg.startswith(f"{tmp_path / IDX_FILES[2]}.gz:") and "truncated" in msg


def test_idx_wrong_image_size(tmp_path):
    write_idx(tmp_path, side=27)
    assert error_of("mnist", tmp_path) == f"{tmp_path / IDX_FILES[0]}.gz: images are 27×27 (expected 28×28)"


def test_idx_label_count_must_match_images(tmp_path):
    write_idx(tmp_path, **{IDX_FILES[3]: idx_bytes(np.zeros(5))})
    msg = error_of("mnist", tmp_path)
    assert msg.startswith(f"{tmp_path / IDX_FILES[3]}.gz: 5 labels for 6 images")


def test_corrupt_gzip(tmp_path):
    write_idx(tmp_path)
    path = tmp_path / f"{IDX_FILES[1]}.gz"
    path.write_bytes(path.read_bytes()[:15])
    msg = error_of("mnist", tmp_path)
    assert msg.startswith(f"{path}: truncated or not a gzip file")


# -- CIFAR-10 ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar(cifar10_dir) -> data.Dataset:
    return data.load("cifar10", cifar10_dir)


def test_cifar10_approx(cifar, cifar10_dir):
    assert (len(cifar.train_y) + len(cifar.val_y), len(cifar.test_y)) == (50000, 10000)
    assert cifar.train_x.shape[1:] == cifar.test_x.shape[1:] == (3, 32, 32)
    assert cifar.input_shape == (3, 32, 32) and cifar.num_classes == 10
    labels = torch.cat([cifar.train_y, cifar.val_y, cifar.test_y])
    assert labels.min() == 0 and labels.max() == 9
    assert_normalised(cifar)
    assert data.check("cifar10", cifar10_dir).data_dir == cifar.data_dir


def test_cifar10_batches_dir_itself(cifar, cifar10_dir):
    assert data.check("cifar10", cifar10_dir / "cifar-10-batches-py").data_dir == cifar.data_dir


ROWS = 4  # per fake batch


def fake_batches() -> dict[str, dict]:
    rng = np.random.default_rng(1)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        name: {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, ROWS)],
            b"data": rng.integers(0, 256, (ROWS, 3072), dtype=np.uint8),
        }
        for name in names
    }


def write_tar(path: Path, batches: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def write_folder(folder: Path, batches: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in batches.items():
        (folder / name).write_bytes(blob)


def pickled(batches: dict[str, dict]) -> dict[str, bytes]:
    return {name: pickle.dumps(batch) for name, batch in batches.items()}


def test_cifar10_tar_gz_matches_the_folder(tmp_path):
    batches = fake_batches()
    write_tar(tmp_path / "cifar-10-python.tar.gz", pickled(batches))
    write_folder(tmp_path / "unpacked" / "cifar-10-batches-py", pickled(batches))
    from_tar = data.load("cifar10", tmp_path, val_fraction=0.25)
    from_folder = data.load("cifar10", tmp_path / "unpacked", val_fraction=0.25)
    assert from_tar.data_dir == str(tmp_path / "cifar-10-python.tar.gz")
    assert (len(from_tar.train_y), len(from_tar.val_y), len(from_tar.test_y)) == (15, 5, ROWS)
    for split in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(from_tar, split), getattr(from_folder, split))
    test = batches["test_batch"]
    assert from_tar.test_y.tolist() == test[b"labels"]
    pixels = from_tar.test_x * torch.tensor(from_tar.std).view(1, 3, 1, 1) + torch.tensor(from_tar.mean).view(
        1, 3, 1, 1
    )
    assert torch.allclose(pixels, torch.tensor(test[b"data"].reshape(ROWS, 3, 32, 32), dtype=torch.float32), atol=1e-3)


def test_truncated_pickle(tmp_path):
    blobs = pickled(fake_batches())
    blobs["data_batch_3"] = blobs["data_batch_3"][:100]
    write_folder(tmp_path / "cifar-10-batches-py", blobs)
    msg = error_of("cifar10", tmp_path)
    assert msg.startswith(f"{tmp_path / 'cifar-10-batches-py' / 'data_batch_3'}: truncated or not a CIFAR-10 pickle")


def test_truncated_tar(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_tar(archive, pickled(fake_batches()))
    archive.write_bytes(archive.read_bytes()[:200])
    assert error_of("cifar10", tmp_path).startswith(f"{archive}: truncated or not a tar.gz archive")


def test_pickle_with_other_globals_is_refused(tmp_path):
    blobs = pickled(fake_batches())
    blobs["test_batch"] = pickle.dumps(OrderedDict(fake_batches()["test_batch"]))
    write_folder(tmp_path, blobs)
    msg = error_of("cifar10", tmp_path)
    assert msg.startswith(f"{tmp_path / 'test_batch'}: truncated or not a CIFAR-10 pickle") and "not allowed" in msg


def test_wrong_cifar_shapes(tmp_path):
    batches = fake_batches()
    batches["data_batch_2"][b"data"] = np.zeros((ROWS, 3000), dtype=np.uint8)
    write_folder(tmp_path, pickled(batches))
    assert (
        error_of("cifar10", tmp_path)
        == f"{tmp_path / 'data_batch_2'}: data is uint8 ({ROWS}, 3000) (expected uint8 N×3072)"
    )


def test_cifar_labels_must_match_rows(tmp_path):
    batches = fake_batches()
    batches["test_batch"][b"labels"] = [0, 1]
    write_folder(tmp_path, pickled(batches))
    assert error_of("cifar10", tmp_path).startswith(f"{tmp_path / 'test_batch'}: labels are")


def test_missing_batch(tmp_path):
    blobs = pickled(fake_batches())
    del blobs["data_batch_5"]
    write_folder(tmp_path, blobs)
    assert error_of("cifar10", tmp_path).startswith(f"{tmp_path / 'data_batch_5'} does not exist")
    with pytest.raises(DatasetError, match="data_batch_5 does not exist"):
        data.check("cifar10", tmp_path)


def test_labels_out_of_range(tmp_path):
    batches = fake_batches()
    batches["data_batch_1"][b"labels"][0] = 10
    write_folder(tmp_path, pickled(batches))
    msg = error_of("cifar10", tmp_path)
    assert str(tmp_path) in msg and "0..9" in msg
