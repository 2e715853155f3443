"""Each dataset read once per node and shared by the trials there, zero-copy from Ray's object store.

The driver starts one ``DataReader`` on its own node for the sweep (``session``): owned by the
driver, it lives as long as the sweep's Ray session, is killed at the sweep's end, and dies with
the driver's job if the driver is killed (nothing outlives a sweep on a cluster). It reads for its
own node and, as the sweep's hub, makes one reader on each other node whose trials ask, pinned
there. A reader reads a dataset's files once (``glth_core.data.read``), finishes what the trials
ask for (``glth_core.data.load``) and ``ray.put``s it itself: the objects live as long as their
reader, not as long as the trial worker that asked first. A trial's worker (``dataset_for``) maps
the object zero-copy and keeps the last dataset in a per-process memo, so a reused worker
(``reuse_actors``) asks nothing for its next trial on the same data.

What is shared depends on the device:

* cpu: the finished tensors (split, normalized, float32), read-only buffers in the node's object
  store that every trial's tensors there view. No training path writes into a dataset's tensors
  in place; a worker checks their version counters before serving a dataset again (``remembered``).
  ``std_mean`` runs with the trial's thread count (part of the key), so the tensors are a
  per-trial load's, bit for bit.
* any other device: the raw arrays; each trial splits and normalizes them on its device exactly as
  a per-trial load does (a GPU reduction is not the CPU's bit for bit).

The key is everything that changes the tensors: the dataset, its resolved directory and the names,
sizes and mtimes of the files there, val_fraction, split_seed, normalize, the device kind and the
thread count.

Faults: a trial worker killed takes only its memo (the next worker maps the object again,
unread). A node lost takes its reader and objects; a trial on another node asks the hub, which
makes a reader there (one found dead is replaced once, by generation). The hub gone: each trial
loads its own, as without sharing. ``GLTH_SHARE_DATASETS=0`` turns sharing off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from glth_core import data as datasets

SETTING = "GLTH_SHARE_DATASETS"
#: finished datasets a reader keeps beyond those trials still hold (the raw arrays it keeps all sweep)
KEEP = 4
#: the config fields that say which tensors a trial loads (``glth_core.data.load_for``)
FIELDS = ("dataset", "data_dir", "val_fraction", "split_seed", "normalize", "device")
TENSORS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
#: how long a worker waits for its node's reader (a read included) before it reads its own
WAIT_S = 600


def enabled() -> bool:
    """``GLTH_SHARE_DATASETS``: 1 (the default) or 0; ValueError, one line, for anything else."""
    raw = os.environ.get(SETTING, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(
            f"{SETTING}: {raw!r} is not 1 (read each dataset once per node) or 0 (each trial reads its own)"
        )
    return raw != "0"


def files_stamp(where: str | None) -> list:
    """[name, size, mtime] of each file a dataset is read from (the file itself, or the files
    directly in its directory); empty for an embedded dataset."""
    if where is None:
        return []
    path = Path(where)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return [[p.name, st.st_size, st.st_mtime_ns] for p in files for st in (p.stat(),)]


def request_of(config) -> dict | None:
    """What a reader needs to read and finish ``config``'s dataset, and its key; None for a kind
    without a registered dataset."""
    if not all(hasattr(config, f) for f in FIELDS) or config.dataset not in datasets.DATASETS:
        return None
    where = datasets.check(config.dataset, config.data_dir).data_dir  # resolved, headers looked at
    cpu = torch.device(config.device).type == "cpu"
    key = {
        "dataset": config.dataset,
        "where": where,
        "stamp": files_stamp(where),
        "val_fraction": float(config.val_fraction),
        "split_seed": int(config.split_seed),
        "normalize": config.normalize,
        "threads": torch.get_num_threads() if cpu else None,  # None: the raw arrays
    }
    return {**key, "data_dir": config.data_dir, "key": json.dumps(key, sort_keys=True)}


def arrays_of(d: datasets.Dataset) -> dict:
    """A Dataset's fields, its tensors as numpy arrays (what the object store keeps zero-copy)."""
    fields = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in fields.items()}


def dataset_of(fields: dict) -> datasets.Dataset:
    """The Dataset whose tensors view ``fields``' (read-only) arrays."""
    with warnings.catch_warnings():  # torch warns once that its tensors cannot be read-only: nothing writes them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return datasets.Dataset(
            **{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()}
        )


