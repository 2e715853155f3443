"""A corpus of bad input: malformed specs, broken datasets, wrong CLI arguments.

Each case must end with exit status 2 and ONE line on stderr naming the problem, before Ray starts
and before anything is written (the working directory and --out stay as they were). Broken dataset
files are caught by the spec validation (``glth_core.data.check``: headers and sizes), not first
by a trial. Most cases call ``orchestrator.cli.main`` in-process; a representative subset runs the
real console script with its own RAY_TMPDIR, which must stay empty (no Ray was started).
(tests/test_spec.py holds more spec cases; none is repeated here.)
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_data import IDX_FILES, fake_batches, idx_bytes, pickled, write_folder, write_idx, write_tar

from orchestrator import cli

GLTH = str(Path(sys.executable).with_name("glth"))


def spec_text(**changes) -> str:
    lines = {
        "name": "bad",
        "dataset": "digits",
        "model": "mlp_300_100",
        "dictionary": "{kind: canonical}",
        "tau": "0.2",
        "seeds": "[0]",
        "rounds": "2",
        "train": "{epochs: 1}",
    }
    lines.update(changes)
    return "\n".join(f"{k}: {v}" for k, v in lines.items() if v is not None) + "\n"


# -- broken datasets, built in a directory outside the working directory ----------------------


def cifar_truncated_pickle(d: Path) -> Path:
    blobs = pickled(fake_batches())
    blobs["data_batch_4"] = blobs["data_batch_4"][: len(blobs["data_batch_4"]) * 2 // 3]
    write_folder(d / "cifar-10-batches-py", blobs)
    return d


def cifar_truncated_tar(d: Path) -> Path:
    archive = d / "cifar-10-python.tar.gz"
    write_tar(archive, pickled(fake_batches()))
    archive.write_bytes(archive.read_bytes()[:-1000])
    return d


def cifar_missing_batch(d: Path) -> Path:
    blobs = pickled(fake_batches())
    del blobs["test_batch"]
    write_folder(d, blobs)
    return d


def cifar_not_a_pickle(d: Path) -> Path:
    blobs = pickled(fake_batches())
    blobs["data_batch_1"] = b"<html>404 Not Found</html>\n"
    write_folder(d, blobs)
    return d


def idx_wrong_magic(d: Path) -> Path:
    write_idx(d, **{IDX_FILES[2]: idx_bytes(np.zeros((6, 28, 28)), magic=2049)})
    return d


def idx_truncated_gz(d: Path) -> Path:
    write_idx(d)
    path = d / f"{IDX_FILES[0]}.gz"
    path.write_bytes(path.read_bytes()[:-40])
    return d


def idx_truncated_plain(d: Path) -> Path:
    write_idx(d, gz=False)
    path = d / IDX_FILES[2]
    path.write_bytes(path.read_bytes()[:-28])
    return d


def idx_wrong_shape(d: Path) -> Path:
    write_idx(d, side=32)
    return d


def idx_label_count(d: Path) -> Path:
    write_idx(d, **{IDX_FILES[1]: idx_bytes(np.arange(19) % 10)})
    return d


def idx_not_gzip(d: Path) -> Path:
    write_idx(d)
    (d / f"{IDX_FILES[3]}.gz").write_bytes(idx_bytes(np.arange(6) % 10))  # a plain file named .gz
    return d


def empty(d: Path) -> Path:
    return d


def a_file(d: Path) -> Path:
    (d / "mnist.tar").write_bytes(b"not a directory")
    return d / "mnist.tar"


DATASETS = {  # case: (dataset name, builder, needle in the message)
    "cifar10 truncated pickle": ("cifar10", cifar_truncated_pickle, "data_batch_4: truncated or not a CIFAR-10 pickle"),
    "cifar10 truncated tar.gz": ("cifar10", cifar_truncated_tar, "cifar-10-python.tar.gz: truncated or not a tar.gz"),
    "cifar10 missing batch": ("cifar10", cifar_missing_batch, "test_batch does not exist"),
    "cifar10 not a pickle": ("cifar10", cifar_not_a_pickle, "data_batch_1: truncated or not a CIFAR-10 pickle"),
    "cifar10 empty directory": ("cifar10", empty, "holds no CIFAR-10"),
    "mnist wrong IDX magic": ("mnist", idx_wrong_magic, "bad IDX magic 2049 (expected 2051)"),
    "mnist truncated .gz": ("mnist", idx_truncated_gz, "train-images-idx3-ubyte.gz:"),
    "mnist truncated plain IDX": ("mnist", idx_truncated_plain, "t10k-images-idx3-ubyte: "),
    "mnist wrong image shape": ("mnist", idx_wrong_shape, "images are 32×32 (expected 28×28)"),
    "mnist labels ≠ images": ("mnist", idx_label_count, "19 labels for 20 images"),
    "mnist .gz that is not gzip": ("mnist", idx_not_gzip, "t10k-labels-idx1-ubyte.gz: truncated or not a gzip file"),
    "mnist empty directory": ("mnist", empty, "has no train-images-idx3-ubyte.gz"),
    "fashion_mnist data_dir is a file": ("fashion_mnist", a_file, "is not a directory"),
}

SPECS = {  # case: (spec text, needle)
    "max_failures < 0": (spec_text(max_failures="-1"), "max_failures"),
    "cpu per trial 0": (spec_text(resources="{cpu: 0}"), "resources.cpu"),
    "negative gpu": (spec_text(resources="{cpu: 1, gpu: -0.5}"), "resources.gpu"),
    "max_concurrent 0": (spec_text(max_concurrent="0"), "max_concurrent"),
    "repeated seed": (spec_text(seeds="[0, 1, 0]"), "distinct"),
    "name with a slash": (spec_text(name="'a/b'"), "name"),
    "mnist without data_dir": (spec_text(dataset="{name: mnist}"), "data_dir is required for mnist"),
    "val_fraction 1.5": (spec_text(dataset="{name: digits, val_fraction: 1.5}"), "val_fraction"),
    "epochs not a number": (spec_text(train="{epochs: many}"), "train.epochs"),
    "a bad lr in a grid": (spec_text(train="{epochs: 1, lr: [0.1, fast]}"), "train.lr"),
    "negative rewind step": (spec_text(rewind="{step: -1}"), "rewind"),
    "unknown control": (spec_text(control="sometimes"), "control"),
    "unknown random method": (spec_text(dictionary="{kind: random, method: spiral}"), "spiral"),
    "unknown trial kind": (spec_text(kind="prune"), "kind"),
    "tau a string": (spec_text(tau="'a lot'"), "tau"),
    "rounds fractional": (spec_text(rounds="2.5"), "rounds"),
    "bad model in a list": (spec_text(model="[mlp_300_100, resnet50]"), "resnet50"),
    "unknown model lists the families": (spec_text(model="resnet50"), "cifar_resnet_N[_W], cifar_vgg_N[_W]"),
    "ResNet depth not 6D + 2": (spec_text(model="cifar_resnet_21"), "6D + 2"),
    "batch_seeds with BatchNorm": (
        spec_text(model="cifar_resnet_8_2", seeds="[0, 1]", batch_seeds="2"),
        "batch_seeds: the model has running statistics",
    ),
    "bad blockdiag per": (spec_text(dictionary="[{kind: canonical}, {kind: blockdiag, per: layer}]"), "per"),
    "unknown augment": (spec_text(train="{epochs: 1, augment: mixup}"), "train.augment: 'mixup' is not one of"),
    "crop_flip on flattened inputs": (
        spec_text(train="{epochs: 1, augment: crop_flip}", dictionary="{kind: bottleneck, layer: '1', basis: dct}"),
        "train.augment: crop_flip needs image inputs",
    ),
    "unknown normalize": (
        spec_text(dataset="{name: digits, normalize: imagenet}"),
        "dataset.normalize: 'imagenet' is not a known name",
    ),
    "normalize for 3 channels on grey images": (
        spec_text(dataset="{name: digits, normalize: {mean: [0.4, 0.4, 0.4], std: [0.2, 0.2, 0.2]}}"),
        "dataset.normalize: 3 values for images of 1 channels",
    ),
    "normalize with std 0": (spec_text(dataset="{name: digits, normalize: {mean: [0.4], std: [0]}}"), "must be > 0"),
    "unknown --profile": (spec_text(), "profile"),  # run with --profile nosuch
    "empty file": ("", "mapping"),
    "tab-indented YAML": ("name: bad\n\tseeds: [0]\n", "YAML"),
}

CLI = {  # case: (argv, needle)
    "unknown option": (["run", "spec.yaml", "--frobnicate"], "--frobnicate"),
    "two specs": (["run", "spec.yaml", "other.yaml"], "other.yaml"),
    "spec is a directory": (["run", "."], "is not a file"),
    "no command": ([], "command"),
    "--delta not a number": (["results", "x", "--delta", "lots"], "--delta"),
    "sync with a missing --out": (["sync", "x", "--out", "nowhere"], "nowhere"),
    "--profile without a value": (["run", "spec.yaml", "--profile"], "--profile"),
    "an override that is not PATH=VALUE": (["run", "spec.yaml", "tau"], "override 'tau'"),
    "an override past the dictionaries": (["run", "spec.yaml", "dictionary.2.basis=dct"], "dictionary.2"),
    "an override the spec refuses": (["run", "spec.yaml", "tau=1.5"], "tau"),
    "a bad override in a dry run": (["run", "spec.yaml", "--dry-run", "seeds=3-1"], "seeds=3-1"),
    "--resume of a sweep never started": (["run", "spec.yaml", "--resume", "--out", "out"], "--resume"),
    "--select-on not a split": (["results", "x", "--select-on", "train"], "--select-on"),
    "results of a path that is no sweep": (["results", "out/nosuch"], "out/nosuch"),
    "stop without a job": (["stop"], "job"),
}


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _in_process(argv: list[str], cwd: Path, capsys, monkeypatch) -> str:
    import ray

    before = _listing(cwd)
    monkeypatch.chdir(cwd)
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert _listing(cwd) == before, "something was written"
    assert not ray.is_initialized()
    return err


@pytest.fixture
def cwd(tmp_path) -> Path:
    d = tmp_path / "cwd"
    d.mkdir()
    (d / "spec.yaml").write_text(spec_text())
    return d


@pytest.mark.parametrize("case", list(DATASETS))
def test_broken_dataset_is_caught_before_ray(case, cwd, tmp_path, capsys, monkeypatch):
    name, build, needle = DATASETS[case]
    data = tmp_path / "data"
    data.mkdir()
    where = build(data)
    (cwd / "spec.yaml").write_text(spec_text(dataset=f"{{name: {name}, data_dir: '{where}'}}"))
    err = _in_process(["run", "spec.yaml", "--out", "out"], cwd, capsys, monkeypatch)
    print(f"{case}: {err}")
    assert needle in err


@pytest.mark.parametrize("case", list(SPECS))
def test_malformed_spec(case, cwd, capsys, monkeypatch):
    text, needle = SPECS[case]
    (cwd / "spec.yaml").write_text(text)
    extra = ["--profile", "nosuch"] if case == "unknown --profile" else []
    err = _in_process(["run", "spec.yaml", "--out", "out", *extra], cwd, capsys, monkeypatch)
    print(f"{case}: {err}")
    assert needle in err


@pytest.mark.parametrize("case", list(CLI))
def test_bad_arguments(case, cwd, capsys, monkeypatch):
    argv, needle = CLI[case]
    err = _in_process(argv, cwd, capsys, monkeypatch)
    print(f"{case}: {err}")
    assert needle in err


def test_the_corpus_is_large_enough():
    assert len(DATASETS) + len(SPECS) + len(CLI) >= 25


CONSOLE = {  # a representative subset through the real console script: (spec text or None, argv, needle)
    "unknown spec key": (spec_text(colour="blue"), ["run", "spec.yaml"], "colour"),
    "truncated CIFAR pickle": ("cifar10", ["run", "spec.yaml"], "truncated or not a CIFAR-10 pickle"),
    "wrong IDX magic": ("mnist", ["run", "spec.yaml"], "bad IDX magic"),
    "empty data directory": ("empty", ["run", "spec.yaml"], "holds no CIFAR-10"),
    "bad argument": (None, ["run", "spec.yaml", "--workers", "3"], "--workers"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CONSOLE))
def test_console_script_bad_input(case, cwd, tmp_path):
    text, argv, needle = CONSOLE[case]
    data = tmp_path / "data"
    data.mkdir()
    builders = {
        "cifar10": ("cifar10", cifar_truncated_pickle),
        "mnist": ("mnist", idx_wrong_magic),
        "empty": ("cifar10", empty),
    }
    if text in builders:
        name, build = builders[text]
        text = spec_text(dataset=f"{{name: {name}, data_dir: '{build(data)}'}}")
    if text is not None:
        (cwd / "spec.yaml").write_text(text)
    before = _listing(cwd)
    ray_tmp = tempfile.mkdtemp(prefix="glb-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    try:
        proc = subprocess.run(
            [GLTH, *argv, "--out", "out"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        started = os.listdir(ray_tmp)
    finally:
        os.rmdir(ray_tmp) if not os.listdir(ray_tmp) else None
    print(f"{case}: exit {proc.returncode}: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert proc.stdout == ""
    assert _listing(cwd) == before, "something was written"
    assert started == [], "Ray was started"


def test_gzip_trailer_check_accepts_the_real_mnist(mnist_dir):
    """The cheap size check must not refuse genuine files (the trailer of a real .gz is exact)."""
    from glth_core import data

    assert data.check("mnist", mnist_dir).input_shape == (1, 28, 28)
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz") as f:
        assert len(f.read()) == 8 + 10000


@pytest.mark.parametrize("limit", [1000, 20000])
def test_deep_nesting_is_refused_the_same_whatever_the_recursion_limit(limit):
    """A spec or an override nested past MAX_DEPTH gets one answer, from the event stream, not from
    PyYAML's recursive composer running out of stack (which depends on the process's limit: the fuzz
    found a 492-level list parsed in a test process and refused by the console script)."""
    from orchestrator import overrides
    from orchestrator.spec import SpecError, parse
    from orchestrator.yaml_depth import MAX_DEPTH

    deep = "[" * 492 + "]" * 492
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH  # at the limit: parsed, then refused for what it is
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        with pytest.raises(SpecError, match=f"^spec: not valid YAML \\(nested more than {MAX_DEPTH} levels deep\\)$"):
            parse(deep)
        with pytest.raises(overrides.OverrideError, match=f"nested more than {MAX_DEPTH} levels deep$"):
            overrides.parse([f"tau={deep}"])
        with pytest.raises(SpecError, match="^spec: must be a mapping"):
            parse(nested)
    finally:
        sys.setrecursionlimit(before)
