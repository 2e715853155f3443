"""The figure of constructive strong tickets (kind construct): the SubsetSum construction's weight
error and cost against n, the random candidates per target weight."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator.kind_results import results_of
from orchestrator.plots_style import plt, save
from orchestrator.table_summary import summarize_table


def construct_vs_n(rows: pd.DataFrame, path) -> Path | None:
    """Constructive strong tickets: weight error and kept/target ratio against n (log scale), from
    the construct kind's table (``glth_core.strong.construct_run.RESULTS``); None without a row."""
    summary = summarize_table(rows, results_of(rows))
    if summary.empty:
        return None
    fig, (ax_err, ax_kept) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"wspace": 0.35})
    for (dist, eps), curve in summary.groupby(["distribution", "epsilon"]):
        curve = curve.sort_values("n")
        label = f"{dist}, ε={eps:g}"
        (line,) = ax_err.plot(curve["n"], curve["max_weight_error_mean"], marker="o", label=f"{label}: max")
        ax_err.plot(
            curve["n"],
            curve["mean_weight_error_mean"],
            marker="s",
            ls="--",
            color=line.get_color(),
            label=f"{label}: mean",
        )
        ax_err.axhline(eps, color=line.get_color(), lw=0.8, ls=":")
        ax_kept.plot(curve["n"], curve["kept_per_target_mean"], marker="o", color=line.get_color(), label=label)
    ax_err.set_yscale("log")
    ax_err.set_xlabel("n (random candidates per target weight)")
    ax_err.set_ylabel("|effective − target weight| (log)")
    ax_err.set_title("SubsetSum construction: weight error (dotted: ε)")
    ax_kept.set_yscale("log")
    ax_kept.set_xlabel("n (random candidates per target weight)")
    ax_kept.set_ylabel("kept random weights / target weights (log)")
    ax_kept.axhline(9.39, color="grey", ls="--", lw=1, label="Pensia et al. anchor 9.39×")
    ax_kept.set_title("cost of the strong ticket")
    for ax in (ax_err, ax_kept):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return save(fig, path)