@ray.remote(num_cpus=0)
class DataReader:
    """One node's datasets: each read once, finished as trials ask, owned here. The driver's
    reader is also the sweep's hub: ``reader_for`` makes the other nodes' readers."""

    def __init__(self):
        self.node = ray.get_runtime_context().get_node_id()
        self.raw: dict[tuple, tuple] = {}  # (dataset, where) → (stamp, what read() returned, its object or None)
        self.finished: OrderedDict[str, ray.ObjectRef] = OrderedDict()  # key → object, the KEEP latest
        self.reads = self.served = 0
        self.others: dict[str, tuple[int, object]] = {}  # the hub's: node → (generation, its reader)
        self.made = 0  # the hub's: readers made, each one's generation

    def get(self, request: dict) -> list:
        """[the object of ``request``]: the finished dataset's arrays, or (raw arrays, where)."""
        self.served += 1
        files = (request["dataset"], request["where"])
        if files not in self.raw or self.raw[files][0] != request["stamp"]:  # unread, or its files changed
            self.raw[files] = (request["stamp"], datasets.read(request["dataset"], request["data_dir"]), None)
            self.reads += 1
        stamp, raw, raw_ref = self.raw[files]
        if request["threads"] is None:  # finished on the trial's device
            if raw_ref is None:
                raw_ref = ray.put(raw)
                self.raw[files] = (stamp, raw, raw_ref)
            return [raw_ref]
        key = request["key"]
        if key not in self.finished:
            torch.set_num_threads(request["threads"])  # std_mean's sums in the trial's order
            d = datasets.load(
                request["dataset"],
                request["data_dir"],
                val_fraction=request["val_fraction"],
                split_seed=request["split_seed"],
                normalize=request["normalize"],
                raw=raw,
            )
            self.finished[key] = ray.put(arrays_of(d))
            while len(self.finished) > KEEP:  # trials still holding an older one keep it alive
                self.finished.popitem(last=False)
        self.finished.move_to_end(key)
        return [self.finished[key]]

    def counts(self) -> tuple[int, int]:
        """(reads of dataset files, requests served)."""
        return self.reads, self.served

    def reader_for(self, node: str, dead: int | None = None) -> tuple[int, object]:
        """The hub's: (generation, the reader of ``node``), made there if there is none yet or
        the one of generation ``dead`` was found dead."""
        if node == self.node:
            return 0, ray.get_runtime_context().current_actor
        if node in self.others and self.others[node][0] == dead:
            with contextlib.suppress(Exception):  # dead already, or unreachable: one reader a node
                ray.kill(self.others.pop(node)[1])
        if node not in self.others:
            self.made += 1
            pinned = NodeAffinitySchedulingStrategy(node, soft=False)
            self.others[node] = (self.made, DataReader.options(scheduling_strategy=pinned).remote())
        return self.others[node]

    def all_counts(self) -> dict[str, tuple[int, int] | None]:
        """The hub's: node → its reader's counts (None: lost, with its node), for nodes asked from."""
        out = {self.node: self.counts()} if self.served else {}
        for node, (_, reader) in self.others.items():
            try:
                out[node] = tuple(ray.get(reader.counts.remote(), timeout=30))
            except (RayActorError, GetTimeoutError):
                out[node] = None
        return out


@contextlib.contextmanager
def session(share: bool = True):
    """The sweep's hub (None when sharing is off), inside a Ray session; afterwards one line of
    what was read where, and the hub killed (the other readers, owned by it, and every object
    with them)."""
    if not share:
        yield None
        return
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    hub = DataReader.options(scheduling_strategy=here).remote()
    try:
        yield hub
        with contextlib.suppress(RayError):  # the hub lost: the sweep's results are not
            tell(ray.get(hub.all_counts.remote(), timeout=120))
    finally:
        with contextlib.suppress(Exception):  # a Ray already gone took it along
            ray.kill(hub)


def tell(counts: dict[str, tuple[int, int] | None]) -> None:
    """One line on stderr: how often the sweep's datasets were read, on how many nodes."""
    if not counts:
        return
    alive = [c for c in counts.values() if c is not None]
    lost = len(counts) - len(alive)
    print(
        f"[glth] shared datasets: {sum(r for r, _ in alive)} read(s) on {len(alive)} node(s), "
        f"{sum(s for _, s in alive)} request(s) served" + (f"; {lost} reader(s) lost with their node" if lost else ""),
        file=sys.stderr,
    )


# -- in a trial's worker ---------------------------------------------------------------------------
_memo: dict[str, tuple[datasets.Dataset, tuple[int, ...]]] = {}  # key → (the last dataset, its tensors' versions)


def _versions(d: datasets.Dataset) -> tuple[int, ...]:
    return tuple(getattr(d, n)._version for n in TENSORS)


def remembered(key: str) -> datasets.Dataset | None:
    """This worker's dataset for ``key`` (None: another, or none yet); RuntimeError if a trial
    wrote into its tensors in place."""
    if key not in _memo:
        return None
    d, versions = _memo[key]
    if _versions(d) != versions:  # an in-place write would have changed every later trial's data
        raise RuntimeError(
            f"dataset {d.name}: a trial wrote into its shared tensors in place; they must stay read-only"
        )
    return d


def _fetch(hub, request: dict):
    node = ray.get_runtime_context().get_node_id()
    generation, reader = ray.get(hub.reader_for.remote(node), timeout=WAIT_S)
    try:
        return ray.get(ray.get(reader.get.remote(request), timeout=WAIT_S)[0])
    except (RayActorError, ObjectLostError):  # that reader died (not its node: this worker is there)
        _, reader = ray.get(hub.reader_for.remote(node, generation), timeout=WAIT_S)
        return ray.get(ray.get(reader.get.remote(request), timeout=WAIT_S)[0])


def dataset_for(config, hub) -> datasets.Dataset | None:
    """``config``'s dataset, read once on this node (through ``hub``, the sweep's ``session``);
    None where nothing is shared (sharing off, a kind without a dataset, the hub gone): the runner
    then loads its own, as a library call does."""
    request = None if hub is None else request_of(config)
    if request is None:
        return None
    d = remembered(request["key"])
    if d is not None:
        return d
    try:
        got = _fetch(hub, request)
    except (RayActorError, ObjectLostError, GetTimeoutError) as e:
        print(f"[glth] shared datasets unavailable ({type(e).__name__}): this trial reads its own", file=sys.stderr)
        return None
    return remember(
        request["key"], dataset_of(got) if request["threads"] is not None else datasets.load_for(config, raw=got)
    )


def remember(key: str, d: datasets.Dataset) -> datasets.Dataset:
    """``d`` as this worker's dataset for ``key`` (the only one: an older one stays in its node's
    object store), with its tensors' versions as they are now."""
    _memo.clear()
    _memo[key] = (d, _versions(d))
    return d
