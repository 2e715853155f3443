"""orchestrator.storage on both backends: a local directory and a real S3 server on loopback (moto).

The same tests run on each backend; what S3 holds is read back with boto3 (``s3_server.keys``),
independently of the code under test.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from cluster_ns import mount_namespace_unavailable

from orchestrator.storage import Storage, StorageError

_RAW_KEYS = {}  # storage uri -> a lister of every file/object under it, independent of Storage


def raw_keys(storage: Storage) -> list[str]:
    return _RAW_KEYS[storage.uri]()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """A fresh storage root on each backend."""
    if request.param == "local":
        root = tmp_path / "root"
        s = Storage.resolve(str(root))
        _RAW_KEYS[s.uri] = lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    else:
        server = request.getfixturevalue("s3_env")
        bucket = server.make_bucket()
        s = Storage.resolve(f"s3://{bucket}/pre/fix")
        _RAW_KEYS[s.uri] = lambda: [
            k.removeprefix("pre/fix/") for k in server.keys(bucket, "pre/fix/") if not k.endswith("/")
        ]
    yield s
    _RAW_KEYS.pop(s.uri)


# -- the setting ---------------------------------------------------------------------------------


def test_resolve_names_and_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLTH_STORAGE", raising=False)
    assert Storage.resolve(None).uri == str(tmp_path / "glth-runs")
    monkeypatch.setenv("GLTH_STORAGE", "elsewhere/runs")
    assert Storage.resolve(None).uri == str(tmp_path / "elsewhere" / "runs")
    assert Storage.resolve("rel").uri == str(tmp_path / "rel")  # the setting wins over the env
    assert Storage.resolve(f"file://{tmp_path}/a/").uri == str(tmp_path / "a")
    s3 = Storage.resolve("s3://my-bucket//runs/x/")
    assert (s3.uri, s3.is_local, s3.bucket, s3.fs_path("a", "b.txt")) == (
        "s3://my-bucket/runs/x",
        False,
        "my-bucket",
        "my-bucket/runs/x/a/b.txt",
    )
    assert (
        s3.uri_of("tune") == "s3://my-bucket/runs/x/tune"
        and s3.child("s1", "rounds").uri == "s3://my-bucket/runs/x/s1/rounds"
    )
    assert Storage.resolve("s3://my-bucket").fs_path("k") == "my-bucket/k"
    local = Storage.resolve(str(tmp_path))
    assert local.is_local and local.fs_path("a/b", "c") == str(tmp_path / "a" / "b" / "c")
    for bad in ("../x", "/abs", "a//b", "a/./b"):
        with pytest.raises(ValueError, match="not a plain relative path"):
            local.fs_path(bad)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("gs://x", "storage: 'gs://x': unknown scheme; allowed: a local path, file://, s3://"),
        ("HTTP://host/x", "storage: 'HTTP://host/x': unknown scheme; allowed: a local path, file://, s3://"),
        ("  ", "storage: '  ': empty; allowed: a local path, file://, s3://"),
        ("file://host/x", "storage: 'file://host/x': file:// takes an absolute path (file:///abs/path)"),
        ("s3://Bad_Bucket/x", "storage: 's3://Bad_Bucket/x': 'Bad_Bucket' is not a valid S3 bucket name"),
        (
            "s3://b/x?endpoint_override=1",
            "storage: 's3://b/x?endpoint_override=1': no query options; the endpoint "
            "comes from GLTH_S3_ENDPOINT / AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line(setting, message):
    with pytest.raises(StorageError) as e:
        Storage.resolve(setting)
    assert str(e.value) == message


def test_credentials_in_the_setting_are_refused_without_echoing_them():
    with pytest.raises(StorageError) as e:
        Storage.resolve("s3://AKIAEXAMPLE:s3cr3t@bucket/x")
    assert "s3cr3t" not in str(e.value) and "AKIAEXAMPLE" not in str(e.value)
    assert str(e.value).startswith("storage: s3://…@…: credentials are never read from the storage setting")


# -- files ---------------------------------------------------------------------------------------


def test_round_trip(store):
    assert not store.exists() and store.list() == []
    assert store.write_bytes("a/b.bin", b"\x00\x01" * 1000) == store.uri_of("a", "b.bin")
    store.write_text("spec.yaml", "name: ü\n")
    assert store.read_bytes("a/b.bin") == b"\x00\x01" * 1000
    assert store.read_text("spec.yaml") == "name: ü\n"
    assert store.exists() and store.exists("a") and store.exists("a/b.bin") and not store.exists("a/c")
    assert store.child("a").read_bytes("b.bin") == b"\x00\x01" * 1000
    with pytest.raises(FileNotFoundError, match="no such file: " + store.uri_of("a/c")):
        store.read_bytes("a/c")
    store.write_text("spec.yaml", "v2")  # replace
    assert store.read_text("spec.yaml") == "v2"
    assert raw_keys(store) == ["a/b.bin", "spec.yaml"]
    clone = pickle.loads(pickle.dumps(store))  # what a Ray worker gets
    assert clone == store and clone.read_text("spec.yaml") == "v2"


def test_pickle_holds_no_credentials(s3_env):
    s = Storage.resolve(f"s3://{s3_env.make_bucket()}/x")
    s.write_text("f", "1")  # the filesystem exists now, built from the environment's key
    blob = pickle.dumps(s)
    assert s3_env.secret_key.encode() not in blob and s3_env.access_key.encode() not in blob


def test_atomic_replace_reader_never_sees_a_partial_object(store):
    size = 1 << 20 if store.is_local else 256 << 10
    versions = [bytes([v]) * size for v in range(8)]
    store.write_bytes("obj", versions[0])
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(store.read_bytes("obj"))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 25):
            store.write_bytes("obj", versions[i % 8])
    finally:
        stop.set()
        t.join(timeout=60)
    assert len(seen) >= 2
    partial = [i for i, b in enumerate(seen) if b not in versions]
    assert partial == [], f"{len(partial)} of {len(seen)} reads saw a partial object"
    assert store.read_bytes("obj") == versions[24 % 8]
    assert raw_keys(store) == ["obj"]  # no temporary name left behind


def test_list_and_delete(store):
    for rel in ("a/x.parquet", "a/y.txt", "a/sub/z.parquet", "b.txt"):
        store.write_bytes(rel, rel.encode())
    with store.filesystem.open_output_stream(store.fs_path("a/.x.parquet.1234.tmp")) as f:
        f.write(b"half")  # a crashed writer's leftover temporary
    assert store.list("a") == ["sub", "x.parquet", "y.txt"]
    assert store.list("a", suffix=".parquet") == ["x.parquet"]
    assert store.list() == ["a", "b.txt"]
    assert store.list("missing") == []
    store.delete_dir("a/sub")
    store.delete("b.txt")
    store.delete("never-was")
    store.delete_dir("never/was")
    assert raw_keys(store) == ["a/.x.parquet.1234.tmp", "a/x.parquet", "a/y.txt"]
    with pytest.raises(ValueError):
        store.delete_dir("")
    store.delete_files(["a/x.parquet", "never-was", *(f"c/{i}" for i in range(40) if store.write_text(f"c/{i}", ""))])
    assert raw_keys(store) == ["a/.x.parquet.1234.tmp", "a/y.txt"]


SCHEMA = pa.schema(
    [("trial_id", pa.string()), ("round", pa.int64()), ("density", pa.float64()), ("dictionary", pa.string())]
)
FILE_SCHEMA = pa.schema([f for f in SCHEMA if f.name != "dictionary"])
PARTITIONING = ds.partitioning(pa.schema([SCHEMA.field("dictionary")]), flavor="hive")


def test_dataset_of_parquet_written_through_it(store):
    assert store.open_dataset("rounds", SCHEMA, PARTITIONING).to_table().num_rows == 0  # no directory yet
    for label, trial, rounds in (("canonical", "t1", 3), ("canonical", "t2", 2), ("007", "t3", 4)):
        table = pa.table(
            {"trial_id": [trial] * rounds, "round": list(range(rounds)), "density": [0.5**r for r in range(rounds)]},
            schema=FILE_SCHEMA,
        )
        store.write_parquet(f"rounds/dictionary={label}/{trial}.parquet", table)
    with store.filesystem.open_output_stream(store.fs_path("rounds/dictionary=007/.t9.parquet.ab.tmp")) as f:
        f.write(b"PAR1 not really")  # hidden: must be skipped, or reading would fail
    df = store.open_dataset("rounds", SCHEMA, PARTITIONING).to_table().to_pandas().sort_values(["trial_id", "round"])
    assert len(df) == 9
    assert df.groupby("trial_id").size().to_dict() == {"t1": 3, "t2": 2, "t3": 4}
    assert df[df.trial_id == "t3"].dictionary.unique().tolist() == ["007"]  # a string, not the number 7
    assert df[df.trial_id == "t1"].density.tolist() == [1.0, 0.5, 0.25]


def test_tune_storage(store):
    path, fs = store.tune_storage("s1", "tune")
    assert path == store.fs_path("s1/tune")
    if store.is_local:
        assert fs is None and os.path.isabs(path)
    else:
        assert isinstance(fs, pafs.S3FileSystem) and not path.startswith("s3://")
        with fs.open_output_stream(f"{path}/marker") as f:
            f.write(b"1")
        assert store.read_bytes("s1/tune/marker") == b"1"


# -- check_writable ------------------------------------------------------------------------------


def test_check_writable_accepts_and_writes_nothing(store):
    store.check_writable()
    assert raw_keys(store) == []
    if store.is_local:
        assert not Path(store.root).exists()  # not made: the sweep makes it when it writes


def _refusal(storage: Storage) -> str:
    with pytest.raises(StorageError) as e:
        storage.check_writable()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_check_writable_refuses_a_missing_parent_and_a_file(tmp_path):
    missing = tmp_path / "not-mounted" / "glth"
    assert (
        _refusal(Storage.resolve(str(missing)))
        == f"storage: {missing}: parent directory {missing.parent} does not exist"
    )
    assert not missing.parent.exists()
    (tmp_path / "f").write_text("x")
    assert _refusal(Storage.resolve(str(tmp_path / "f"))) == f"storage: {tmp_path / 'f'}: exists and is not a directory"
    assert (
        _refusal(Storage.resolve(str(tmp_path / "f" / "g")))
        == f"storage: {tmp_path / 'f' / 'g'}: parent directory {tmp_path / 'f'} is not a directory"
    )


CHECK = "from orchestrator.storage import *\ntry: Storage.resolve({!r}).check_writable()\nexcept StorageError as e: print(e)\n"


def test_check_writable_refuses_a_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "old.txt").write_text("x")
    if os.geteuid() == 0:
        if why := mount_namespace_unavailable():
            pytest.skip(f"root ignores permission bits, and {why}")
        # root writes through permission bits: make it truly read-only, a read-only bind mount in a
        # private mount namespace (nothing outside the subprocess sees it)
        script = f'mount --bind -o ro {ro} {ro} && exec {sys.executable} -c "$0"'
        outs = {}
        for target in (ro, ro / "runs"):
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, CHECK.format(str(target))]
            outs[target] = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
        assert outs[ro] == f"storage: {ro}: {ro} is on a read-only filesystem"
        assert outs[ro / "runs"] == f"storage: {ro / 'runs'}: {ro} is on a read-only filesystem"
    else:
        ro.chmod(0o555)
        try:
            assert (
                _refusal(Storage.resolve(str(ro / "runs")))
                == f"storage: {ro / 'runs'}: {ro} is not writable (permission denied)"
            )
        finally:
            ro.chmod(0o755)
    assert sorted(p.name for p in ro.iterdir()) == ["old.txt"]
    Storage.resolve(str(ro / "runs")).check_writable()  # writable again outside the namespace


def test_check_writable_refuses_a_missing_bucket(s3_env):
    assert (
        _refusal(Storage.resolve("s3://nope-glth/x")) == "storage: s3://nope-glth/x: bucket 'nope-glth' does not exist"
    )


@pytest.mark.parametrize(
    "key, secret", [("AKIA" + "UNKNOWN0" * 2, None), (None, "wrong-secret")]
)  # a key id no one has
def test_check_writable_refuses_bad_credentials(s3_env, monkeypatch, key, secret):
    bucket = s3_env.make_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key or s3_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret or s3_env.secret_key)
    message = _refusal(Storage.resolve(f"s3://{bucket}/runs"))
    assert message == f"storage: s3://{bucket}/runs: access denied (credentials refused, or no permission) (HeadBucket)"
    assert s3_env.keys(bucket) == []


def test_glth_s3_endpoint_wins_over_aws_endpoint_url(s3_env, monkeypatch):
    bucket = s3_env.make_bucket()
    monkeypatch.setenv("GLTH_S3_ENDPOINT", s3_env.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    s = Storage.resolve(f"s3://{bucket}")
    assert s.endpoint == s3_env.endpoint
    s.check_writable()
    assert s3_env.keys(bucket) == []  # the probe object is gone
