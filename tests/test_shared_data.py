"""orchestrator.shared_data without a Ray: the setting, the key of a dataset, the finished tensors
rebuilt from read-only arrays, and the worker's memo refusing a dataset written in place. A sweep
sharing its dataset for real (read once, rows and tickets those of a per-trial load):
tests/test_sweep.py; through worker and driver SIGKILLs: tests/test_faults.py; node loss:
tests/test_cluster_storage.py."""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_data import write_idx

from glth_core import data
from orchestrator import shared_data


def test_the_sharing_setting(monkeypatch):
    monkeypatch.delenv(shared_data.SETTING, raising=False)
    assert shared_data.enabled()
    monkeypatch.setenv(shared_data.SETTING, "0")
    assert not shared_data.enabled()
    monkeypatch.setenv(shared_data.SETTING, "yes")
    with pytest.raises(ValueError, match=r"GLTH_SHARE_DATASETS: 'yes' is not 1 .* or 0"):
        shared_data.enabled()


def config(**kw) -> SimpleNamespace:
    fields = {"dataset": "mnist", "data_dir": None, "val_fraction": 0.25, "split_seed": 0, "normalize": "train"}
    return SimpleNamespace(**{**fields, "device": "cpu", **kw})


def test_the_key_changes_with_everything_that_changes_the_tensors(tmp_path):
    write_idx(tmp_path)
    base = config(data_dir=str(tmp_path))
    key = shared_data.request_of(base)["key"]
    assert shared_data.request_of(config(data_dir=f"{tmp_path}/.")) is not None
    changed = {
        "split_seed": config(data_dir=str(tmp_path), split_seed=1),
        "val_fraction": config(data_dir=str(tmp_path), val_fraction=0.5),
        "normalize": config(data_dir=str(tmp_path), normalize="none"),
        "device": config(data_dir=str(tmp_path), device="cuda"),  # the raw arrays, finished there
    }
    keys = {what: shared_data.request_of(c)["key"] for what, c in changed.items()}
    assert len({key, *keys.values()}) == 5, keys
    assert shared_data.request_of(changed["device"])["threads"] is None
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # std_mean's sums run in another order
    try:
        assert shared_data.request_of(base)["key"] != key
    finally:
        torch.set_num_threads(threads)
    assert shared_data.request_of(base)["key"] == key
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))  # the files changed
    assert shared_data.request_of(base)["key"] != key
    assert shared_data.request_of(SimpleNamespace(dataset="none", flips=3)) is None  # a kind without a dataset
    assert shared_data.request_of(config(dataset="none")) is None


def test_a_dataset_rebuilt_from_read_only_arrays_is_the_loaded_one_bit_for_bit():
    loaded = data.load("digits", val_fraction=0.2, split_seed=3)
    fields = shared_data.arrays_of(data.load("digits", val_fraction=0.2, split_seed=3, raw=data.read("digits")))
    for v in fields.values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False  # as Ray's object store hands them out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning is not repeated to every trial
        rebuilt = shared_data.dataset_of(fields)
    for name in shared_data.TENSORS:
        a, b = getattr(loaded, name), getattr(rebuilt, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert (rebuilt.mean, rebuilt.std, rebuilt.describe()) == (loaded.mean, loaded.std, loaded.describe())
    assert rebuilt.train_x.data_ptr() == fields["train_x"].ctypes.data  # a view, not a copy


def test_a_worker_refuses_to_serve_again_a_dataset_a_trial_wrote_into():
    d = shared_data.remember("k", data.load("digits"))
    assert shared_data.remembered("k") is d and shared_data.remembered("other") is None
    d.val_x[:1].mul_(1.0)  # through a view, as much as on the tensor itself
    with pytest.raises(RuntimeError, match="wrote into its shared tensors in place"):
        shared_data.remembered("k")


def test_a_load_from_read_only_raw_arrays_is_a_load_from_the_files(tmp_path):
    """What a trial on a GPU does with the node's raw arrays (here on the CPU): the same tensors,
    copies of its own (the shared arrays are never written), and no warning."""
    write_idx(tmp_path)
    raw, where = data.read("mnist", tmp_path)
    for a in raw:
        a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = data.load_for(config(data_dir=str(tmp_path)), raw=(raw, where))
    want = data.load_for(config(data_dir=str(tmp_path)))
    for name in shared_data.TENSORS:
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert got.test_x.data_ptr() != raw.test_x.ctypes.data and (got.mean, got.data_dir) == (want.mean, want.data_dir)
