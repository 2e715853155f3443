"""Bad storage and GPU settings are bad input: one line naming the setting and the cause, exit 2,
before Ray starts, nothing written anywhere (no directory, no object, no bucket).

The S3 cases run against the real loopback S3 server of tests/s3_server.py (IAM auth on: a wrong
secret is refused as AWS refuses it). Most cases call ``orchestrator.cli.main`` in-process; a
representative few run the console script with its own RAY_TMPDIR, which must stay empty, and the
read-only case runs it under a read-only bind mount in a private mount namespace (root writes
through permission bits).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cluster_ns import mount_namespace_unavailable

from orchestrator import cli

GLTH = str(Path(sys.executable).with_name("glth"))
SPEC = """name: store
dataset: digits
model: mlp_300_100
dictionary: {kind: canonical}
tau: 0.3
seeds: [0]
rounds: 2
train: {epochs: 1}
"""


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def s3_everything(server) -> dict[str, list[str]]:
    s3 = server.s3()
    return {b["Name"]: server.keys(b["Name"]) for b in s3.list_buckets()["Buckets"]}


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    d = tmp_path / "cwd"
    d.mkdir()
    (d / "spec.yaml").write_text(SPEC)
    monkeypatch.chdir(d)
    monkeypatch.delenv("GLTH_STORAGE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return d


def refused(argv: list[str], capsys) -> str:
    """``glth ARGV`` in-process: exit 2 and exactly one line on stderr, nothing on stdout; that line."""
    import ray

    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert not ray.is_initialized(), "Ray was started"
    return err.strip()


def test_no_such_bucket(cwd, s3_env, capsys):
    before = s3_everything(s3_env)
    line = refused(["run", "spec.yaml", "--storage", "s3://glth-no-such-bucket/runs"], capsys)
    assert line == "glth: error: --storage: s3://glth-no-such-bucket/runs: bucket 'glth-no-such-bucket' does not exist"
    assert s3_everything(s3_env) == before and "glth-no-such-bucket" not in before
    assert listing(cwd) == ["spec.yaml"]


@pytest.mark.parametrize("key, secret", [("AKIA" + "NOSUCHKEY0" * 2, None), (None, "not-the-secret")])
def test_refused_credentials(cwd, s3_env, monkeypatch, capsys, key, secret):
    bucket = s3_env.make_bucket()
    before = s3_everything(s3_env)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key or s3_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret or s3_env.secret_key)
    line = refused(["run", "spec.yaml", "--storage", f"s3://{bucket}/runs"], capsys)
    # S3 answers a HEAD of the bucket with a bare 403 whichever half of the key is wrong
    assert (
        line
        == f"glth: error: --storage: s3://{bucket}/runs: access denied (credentials refused, or no permission) (HeadBucket)"
    )
    assert s3_everything(s3_env) == before and before[bucket] == []
    assert listing(cwd) == ["spec.yaml"]


def test_missing_parent_and_a_file_in_the_way(cwd, tmp_path, capsys):
    missing = tmp_path / "efs-not-mounted" / "glth"
    line = refused(["run", "spec.yaml", "--storage", str(missing)], capsys)
    assert line == f"glth: error: --storage: {missing}: parent directory {missing.parent} does not exist"
    assert not missing.parent.exists()
    (tmp_path / "afile").write_text("x")
    line = refused(["run", "spec.yaml", "--out", str(tmp_path / "afile")], capsys)
    assert line == f"glth: error: --storage: {tmp_path / 'afile'}: exists and is not a directory"
    assert (tmp_path / "afile").read_text() == "x" and listing(cwd) == ["spec.yaml"]


@pytest.mark.parametrize(
    "value, cause",
    [
        ("gs://bucket/runs", "'gs://bucket/runs': unknown scheme; allowed: a local path, file://, s3://"),
        ("file://host/abs", "'file://host/abs': file:// takes an absolute path (file:///abs/path)"),
        ("s3://Not_A_Bucket/x", "'s3://Not_A_Bucket/x': 'Not_A_Bucket' is not a valid S3 bucket name"),
    ],
)
def test_unknown_scheme_and_malformed_uris(cwd, capsys, value, cause):
    assert refused(["run", "spec.yaml", "--storage", value], capsys) == f"glth: error: --storage: {cause}"
    assert listing(cwd) == ["spec.yaml"]


def test_the_setting_named_is_the_one_that_won(cwd, tmp_path, monkeypatch, capsys):
    """--storage > the spec's storage: > $GLTH_STORAGE > ./glth-runs, each named when it is bad."""
    good = tmp_path / "good"
    (cwd / "spec.yaml").write_text(SPEC + "storage: gs://from-spec/x\n")
    monkeypatch.setenv("GLTH_STORAGE", "gs://from-env/x")
    assert refused(["run", "spec.yaml"], capsys).startswith(
        "glth: error: storage (the spec's storage: key): 'gs://from-spec/x'"
    )
    assert cli.main(["run", "spec.yaml", "--dry-run", "--storage", str(good)]) == 0  # the flag wins
    assert f"→ {good}/store-" in capsys.readouterr().out
    (cwd / "spec.yaml").write_text(SPEC)
    assert refused(["run", "spec.yaml"], capsys).startswith("glth: error: GLTH_STORAGE: 'gs://from-env/x'")
    monkeypatch.setenv("GLTH_STORAGE", str(good))
    assert cli.main(["run", "spec.yaml", "--dry-run"]) == 0
    assert f"→ {good}/store-" in capsys.readouterr().out
    monkeypatch.delenv("GLTH_STORAGE")
    assert cli.main(["run", "spec.yaml", "--dry-run"]) == 0
    assert f"→ {cwd}/glth-runs/store-" in capsys.readouterr().out
    assert listing(cwd) == ["spec.yaml"] and not good.exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    "change, needle",
    [
        ("device: cuda\n", "glth: error: device: cuda: this machine has no CUDA GPU"),
        ("resources: {cpu: 1, gpu: 0.5}\n", "glth: error: resources.gpu: 0.5: this machine has no CUDA GPU"),
    ],
)
def test_a_gpu_spec_on_a_cpu_only_machine(cwd, capsys, change, needle):
    import torch

    assert not torch.cuda.is_available(), "this test is about a machine without a GPU"
    (cwd / "spec.yaml").write_text(SPEC + change)
    assert refused(["run", "spec.yaml"], capsys).startswith(needle)
    assert listing(cwd) == ["spec.yaml"]  # no ./glth-runs made
    (cwd / "spec.yaml").write_text(SPEC + "device: auto\n")  # resolved per worker: fine here
    assert cli.main(["run", "spec.yaml", "--dry-run"]) == 0
    capsys.readouterr()


