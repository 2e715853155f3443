"""Where a sweep lives: a local directory, a filesystem every node mounts, or an S3 prefix.

The ``storage`` setting (a path, ``file://``, ``s3://``) is read by ``orchestrator.storage_setting``;
``check_writable`` is ``orchestrator.storage_check``'s. Everything of a sweep is read and written
through a :class:`Storage`, over a pyarrow filesystem, so the same code serves a laptop and a
cluster whose nodes share no disk.

Atomic writes, per backend: a reader sees the old object or the new one, never part of one.
- local: orchestrator.atomic (a hidden temporary name in the same directory, fsync, rename);
- S3: the complete object is serialized in memory first, then sent in one request: a single
  ``PutObject`` (the stream is opened with ``allow_delayed_open``, so pyarrow sends nothing until
  close). S3 makes an object visible only once its PUT has completed, and replaces it whole, so
  there is no temporary name and no rename (S3 has no atomic rename). Objects over pyarrow's part
  size (10 MiB) go as a multipart upload, which S3 likewise shows only at CompleteMultipartUpload.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator import atomic, storage_setting
from orchestrator.storage_check import check_writable
from orchestrator.storage_setting import StorageError

__all__ = ["Storage", "StorageError"]
DELETE_THREADS = 16


def _rel(parts: tuple[str, ...]) -> str:
    """``parts`` as one relative posix path; '' for none. No absolute, '.', '..' or empty segment."""
    parts = tuple(str(p) for p in parts if str(p) != "")
    segs = [s for p in parts for s in p.split("/")]
    if segs and (parts[0].startswith("/") or any(s in ("", ".", "..") for s in segs)):
        raise ValueError(f"storage path {'/'.join(map(str, parts))!r} is not a plain relative path")
    return "/".join(segs)


class Storage:
    """A storage root and the files under it. Picklable: the filesystem is rebuilt on unpickling,
    from the AWS chain of the process that uses it (so a worker node uses its own credentials)."""

    def __init__(self, scheme: str, root: str, endpoint: str | None = None, region: str | None = None):
        if scheme not in ("file", "s3"):
            raise ValueError(f"scheme {scheme!r}")
        self.scheme, self.root, self.endpoint, self.region = scheme, root.rstrip("/") or root, endpoint, region
        self._fs: pafs.FileSystem | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def resolve(cls, setting: str | None = None) -> "Storage":
        """The storage named by ``setting``, else env GLTH_STORAGE, else ``glth-runs`` (in the cwd);
        StorageError, one line, for a bad setting (``orchestrator.storage_setting``)."""
        return cls(*storage_setting.parse(setting))

    def child(self, *parts: str) -> "Storage":
        rel = _rel(parts)
        return Storage(self.scheme, self.fs_path(rel) if rel else self.root, self.endpoint, self.region)

    def __getstate__(self):
        return {**self.__dict__, "_fs": None}

    def __eq__(self, other):
        return isinstance(other, Storage) and (self.uri, self.endpoint) == (other.uri, other.endpoint)

    def __hash__(self):
        return hash((self.uri, self.endpoint))

    def __repr__(self):
        return f"Storage({self.uri!r})" + (f" at {self.endpoint}" if self.endpoint else "")

    # -- names ----------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def uri(self) -> str:
        """Canonical: an absolute path, or ``s3://bucket/prefix``."""
        return self.root if self.is_local else f"s3://{self.root}"

    @property
    def bucket(self) -> str | None:
        return None if self.is_local else self.root.split("/", 1)[0]

    def fs_path(self, *parts: str) -> str:
        """The path inside :attr:`filesystem` (absolute for local, ``bucket/prefix/…`` for S3)."""
        rel = _rel(parts)
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def uri_of(self, *parts: str) -> str:
        rel = _rel(parts)
        return f"{self.uri.rstrip('/')}/{rel}" if rel else self.uri

    @property
    def filesystem(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs = pafs.LocalFileSystem() if self.is_local else self._s3()
        return self._fs

    def _s3(self) -> pafs.S3FileSystem:
        kw = {"allow_delayed_open": True}  # nothing is sent before close: one PUT per small object
        if self.endpoint:
            ep = urlsplit(self.endpoint if "://" in self.endpoint else f"https://{self.endpoint}")
            kw.update(endpoint_override=ep.netloc, scheme=ep.scheme or "https")
        region = self.region or storage_setting.region()
        if region is None and not self.endpoint:
            try:
                region = pafs.resolve_s3_region(self.bucket)
            except OSError:
                region = None  # check_writable says why; the SDK's own default until then
        if region:
            kw["region"] = region
        return pafs.S3FileSystem(**kw)

    def tune_storage(self, *parts: str) -> tuple[str, pafs.FileSystem | None]:
        """``(storage_path, storage_filesystem)`` for ``tune.RunConfig`` (and ``Tuner.restore``)."""
        return (self.fs_path(*parts), None) if self.is_local else (self.fs_path(*parts), self.filesystem)

    # -- files ----------------------------------------------------------------------------------
    def _put(self, path: str, data: bytes) -> None:
        if self.is_local:
            atomic.write_bytes(path, data)
            return
        with self.filesystem.open_output_stream(path) as f:  # opened only now that data is complete
            f.write(data)

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Replace ``rel`` with ``data`` atomically; returns its URI."""
        self._put(self.fs_path(rel), bytes(data))
        return self.uri_of(rel)

    def write_text(self, rel: str, text: str, encoding: str = "utf-8") -> str:
        return self.write_bytes(rel, text.encode(encoding))

    def write_parquet(self, rel: str, table: pa.Table, **options) -> str:
        """Replace ``rel`` with ``table`` as one Parquet file, atomically (``options``: those of
        ``pyarrow.parquet.write_table``, e.g. ``row_group_size``)."""
        if self.is_local:
            with atomic.writing(self.fs_path(rel)) as tmp:
                pq.write_table(table, tmp, **options)
        else:
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, **options)
            self._put(self.fs_path(rel), sink.getvalue().to_pybytes())
        return self.uri_of(rel)

    def read_bytes(self, rel: str) -> bytes:
        """The content of ``rel``; FileNotFoundError naming its URI if there is none."""
        if not self._type(rel) == pafs.FileType.File:
            raise FileNotFoundError(f"no such file: {self.uri_of(rel)}")
        with self.filesystem.open_input_stream(self.fs_path(rel)) as f:
            return f.read()

    def read_text(self, rel: str, encoding: str = "utf-8") -> str:
        return self.read_bytes(rel).decode(encoding)

    def _type(self, rel: str = "") -> pafs.FileType:
        return self.filesystem.get_file_info(self.fs_path(rel)).type

    def exists(self, rel: str = "") -> bool:
        """A file or a non-empty directory (on S3: any object under the prefix) at ``rel``."""
        return self._type(rel) != pafs.FileType.NotFound

    def list(self, rel_dir: str = "", suffix: str | None = None) -> list[str]:
        """Sorted names directly in ``rel_dir`` (files and directories), hidden and temporary names
        skipped; [] when there is no such directory."""
        sel = pafs.FileSelector(self.fs_path(rel_dir), allow_not_found=True, recursive=False)
        names = (info.base_name for info in self.filesystem.get_file_info(sel))
        return sorted(n for n in names if n and not n.startswith(".") and (suffix is None or n.endswith(suffix)))

    def delete(self, rel: str) -> None:
        """Delete the file ``rel`` if there is one."""
        if self._type(rel) == pafs.FileType.File:
            self.filesystem.delete_file(self.fs_path(rel))

    def delete_files(self, rels: list[str]) -> None:
        """Delete the files ``rels`` (those that are there), several requests at a time: on S3
        thousands of deletes, one round trip each, would otherwise take minutes."""

        def one(rel: str) -> None:
            with contextlib.suppress(FileNotFoundError):
                self.filesystem.delete_file(self.fs_path(rel))

        with ThreadPoolExecutor(DELETE_THREADS) as pool:
            list(pool.map(one, rels))

    def delete_dir(self, rel: str) -> None:
        """Delete the directory ``rel`` and everything under it (nothing if there is none)."""
        if not _rel((rel,)):
            raise ValueError("delete_dir of the storage root: name a directory under it")
        if self._type(rel) == pafs.FileType.Directory:
            self.filesystem.delete_dir(self.fs_path(rel))

    def open_dataset(
        self, rel_dir: str, schema: pa.Schema | None = None, partitioning=None, format: str = "parquet"
    ) -> ds.Dataset:
        """A pyarrow dataset over ``rel_dir`` (hidden and ``_`` names skipped, so atomic's temporaries
        never appear); an empty one with ``schema`` when the directory does not exist."""
        if self._type(rel_dir) != pafs.FileType.Directory:
            return ds.dataset([], schema=schema, format=format, filesystem=self.filesystem)
        return ds.dataset(
            self.fs_path(rel_dir),
            filesystem=self.filesystem,
            format=format,
            schema=schema,
            partitioning=partitioning,
            ignore_prefixes=[".", "_"],
        )

    # -- checks ---------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Refuse (StorageError, one line) a root that cannot be written (``orchestrator.storage_check``)."""
        check_writable(self)
