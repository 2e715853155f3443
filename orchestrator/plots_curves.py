"""The curves' figures: accuracy against compression (the paper's Fig. 2) and the kept rank of
bottleneck dictionaries against the round, drawn from a sweep's Parquet rows.

* ``accuracy_vs_compression`` — Fig. 2: test accuracy against compression per curve (mean over
  seeds, 95% CI band of the mean), dense baseline, winning-ticket threshold marked (for kinds whose
  round 0 is a dense baseline; the title names the rows' kind as it declares, ``Curves.title``);
* ``rank_vs_round`` — kept rank m (groups) of each bottleneck curve against the round.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from glth_core import controls
from orchestrator.axes import with_axes
from orchestrator.kind_results import measures_threshold, results_of
from orchestrator.plots_style import band, colors, log_ticks, plt, remaining_axis, save
from orchestrator.results import CURVE, curve_label, summarize, varying


def accuracy_vs_compression(
    rows: pd.DataFrame,
    path,
    delta: float = 0.005,
    log_remaining: bool = False,
    title: str | None = None,
    select_on: str = "val",
) -> Path:
    """Fig. 2: test accuracy against compression, one curve per dictionary (and control; dashed).

    ``log_remaining``: the x-axis is the remaining fraction 1 − compression on a log scale
    (high compression spread out, growing to the right), as in most lottery-ticket plots."""
    return save(accuracy_figure(rows, delta, log_remaining, title, select_on), path)


def accuracy_figure(
    rows: pd.DataFrame,
    delta: float = 0.005,
    log_remaining: bool = False,
    title: str | None = None,
    select_on: str = "val",
):
    """The figure of ``accuracy_vs_compression``, not yet saved. The threshold (a star) is chosen on
    ``select_on`` accuracy; its whisker is the 95% bootstrap interval over seeds."""
    from orchestrator.uncertainty import threshold_uncertainty

    summary = summarize(rows, delta, select_on)
    spread = {
        curve_label(r, varying(summary)): (r["threshold_ci_low"], r["threshold_ci_high"])
        for _, r in threshold_uncertainty(rows, delta, select_on).iterrows()
    }
    vary = varying(summary)
    fig, ax = plt.subplots(figsize=(8, 5))
    curves = [
        (curve_label(c.iloc[0], vary), c.sort_values("round"))
        for _, c in summary.groupby(CURVE, sort=True, dropna=False)
    ]  # τ is NaN for strong trials
    threshold = measures_threshold(rows)  # without a dense baseline (a strong search): no threshold, no dense line
    palette = colors([lab for lab, _ in curves])
    for label, curve in curves:
        kind = controls.control_of(curve["control"].iloc[0])  # its marker and line; its dictionary's colour
        control = not kind.is_imp()
        comp = curve["compression_mean"].to_numpy()
        x = np.maximum(1.0 - comp, 1e-6) if log_remaining else comp
        m = 100 * curve["test_accuracy_mean"].to_numpy()
        h = 100 * band(
            curve["test_accuracy_mean"].to_numpy(), curve["test_accuracy_std"].to_numpy(), curve["seeds"].to_numpy()
        )
        color = palette[label]
        marker, ls = kind.marker, kind.line
        ax.plot(
            x,
            m,
            marker=marker,
            ms=3.5 if control else 4,
            lw=1.3 if control else 1.8,
            ls=ls,
            color=color,
            label=label,
            zorder=3,
        )
        if not control:  # controls get no band: nine overlapping bands would hide every curve
            ax.fill_between(x, m - h, m + h, color=color, alpha=0.12, lw=0, zorder=1)
        won = curve.index[curve["winning"]]  # none for strong searches (see summarize)
        idx = won[0] if len(won) else None
        if idx is not None and not control:
            xt = curve.loc[idx, "compression_mean"]
            yt = 100 * curve.loc[idx, "test_accuracy_mean"]
            ax.plot(
                max(1 - xt, 1e-6) if log_remaining else xt,
                yt,
                marker="*",
                ms=15,
                color=color,
                markeredgecolor="black",
                zorder=4,
            )
            lo, hi = spread.get(label, (np.nan, np.nan))
            if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
                ends = [max(1 - v, 1e-6) for v in (lo, hi)] if log_remaining else [lo, hi]
                ax.plot(ends, [yt, yt], color=color, lw=2.5, solid_capstyle="butt", zorder=4, alpha=0.8)
    means = 100 * summary["test_accuracy_mean"]
    ax.set_ylim(max(0.0, means.min() - 4), min(100.0, means.max() + 2.5))
    dense = summary[summary["round"] == summary["round"].min()]
    imp = dense["control"].map(controls.is_imp).astype(bool)
    dense = dense[imp] if imp.any() else dense
    networks = [k for k in ("model", "dataset") if k in dense and dense[k].nunique() > 1]
    if len(dense) and threshold and networks:  # one line would average different networks' dense accuracies
        ax.plot(
            [],
            [],
            ls="none",
            label=f"dense: each curve's round 0 (the {' and '.join(n + 's' for n in networks)} differ)",
        )
    elif len(dense) and threshold:
        base = 100 * dense["test_accuracy_mean"].mean()
        ax.axhline(base, color="black", ls="--", lw=1, label=f"dense, round 0 ({base:.1f}%)", zorder=2)
        ax.axhline(
            base - 100 * delta, color="grey", ls=":", lw=1, label=f"dense − δ (δ = {100 * delta:g} pt)", zorder=2
        )
    if threshold:
        ax.plot(
            [],
            [],
            ls="none",
            marker="*",
            ms=12,
            color="white",
            markeredgecolor="black",
            label="winning-ticket threshold",
        )
    if log_remaining:
        remaining_axis(ax, 1.0 - summary["compression_mean"].max())
    else:
        ax.set_xlabel("compression (removed fraction of the dictionary)")
        ax.set_xlim(-0.02, 1.0)
    ax.set_ylabel("test accuracy (%)")
    seeds = int(summary["seeds"].max())
    note = f"mean over {seeds} seeds; band: 95% CI of the mean" if seeds > 1 else "one seed (no band)"
    if not summary["control"].map(controls.is_imp).all():
        note += "; dashed: random masks, dotted: re-initialized"
    if threshold:
        note += f"\nthreshold (star) chosen on {'validation' if select_on == 'val' else 'TEST'} accuracy"
        note += "; its bar: 95% bootstrap CI over seeds" if seeds > 1 else ""
    if title is None:
        one = {k: summary[k].iloc[0] for k in ("model", "dataset") if k in summary and summary[k].nunique() == 1}
        what = results_of(rows).title
        title = f"{what} on {one['model']}, {one['dataset']}" if len(one) == 2 else f"{what} in several dictionaries"
    ax.set_title(f"{title}\n{note}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    return fig


def rank_vs_round(rows: pd.DataFrame, path, title: str | None = None) -> Path | None:
    """Bottlenecks: kept rank m (groups: columns of U) against the round (left), and test
    accuracy against m (right: what each basis achieves with m columns). None without one."""
    rows = with_axes(rows)
    grouped = rows[rows["rank"].notna()] if "rank" in rows else rows.iloc[:0]
    if "status" in grouped:
        grouped = grouped[grouped["status"] == "ok"]
    if grouped.empty:
        return None
    grouped = grouped.assign(rank=grouped["rank"].astype(float))
    if "control" not in grouped:
        grouped = grouped.assign(control="none")
    vary = varying(grouped)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    curves = [
        (curve_label(c.iloc[0], vary), c)
        for _, c in grouped.groupby([k for k in CURVE if k in grouped], sort=True, dropna=False)
    ]
    palette = colors([lab for lab, _ in curves])
    markers = "osD^vP"
    full = 0.0
    for i, (label, curve) in enumerate(curves):
        g = curve.groupby("round").agg(rank=("rank", "mean"), acc=("test_accuracy", "mean")).reset_index()
        control = not controls.is_imp(curve["control"].iloc[0])
        style = dict(
            marker=markers[i % len(markers)],
            ms=4,
            ls="--" if control else "-",
            color=palette[label],
            label=label,
            alpha=0.9,
        )
        ax.plot(g["round"], g["rank"], **style)
        ax2.plot(g["rank"], 100 * g["acc"], **style)
        full = max(full, float(g["rank"].iloc[0]))
        last = g.iloc[-1]
        ax.annotate(
            f"m = {last['rank']:.0f}",
            (last["round"], last["rank"]),
            textcoords="offset points",
            xytext=(0, 8 + 10 * i),
            fontsize=8,
            color=palette[label],
            ha="center",
        )
    for a in (ax, ax2):
        a.grid(alpha=0.3, which="both")
    lo, hi = float(grouped["rank"].min()), float(grouped["rank"].max())
    ax.set_yscale("log")
    log_ticks(ax.yaxis, lo, hi)
    ax.set_ylim(lo * 0.7, hi * 1.4)
    ax.set_xlabel("round")
    ax.set_ylabel("kept rank m (columns of U), log scale")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(f"rank per round (d_in = {full:.0f}; equal τ gives equal ranks)", fontsize=10)
    ax2.set_xscale("log")
    log_ticks(ax2.xaxis, lo, hi)
    ax2.set_xlim(hi * 1.3, lo * 0.75)
    ax2.set_xlabel("kept rank m (log scale)")
    ax2.set_ylabel("test accuracy (%), mean over seeds")
    ax2.set_title("accuracy against the kept rank", fontsize=10)
    ax2.legend(fontsize=8)
    fig.suptitle(title or "Bottleneck dictionaries: W = U_kept C_kept", fontsize=11)
    fig.tight_layout()
    return save(fig, path)