def test_submit_checks_an_object_store_before_reaching_the_cluster(cwd, s3_env, capsys):
    """The address is unreachable: the storage line comes first (the spec, then the storage)."""
    before = s3_everything(s3_env)
    nowhere = "http://127.0.0.1:1"
    line = refused(["submit", "spec.yaml", "--address", nowhere, "--storage", "s3://glth-no-such-bucket/x"], capsys)
    assert line == "glth: error: --storage: s3://glth-no-such-bucket/x: bucket 'glth-no-such-bucket' does not exist"
    line = refused(["submit", "spec.yaml", "--address", nowhere, "--storage", "gs://b/x"], capsys)
    assert line.startswith("glth: error: --storage: 'gs://b/x': unknown scheme")
    assert s3_everything(s3_env) == before and listing(cwd) == ["spec.yaml"]
    # a path is the cluster's (checked by the job): past the storage, the address is what fails
    line = refused(["submit", "spec.yaml", "--address", nowhere, "--storage", str(cwd / "missing" / "x")], capsys)
    assert "storage" not in line and "127.0.0.1:1" in line


def _console(
    argv: list[str], cwd: Path, env: dict, wrap: str | None = None
) -> tuple[subprocess.CompletedProcess, list]:
    """The real console script with its own RAY_TMPDIR; (the process, what Ray left in RAY_TMPDIR)."""
    ray_tmp = tempfile.mkdtemp(prefix="glbs-", dir="/tmp")
    cmd = [GLTH, *argv]
    if wrap:
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{wrap} && exec {shlex.join(cmd)}"]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env={**env, "RAY_TMPDIR": ray_tmp}, capture_output=True, text=True, timeout=300
        )
        return proc, os.listdir(ray_tmp)
    finally:
        if not os.listdir(ray_tmp):
            os.rmdir(ray_tmp)


def _one_line_exit_2(proc, started) -> str:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert started == [], "Ray was started"
    return proc.stderr.strip()


