"""``glth plot``: every figure that applies to a sweep, as PNGs under ``DIR/<sweep_id>/plots/``.

Which figures apply is what the rows' trial kind declares (``Experiment.results.figures``, names in
``FIGURES``): accuracy-against-compression curves draw ``accuracy_vs_compression`` (Fig. 2),
``rank_vs_round`` (``orchestrator.plots_curves``), ``layer_views`` (``orchestrator.plots_layers``)
and ``kept_coordinates`` (Figs. 3–4, ``orchestrator.plots_inputs``); the construct kind draws
``construct_vs_n`` (``orchestrator.plots_construct``). A figure that does not apply to the rows
(no bottleneck, no layer column) draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.axes import with_axes
from orchestrator.kind_results import results_of
from orchestrator.layout import SweepDir
from orchestrator.plots_construct import construct_vs_n
from orchestrator.plots_curves import accuracy_vs_compression, rank_vs_round
from orchestrator.plots_inputs import input_maps
from orchestrator.plots_layers import plot_layers


@dataclass(frozen=True)
class PlotRequest:
    """What ``glth plot`` asks of every figure: where the tickets are and the PNGs go, and the
    options of the curves' figures."""

    sweep_dir: SweepDir  # it holds the tickets
    out: Path
    round_: int | None = None
    log_remaining: bool = False
    delta: float = 0.005
    basis_count: int = 24
    basis_seed: int = 0
    title: str | None = None
    select_on: str = "val"


def _accuracy(ok: pd.DataFrame, r: PlotRequest) -> list[Path]:
    name = "accuracy_vs_remaining_log.png" if r.log_remaining else "accuracy_vs_compression.png"
    return [accuracy_vs_compression(ok, r.out / name, r.delta, r.log_remaining, r.title, r.select_on)]


def _kept_coordinates(ok: pd.DataFrame, r: PlotRequest) -> list[Path]:
    return input_maps(ok, r.sweep_dir, r.out, r.round_, r.delta, r.select_on, r.basis_count, r.basis_seed)


def _drawn(path: Path | None) -> list[Path]:
    return [] if path is None else [path]


#: every figure a kind may declare, by name: (the ok rows with their axes, the request) → PNGs written
FIGURES: dict[str, Callable[[pd.DataFrame, PlotRequest], list[Path]]] = {
    "accuracy_vs_compression": _accuracy,
    "rank_vs_round": lambda ok, r: _drawn(rank_vs_round(ok, r.out / "rank_vs_round.png")),
    "layer_views": lambda ok, r: plot_layers(ok, r.out),  # per-layer density, FLOPs, LMC barrier
    "kept_coordinates": _kept_coordinates,
    "construct_vs_n": lambda ok, r: _drawn(construct_vs_n(ok, r.out / "construct_vs_n.png")),
}


def plot_sweep(
    rows: pd.DataFrame,
    sweep_dir: SweepDir,
    round_: int | None = None,
    log_remaining: bool = False,
    delta: float = 0.005,
    basis_count: int = 24,
    basis_seed: int = 0,
    title: str | None = None,
    select_on: str = "val",
    out_dir: Path | None = None,
) -> list[Path]:
    """Every figure that applies to the sweep, under ``out_dir`` (default ``sweep_dir/plots``, the
    sweep then local); returns the PNGs written. ``sweep_dir`` holds the tickets."""
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir.store.root) / "plots"
    rows = with_axes(rows)  # once, over every trial: each figure draws the same curves
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    ok = ok.assign(**{k: "none" for k in ("control",) if k not in ok})
    if ok.empty:  # every trial failed: nothing to draw (the caller says so)
        return []
    request = PlotRequest(sweep_dir, out, round_, log_remaining, delta, basis_count, basis_seed, title, select_on)
    return [png for name in results_of(ok).figures for png in FIGURES[name](ok, request)]


def log_to_mlflow(pngs: Sequence[Path], sweep_id: str, experiment: str, tracking_uri: str) -> str | None:
    """Log the PNGs to the sweep's parent run under ``plots/`` (skipped when these exact files are
    there already). The parent run id, or None when the sweep has no parent run in that store."""
    import hashlib

    from orchestrator.sinks import mlflow as mlflow_sink

    digest = hashlib.sha256(b"".join(Path(p).name.encode() + Path(p).read_bytes() for p in pngs)).hexdigest()[:16]
    return mlflow_sink.log_to_parent(
        tracking_uri,
        experiment,
        sweep_id,
        artifacts={f"plots/{Path(p).name}": Path(p) for p in pngs},
        once_tag=("glth.plots", digest),
    )
