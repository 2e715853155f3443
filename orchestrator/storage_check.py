"""Whether a storage can be used before anything runs on it (``check_writable``), and pyarrow's AWS
errors as one line (``aws_cause``)."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator.storage_setting import StorageError

_AWS_ERROR = re.compile(r"AWS Error (\w+) during (\w+) operation: ?(.*?)\s*(?:\(Request ID: [^)]*\))?\s*$", re.S)
_REFUSED = {
    "ACCESS_DENIED": "access denied (credentials refused, or no permission)",
    "INVALID_ACCESS_KEY_ID": "credentials refused: the access key id is unknown",
    "SIGNATURE_DOES_NOT_MATCH": "credentials refused: the secret key does not match",
    "EXPIRED_TOKEN": "credentials refused: the session token has expired",
    "INVALID_TOKEN": "credentials refused: invalid session token",
}


def aws_cause(e: OSError) -> str:
    """One line out of pyarrow's AWS error text."""
    m = _AWS_ERROR.search(str(e))
    if not m:
        return " ".join(str(e).split())
    code, op, msg = m.groups()
    if code in _REFUSED:
        return f"{_REFUSED[code]} ({op})"
    if code == "NETWORK_CONNECTION":
        return f"cannot reach the S3 endpoint ({' '.join(msg.split())[:200]})"
    return f"{code} during {op}: {' '.join(msg.split())[:200]}"


def _refuse(storage, cause: str) -> StorageError:
    return StorageError(f"storage: {storage.uri}: {cause}")


def check_writable(storage) -> None:
    """Refuse (StorageError, one line) a ``Storage`` root that cannot be written; writes nothing locally.

    Local: the root, or if it does not exist yet its parent (which must exist: an unmounted
    ``/mnt/efs/…`` is refused rather than made on the local disk), must be a directory this
    process may write, on a filesystem mounted read-write. S3: the bucket must exist and a
    probe object must be put and deleted under the prefix.
    """
    if storage.is_local:
        _check_local(storage)
    else:
        _check_s3(storage)


def _check_local(storage) -> None:
    root = Path(storage.root)
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise _refuse(storage, "exists and is not a directory")
        target = root
    else:
        target = root.parent
        if not target.is_dir():
            what = "is not a directory" if target.exists() else "does not exist"
            raise _refuse(storage, f"parent directory {target} {what}")
    if os.statvfs(target).f_flag & os.ST_RDONLY:
        raise _refuse(storage, f"{target} is on a read-only filesystem")
    if not os.access(target, os.W_OK | os.X_OK):
        raise _refuse(storage, f"{target} is not writable (permission denied)")


def _check_s3(storage) -> None:
    try:
        info = storage.filesystem.get_file_info(storage.bucket)
    except OSError as e:
        raise _refuse(storage, aws_cause(e)) from None
    if info.type == pafs.FileType.NotFound:
        raise _refuse(storage, f"bucket {storage.bucket!r} does not exist")
    name = f".glth-probe-{secrets.token_hex(6)}"
    probe = storage.fs_path(name)
    try:
        storage.write_bytes(name, b"glth storage probe\n")
    except OSError as e:
        raise _refuse(storage, f"cannot write: {aws_cause(e)}") from None
    try:
        storage.filesystem.delete_file(probe)
    except OSError as e:
        raise _refuse(storage, f"cannot delete the probe object {probe}: {aws_cause(e)}") from None
