"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

Every writer in the project goes through here: write to a temporary name in the same directory
(same filesystem, so ``os.replace`` is an atomic rename), fsync it, rename it over the target,
then fsync the directory so the rename itself survives a crash.

Temporary names start with ``.`` and end with ``.tmp``: pyarrow's dataset discovery skips names
starting with ``.``, and a ``*.parquet`` glob (duckdb) never matches them, so a crash mid-write
leaves only a file that every reader ignores.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_name(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary name next to ``path`` (``dir/.name.<random>.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    For writers that want a file name (``pyarrow.parquet.write_table``, ``torch.save``). On an
    exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with writing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes(path, text.encode(encoding))


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically (content and permission bits)."""
    with writing(dst) as tmp:
        shutil.copy2(src, tmp)
    return Path(dst)
