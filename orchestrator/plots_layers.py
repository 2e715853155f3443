"""Figures of the per-layer views and the cost of a sweep's tickets, drawn from its Parquet rows.

* ``layer_density_vs_round`` — the kept fraction of each parameter tensor (the rows' JSON
  ``layer_density`` column, ``glth_core.layer_density``) against the round, one panel per curve, mean
  over seeds; tensors that stay dense in every round of a curve (outside the dictionary's scope) and
  tensors a rotation mixes (absent from the column) are not drawn, and each panel says how many;
* ``flops_vs_compression`` — the exported ticket's FLOPs on one input as a fraction of the dense
  model's (``flops`` / ``flops_dense``) against compression: structured dictionaries drop, masks of
  single weights stay at 1 (their export is the dense network);
* ``lmc_barrier_vs_compression`` — the linear-mode-connectivity error barrier on test and train
  (``lmc_barrier_test``, ``lmc_barrier_train``, ``glth_core.lmc``) against compression per curve.

``plot_layers(rows, out)`` draws those that apply (``orchestrator.plots.FIGURES`` names it ``layer_views``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import pandas as pd

from glth_core import controls
from orchestrator.axes import with_axes
from orchestrator.plots_style import colors, plt, save
from orchestrator.results import CURVE, curve_label, varying

MAX_PANELS = 12


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    rows = with_axes(rows)
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    return ok.assign(**{k: "none" for k in ("control",) if k not in ok})


def _curves(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    vary = varying(rows)
    keys = [k for k in CURVE if k in rows]
    return [(curve_label(c.iloc[0], vary), c) for _, c in rows.groupby(keys, sort=True, dropna=False)]


def _has(rows: pd.DataFrame, column: str) -> bool:
    return column in rows and bool(rows[column].notna().any())


def layer_densities(curve: pd.DataFrame) -> pd.DataFrame:
    """round × tensor: the mean over seeds of each tensor's kept fraction (columns in model order)."""
    parsed = [(int(r), json.loads(s)) for r, s in zip(curve["round"], curve["layer_density"]) if isinstance(s, str)]
    names: list[str] = []
    for _, d in parsed:
        names += [n for n in d if n not in names]
    frame = pd.DataFrame([{"round": r, **d} for r, d in parsed], columns=["round", *names])
    return frame.groupby("round").mean().sort_index()


def layer_density_vs_round(rows: pd.DataFrame, path) -> Path | None:
    ok = _ok(rows)
    if not _has(ok, "layer_density"):
        return None
    curves = _curves(ok[ok["layer_density"].notna()])[:MAX_PANELS]
    cols = min(3, len(curves))
    nrows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False)
    for ax, (label, curve) in zip(axes.flat, curves):
        table = layer_densities(curve)
        pruned = [n for n in table.columns if (table[n] < 1.0).any()]
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, name in enumerate(pruned):
            ax.plot(
                table.index,
                table[name].clip(lower=1e-4),
                marker="o",
                ms=3,
                lw=1.4,
                color=cycle[i % len(cycle)],
                label=name,
            )
        overall = curve.groupby("round")["density"].mean()
        ax.plot(overall.index, overall.values, color="black", ls="--", lw=1.2, label="whole dictionary")
        ax.set_yscale("log")
        ax.set_xlabel("round")
        ax.set_ylabel("kept fraction (log)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        dense = len(table.columns) - len(pruned)
        note = (
            f"{dense} dense tensor(s) not drawn"
            if len(table.columns)
            else "one rotation of all tensors: no tensor has a fraction of its own"
        )
        ax.set_title(f"{label}\n{note}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    fig.suptitle("Kept fraction of each parameter tensor per round (mean over seeds)", fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def _per_curve(ax, curves, column: str, colors: dict, scale: float = 1.0) -> None:
    """Mean over seeds against compression per curve; the band spans the seeds' min to max (a
    t-interval over two or three seeds would be wider than the quantity's whole range)."""
    for label, curve in curves:
        g = (
            curve.groupby("round")
            .agg(x=("compression", "mean"), m=(column, "mean"), lo=(column, "min"), hi=(column, "max"))
            .reset_index()
        )
        control = not controls.is_imp(curve["control"].iloc[0])
        ax.plot(
            g["x"], scale * g["m"], marker="o", ms=3.5, ls="--" if control else "-", color=colors[label], label=label
        )
        if not control:
            ax.fill_between(g["x"], scale * g["lo"], scale * g["hi"], color=colors[label], alpha=0.12, lw=0)


def flops_vs_compression(rows: pd.DataFrame, path) -> Path | None:
    ok = _ok(rows)
    if not (_has(ok, "flops") and _has(ok, "flops_dense")):
        return None
    ok = ok[ok["flops"].notna() & ok["flops_dense"].notna()]
    ok = ok.assign(flops_fraction=ok["flops"].astype(float) / ok["flops_dense"].astype(float))
    curves = _curves(ok)
    palette = colors([lab for lab, _ in curves])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    _per_curve(ax, curves, "flops_fraction", palette)
    per_model = ok.groupby("model")["flops_dense"].max() if "model" in ok else pd.Series({"": ok["flops_dense"].max()})
    dense = ", ".join(f"{m + ' ' if m else ''}{float(v):,.0f}" for m, v in per_model.items())
    ax.set_ylim(0, max(1.05, float(ok["flops_fraction"].max()) * 1.05))
    ax.axhline(1.0, color="black", lw=1, ls=":")
    ax.set_xlabel("compression (fraction of the dictionary pruned)")
    ax.set_ylabel("FLOPs of the exported ticket / dense")
    ax.set_title(
        f"Cost of one forward pass on one input (dense: {dense} FLOPs; masks of single\n"
        "weights export as the dense network, structured pruning as a smaller one)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def lmc_barrier_vs_compression(rows: pd.DataFrame, path) -> Path | None:
    ok = _ok(rows)
    if not _has(ok, "lmc_barrier_test"):
        return None
    ok = ok[ok["lmc_barrier_test"].notna()]
    curves = _curves(ok)
    palette = colors([lab for lab, _ in curves])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, split in zip(axes, ("test", "train")):
        _per_curve(ax, curves, f"lmc_barrier_{split}", palette, scale=100.0)
        ax.axhline(2.0, color="grey", ls=":", lw=1, label="2% (Frankle et al.'s stability line)")
        ax.set_xlabel("compression (fraction of the dictionary pruned)")
        ax.set_title(f"{split} error barrier between two copies", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error barrier (percentage points)")
    axes[1].legend(fontsize=8)
    fig.suptitle(
        "Linear mode connectivity: max error on the path minus the mean of its ends (mean over seeds; band: min–max)",
        fontsize=11,
    )
    fig.tight_layout()
    return save(fig, path)


def plot_layers(rows: pd.DataFrame, out: Path) -> list[Path]:
    """The figures of this module that apply to ``rows``, written under ``out``."""
    out = Path(out)
    drawn = [
        layer_density_vs_round(rows, out / "layer_density.png"),
        flops_vs_compression(rows, out / "flops_vs_compression.png"),
        lmc_barrier_vs_compression(rows, out / "lmc_barrier.png"),
    ]
    return [p for p in drawn if p is not None]


__all__ = [
    "layer_densities",
    "layer_density_vs_round",
    "flops_vs_compression",
    "lmc_barrier_vs_compression",
    "plot_layers",
]
