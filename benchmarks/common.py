"""What the benchmarks share: threads, the CIFAR-10-shaped data, interleaved median timing, the
one-line result. Each benchmark compares arms measured in the same process, round-robin, so a
machine shared with other work slows every arm alike and the ratio stays meaningful."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from glth_core import data as datasets

REPO = Path(__file__).resolve().parents[1]
CIFAR_DIR = REPO.parent / "shared" / "data" / "cifar10-approx"


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads for every arm (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per arm; the median is reported")
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller work")
    p.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu (default): this process's CPU time, steady on a machine shared with other work; "
        "wall: elapsed time (always, with --device cuda)",
    )
    return p


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default), or cuda on a GPU machine (wall clock, synchronized)")


def on_device(data: datasets.Dataset, device: str) -> datasets.Dataset:
    """``data`` with every split on ``device``."""
    if device == "cpu":
        return data
    moved = {f: getattr(data, f).to(device) for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    return dataclasses.replace(data, **moved)


def synchronized(fn: Callable[[], object], device: str) -> Callable[[], object]:
    """``fn`` followed by a CUDA synchronize on a GPU (so a timing covers the kernels it queued)."""
    if not device.startswith("cuda"):
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = CLOCKS["cpu"]


def set_threads(n: int, clock: str = "cpu") -> int:
    """Use ``n`` torch threads and ``clock`` for every timing; returns the thread count."""
    global _clock
    _clock = CLOCKS[clock]
    torch.set_num_threads(n)
    return torch.get_num_threads()


def cifar_or_digits(n_train: int, n_eval: int) -> datasets.Dataset:
    """The approximate CIFAR-10 (a subset: ``n_train`` train, ``n_eval`` val and test images) when
    it is on disk, else the embedded digits."""
    if not (CIFAR_DIR / "cifar-10-batches-py").is_dir():
        return datasets.load("digits")
    d = datasets.load("cifar10", CIFAR_DIR)
    return dataclasses.replace(
        d,
        train_x=d.train_x[:n_train].clone(),
        train_y=d.train_y[:n_train].clone(),
        val_x=d.val_x[:n_eval].clone(),
        val_y=d.val_y[:n_eval].clone(),
        test_x=d.test_x[:n_eval].clone(),
        test_y=d.test_y[:n_eval].clone(),
    )


def data_label(d: datasets.Dataset) -> str:
    name = "approximate CIFAR-10" if d.name == "cifar10" else d.name
    return f"{name}, {len(d.train_y):,} train images"


def timed(fn: Callable[[], object]) -> float:
    t0 = _clock()
    fn()
    return _clock() - t0


def interleaved(arms: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each arm, running the arms round-robin (``warmup`` untimed rounds first)."""
    for _ in range(warmup):
        for fn in arms.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def verdict(ratio: float, target: float | None, at_most: bool = True) -> str:
    if target is None:
        return "(no target)"
    ok = ratio <= target if at_most else ratio >= target
    return f"target {'<=' if at_most else '>='}{target:.2f} {'OK' if ok else 'MISSED'}"


def dense_orthogonal(n: int, chunk: int = 1024) -> torch.Tensor:
    """A dense n×n orthonormal float32 matrix (the DCT matrix, built in O(n² log n) by chunks): the
    same memory and per-step cost as a Haar matrix of that size, whose QR draw costs O(n³)
    (~3·10¹³ flops at n = 28,950: far too long for a benchmark on 2 cores)."""
    from glth_core.dictionaries.dct import dct

    q = torch.empty(n, n)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk))
        eye = torch.zeros(len(rows), n)
        eye[torch.arange(len(rows)), rows] = 1.0
        q[rows] = dct(eye)
    return q


def haar_cost_dictionary(model: torch.nn.Module, exact: bool = False):
    """A whole-scope ``random: haar`` dictionary over ``model``; unless ``exact``, its matrix is
    ``dense_orthogonal`` (same cost per step) instead of a drawn Haar matrix."""
    from glth_core import dictionaries
    from glth_core.dictionaries.blocks import Segment
    from glth_core.dictionaries.random import RandomRotation
    from glth_core.dictionaries.scope import resolve_scope
    from glth_core.dictionaries.transforms import MatrixRows

    if exact:
        return dictionaries.build({"kind": "random", "method": "haar", "seed": 0}, model)
    scope = resolve_scope(model, None)
    size = sum(e.numel for e in scope)
    d = RandomRotation(scope, [Segment(0, 1, size, MatrixRows(dense_orthogonal(size).unsqueeze(0)))])
    d.method, d.seed, d.label = "haar", 0, "random-haar"
    return d
