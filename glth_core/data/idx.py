"""MNIST-style datasets in the official IDX format (MNIST, Fashion-MNIST): four files, gzipped or not."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from glth_core.data.base import DatasetError, Raw, one_line, resolve_dir

IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension
STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_bytes(path: Path, limit: int = -1) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read(limit)
        with open(path, "rb") as f:
            return f.read(limit)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: truncated or not a gzip file ({one_line(e)})") from None


def _header(path: Path, buf: bytes, magic: int, ndim: int) -> tuple[int, ...]:
    size = 4 + 4 * ndim
    if len(buf) < size:
        raise DatasetError(f"{path}: {len(buf)} bytes is too short for an IDX header (expected {size})")
    got = int.from_bytes(buf[:4], "big")
    if got != magic:
        raise DatasetError(f"{path}: bad IDX magic {got} (expected {magic})")
    return tuple(int(d) for d in np.frombuffer(buf, ">u4", count=ndim, offset=4))


def _check_size(path: Path, dims: tuple[int, ...]) -> None:
    """The file's byte count against its header's dims without reading it: a plain file's size,
    or the gzip trailer's length of the uncompressed data (mod 2**32), which a truncated .gz's
    last four bytes are not."""
    expected = 4 + 4 * len(dims) + int(np.prod(dims))
    size = path.stat().st_size
    if path.suffix == ".gz":
        with open(path, "rb") as f:
            f.seek(max(0, size - 4))
            got = int.from_bytes(f.read(4), "little")
        expected, what = expected % 2**32, f"its gzip trailer gives {got} uncompressed bytes"
    else:
        got, what = size, f"{size} bytes"
    if got != expected:
        raise DatasetError(f"{path}: {what} but dims {'×'.join(map(str, dims))} need {expected} (truncated or corrupt)")


def read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """The array in one IDX file, after checking its magic and that its byte count matches its dims."""
    buf = _read_bytes(path)
    dims = _header(path, buf, magic, ndim)
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(buf) != expected:
        raise DatasetError(
            f"{path}: {len(buf)} bytes but dims {'×'.join(map(str, dims))} need {expected} (truncated or corrupt)"
        )
    return np.frombuffer(buf, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class IdxSource:
    """One IDX dataset: 28×28 grey images, 10 classes."""

    input_shape = (1, 28, 28)
    num_classes = 10

    def __init__(self, name: str, title: str):
        self.name = name
        self.expected = f"the four {title} IDX .gz files"

    def _files(self, data_dir: str | Path | None) -> tuple[Path, dict[str, tuple[Path, Path]]]:
        root = resolve_dir(self.name, data_dir, self.expected)
        found = {}
        for split, stems in STEMS.items():
            paths = []
            for stem in stems:
                path = next((p for p in (root / f"{stem}.gz", root / stem) if p.is_file()), None)
                if path is None:
                    raise DatasetError(f"dataset.data_dir: {root} has no {stem}.gz (expected {self.expected})")
                paths.append(path)
            found[split] = tuple(paths)
        return root, found

    def check(self, data_dir: str | Path | None) -> Path:
        root, found = self._files(data_dir)
        for images, labels in found.values():  # headers and sizes only: read() reads the data
            dims = _header(images, _read_bytes(images, 16), IMAGES_MAGIC, 3)
            n_labels = _header(labels, _read_bytes(labels, 8), LABELS_MAGIC, 1)
            _check_size(images, dims)
            _check_size(labels, n_labels)
            if dims[1:] != self.input_shape[1:]:
                raise DatasetError(f"{images}: images are {dims[1]}×{dims[2]} (expected 28×28)")
            if n_labels[0] != dims[0]:
                raise DatasetError(f"{labels}: {n_labels[0]} labels for {dims[0]} images in {images.name}")
        return root

    def read(self, data_dir: str | Path | None) -> tuple[Raw, Path]:
        root, found = self._files(data_dir)
        arrays = []
        for images_path, labels_path in found.values():
            images = read_idx(images_path, IMAGES_MAGIC, 3)
            labels = read_idx(labels_path, LABELS_MAGIC, 1)
            if images.shape[1:] != self.input_shape[1:]:
                raise DatasetError(f"{images_path}: images are {images.shape[1]}×{images.shape[2]} (expected 28×28)")
            if len(labels) != len(images):
                raise DatasetError(
                    f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
                )
            arrays += [images[:, None], labels]
        return Raw(*arrays), root