def test_console_script_read_only_path(cwd, tmp_path):
    if os.geteuid() == 0 and (why := mount_namespace_unavailable()):
        pytest.skip(f"root ignores permission bits, and {why}")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "old.txt").write_text("x")
    env = {k: v for k, v in os.environ.items() if k not in ("GLTH_STORAGE", "RAY_ADDRESS")}
    for target in (ro, ro / "runs"):  # the root itself, or the parent of a root not made yet
        if os.geteuid() == 0:
            proc, started = _console(
                ["run", "spec.yaml", "--storage", str(target)],
                cwd,
                env,
                wrap=f"mount --bind -o ro {shlex.quote(str(ro))} {shlex.quote(str(ro))}",
            )
            cause = f"{ro} is on a read-only filesystem"
        else:
            ro.chmod(0o555)
            try:
                proc, started = _console(["run", "spec.yaml", "--storage", str(target)], cwd, env)
            finally:
                ro.chmod(0o755)
            cause = f"{ro} is not writable (permission denied)"
        assert _one_line_exit_2(proc, started) == f"glth: error: --storage: {target}: {cause}"
    assert listing(ro) == ["old.txt"] and listing(cwd) == ["spec.yaml"]


def test_console_script_missing_bucket_and_gpu(cwd, s3_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("GLTH_STORAGE", "RAY_ADDRESS")}
    env.update(s3_server.env)
    before = s3_everything(s3_server)
    proc, started = _console(["run", "spec.yaml", "--storage", "s3://glth-missing-bucket/x"], cwd, env)
    assert (
        _one_line_exit_2(proc, started)
        == "glth: error: --storage: s3://glth-missing-bucket/x: bucket 'glth-missing-bucket' does not exist"
    )
    (cwd / "spec.yaml").write_text(SPEC + "device: cuda\n")
    proc, started = _console(["run", "spec.yaml", "--storage", "s3://glth-missing-bucket/x"], cwd, env)
    assert _one_line_exit_2(proc, started).startswith("glth: error: device: cuda: this machine has no CUDA GPU")
    assert s3_everything(s3_server) == before and listing(cwd) == ["spec.yaml"]


# -- reading a sweep on S3: found by id, prefix, name or URI; a bad root is one line -------------
def test_find_sweep_on_s3_by_id_prefix_name_and_uri(s3_env, capsys):
    from orchestrator.cli import find_sweep
    from orchestrator.storage import Storage

    bucket = s3_env.make_bucket()
    root = Storage.resolve(f"s3://{bucket}/runs")
    for sweep_id, name in (
        ("alpha-1234abcd", "alpha"),
        ("alpha-quick-99ee0011", "alpha"),
        ("beta-00ff00ff", "beta"),
        ("renamed-0000ffff", "delta"),
    ):
        root.write_text(f"{sweep_id}/spec.yaml", f"name: {name}\nseeds: [0]\n")
    root.write_text("not-a-sweep/rounds/x.parquet", "")  # no spec.yaml: never listed
    storage = root.uri
    assert find_sweep("beta-00ff00ff", storage) == f"{storage}/beta-00ff00ff"
    assert find_sweep("alpha-q", storage) == f"{storage}/alpha-quick-99ee0011"
    assert find_sweep("delta", storage) == f"{storage}/renamed-0000ffff"  # the spec's name
    assert find_sweep(f"{storage}/beta-00ff00ff", None) == f"{storage}/beta-00ff00ff"  # a URI needs no --storage
    assert (
        find_sweep(f"{storage}/beta-00ff00ff/rounds/dictionary=canonical/", "elsewhere") == f"{storage}/beta-00ff00ff"
    )
    for key, message in (
        ("alpha", f"sweep: 'alpha' is ambiguous under {storage}; it matches alpha-1234abcd, alpha-quick-99ee0011"),
        (
            "gamma",
            f"sweep: 'gamma' matches no sweep under {storage}; sweeps: alpha-1234abcd, "
            f"alpha-quick-99ee0011, beta-00ff00ff, renamed-0000ffff",
        ),
    ):
        with pytest.raises(cli.BadInput) as e:
            find_sweep(key, storage)
        assert str(e.value) == message
    with pytest.raises(cli.BadInput) as e:
        find_sweep(f"{storage}/not-a-sweep", None)
    assert str(e.value) == f"sweep: {storage}/not-a-sweep is not a sweep (no spec.yaml there or up to 3 levels above)"


def test_reading_from_a_missing_bucket_or_with_refused_credentials(cwd, s3_env, monkeypatch, capsys):
    line = refused(["results", "some-sweep", "--storage", "s3://glth-no-such-bucket/runs"], capsys)
    assert line == "glth: error: --storage s3://glth-no-such-bucket/runs: bucket 'glth-no-such-bucket' does not exist"
    bucket = s3_env.make_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    line = refused(["plot", f"s3://{bucket}/runs/x-00000000"], capsys)
    assert line.startswith(f"glth: error: sweep: s3://{bucket}/runs/x-00000000: ") and "denied" in line.lower(), line
    assert listing(cwd) == ["spec.yaml"]
