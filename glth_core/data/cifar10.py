"""CIFAR-10 in the official "python version": six pickles in a folder, or the unextracted tar.gz."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from glth_core.data.base import DatasetError, Raw, one_line, resolve_dir

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
BATCHES = (*TRAIN_BATCHES, "test_batch")
EXPECTED = f"{FOLDER}/ with data_batch_1..5 and test_batch, or {ARCHIVE}"

# numpy arrays are all a CIFAR-10 pickle holds; refusing every other global keeps a
# hostile file from running code on load.
_NUMPY_GLOBALS = {
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _field(batch: dict, key: str):
    return batch.get(key.encode(), batch.get(key))  # py2-era pickles have bytes keys


def parse_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(N×3×32×32 uint8 images, N int64 labels) from one pickled batch."""
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # unpickling garbage raises almost any type; all mean the same thing here
        raise DatasetError(f"{where}: truncated or not a CIFAR-10 pickle ({one_line(e)})") from None
    if not isinstance(batch, dict) or _field(batch, "data") is None or _field(batch, "labels") is None:
        raise DatasetError(f"{where}: not a CIFAR-10 pickle (expected a dict with 'data' and 'labels')")
    data, labels = np.asarray(_field(batch, "data")), np.asarray(_field(batch, "labels"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{where}: data is {data.dtype} {data.shape} (expected uint8 N×3072)")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: labels are {labels.dtype} {labels.shape} (expected {len(data)} integers)")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _locate(data_dir: str | Path | None) -> Path:
    """The batches folder or the archive under ``data_dir``."""
    root = resolve_dir("cifar10", data_dir, EXPECTED)
    for candidate in (root / FOLDER, root):
        if candidate.is_dir() and any((candidate / b).exists() for b in BATCHES):
            return candidate
    if (root / ARCHIVE).is_file():
        return root / ARCHIVE
    raise DatasetError(f"dataset.data_dir: {root} holds no CIFAR-10 (expected {EXPECTED})")


def _check_folder(folder: Path) -> None:
    missing = [b for b in BATCHES if not (folder / b).is_file()]
    if missing:
        raise DatasetError(f"{folder / missing[0]} does not exist (expected {EXPECTED})")


# A batch is a pickled dict: the stream starts with PROTO (protocol ≥ 2), EMPTY_DICT or MARK and
# ends with SETITEMS/SETITEM + STOP. A truncated copy (the usual damage) ends mid-stream instead.
_PICKLE_HEADS, _PICKLE_TAILS = (b"\x80", b"}", b"("), (b"u.", b"s.")


def _check_pickle(path: Path) -> None:
    """Cheap look at one batch (its first byte and last two), not a parse: read() parses it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1)
        f.seek(max(0, size - 2))
        tail = f.read(2)
    if head not in _PICKLE_HEADS or tail not in _PICKLE_TAILS:
        raise DatasetError(
            f"{path}: truncated or not a CIFAR-10 pickle ({size} bytes, not a whole pickled dict: it ends in {tail!r})"
        )


def _check_archive(archive: Path) -> None:
    """Cheap look at the archive: its first tar header decompresses and checksums, and the gzip
    trailer's length (mod 2**32) is a whole number of tar blocks, which a truncated copy's last
    four bytes almost never are. read() decompresses it whole."""
    size = archive.stat().st_size
    try:
        with open(archive, "rb") as f:
            f.seek(max(0, size - 4))
            isize = int.from_bytes(f.read(4), "little")
        with gzip.open(archive, "rb") as g:
            tarfile.TarInfo.frombuf(g.read(tarfile.BLOCKSIZE), tarfile.ENCODING, "surrogateescape")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{archive}: truncated or not a tar.gz archive ({one_line(e)})") from None
    if isize == 0 or isize % tarfile.BLOCKSIZE:
        raise DatasetError(
            f"{archive}: truncated or not a tar.gz archive (its gzip trailer gives "
            f"{isize} bytes, not a whole number of {tarfile.BLOCKSIZE}-byte tar blocks)"
        )


def _blobs_from_folder(folder: Path) -> dict[str, bytes]:
    _check_folder(folder)
    return {b: (folder / b).read_bytes() for b in BATCHES}


def _blobs_from_archive(archive: Path) -> dict[str, bytes]:
    blobs = {}
    try:
        # Stream in archive order: seeking backwards in a gzip stream would decompress it again.
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in BATCHES:
                    blobs[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{archive}: truncated or not a tar.gz archive ({one_line(e)})") from None
    missing = [b for b in BATCHES if b not in blobs]
    if missing:
        raise DatasetError(f"{archive}: has no member {FOLDER}/{missing[0]} (expected the official {ARCHIVE})")
    return blobs


class Cifar10:
    """50,000 train / 10,000 test 3×32×32 colour images, 10 classes."""

    input_shape = (3, 32, 32)
    num_classes = 10

    def check(self, data_dir: str | Path | None) -> Path:
        where = _locate(data_dir)
        if where.is_dir():
            _check_folder(where)
            for b in BATCHES:
                _check_pickle(where / b)
        else:
            _check_archive(where)
        return where  # read() parses the pickles (shapes, labels) in full

    def read(self, data_dir: str | Path | None) -> tuple[Raw, Path]:
        where = _locate(data_dir)
        blobs = _blobs_from_archive(where) if where.is_file() else _blobs_from_folder(where)
        parts = {b: parse_batch(blobs.pop(b), f"{where}/{b}" if where.is_dir() else f"{where}:{b}") for b in BATCHES}
        train = [parts[b] for b in TRAIN_BATCHES]
        return Raw(
            np.concatenate([x for x, _ in train]),
            np.concatenate([y for _, y in train]),
            *parts["test_batch"],
        ), where
