"""The storage setting: which storage a sweep lives on, read into the fields of a ``Storage``.

One ``storage`` setting names it (spec key / ``--storage`` / env ``GLTH_STORAGE``, default
``glth-runs``): a plain path or ``file:///abs/path`` (local or EFS/NFS), or ``s3://bucket/prefix``.

S3 credentials come only from the AWS chain (environment, ``~/.aws``, the instance profile), never
from the setting; the endpoint from ``GLTH_S3_ENDPOINT``, ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (an S3-compatible server; unset on AWS), the region from ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` or else the bucket's own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

ENV = "GLTH_STORAGE"
DEFAULT = "glth-runs"
ALLOWED = "a local path, file://, s3://"
ENDPOINT_ENVS = ("GLTH_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class StorageError(ValueError):
    """Bad storage setting or unusable storage: one line naming the setting and the cause."""


def endpoint() -> str | None:
    return next((os.environ[k] for k in ENDPOINT_ENVS if os.environ.get(k)), None)


def region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def parse(setting: str | None = None) -> tuple[str, str, str | None, str | None]:
    """``(scheme, root, endpoint, region)`` of the storage named by ``setting``, else env
    GLTH_STORAGE, else ``glth-runs`` (in the cwd); StorageError, one line, for a bad one."""
    raw = setting if setting is not None else (os.environ.get(ENV) or DEFAULT)
    value = str(raw).strip()
    if not value:
        raise StorageError(f"storage: {raw!r}: empty; allowed: {ALLOWED}")
    m = _SCHEME.match(value)
    if not m:
        return "file", str(Path(value).expanduser().resolve()), None, None
    scheme = m.group(1).lower()
    if scheme not in ("file", "s3"):
        raise StorageError(f"storage: {value!r}: unknown scheme; allowed: {ALLOWED}")
    parts = urlsplit(value)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/") or parts.query:
            raise StorageError(f"storage: {value!r}: file:// takes an absolute path (file:///abs/path)")
        return "file", str(Path(parts.path).resolve()), None, None
    if "@" in parts.netloc:  # never echo what may be a secret
        raise StorageError(
            "storage: s3://…@…: credentials are never read from the storage setting; "
            "use the AWS chain (environment, ~/.aws, instance profile)"
        )
    if parts.query or parts.fragment:
        raise StorageError(f"storage: {value!r}: no query options; the endpoint comes from {' / '.join(ENDPOINT_ENVS)}")
    bucket, prefix = parts.netloc, "/".join(s for s in parts.path.split("/") if s)
    if not _BUCKET.fullmatch(bucket):
        raise StorageError(f"storage: {value!r}: {bucket!r} is not a valid S3 bucket name")
    if any(s in (".", "..") for s in prefix.split("/")):
        raise StorageError(f"storage: {value!r}: '.' and '..' are not allowed in an S3 prefix")
    return "s3", f"{bucket}/{prefix}" if prefix else bucket, endpoint(), region()
