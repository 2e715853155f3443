"""The paper's figures as PNGs, drawn from a sweep's Parquet rows and its trials' tickets.

* ``accuracy_vs_compression`` — Fig. 2: test accuracy against compression per curve (mean over
  seeds, 95% CI band of the mean), dense baseline, winning-ticket threshold marked;
* ``kept_coordinates`` — Fig. 3: which columns of U a bottleneck on the image input keeps at a
  round, as H×W maps per channel and their sum (identity: input pixels; dct: frequencies);
* ``dct_basis_grid`` — Fig. 4: randomly chosen (seeded) columns of the DCT U as image planes;
* ``rank_vs_round`` — kept rank m (groups) of each bottleneck curve against the round.

``plot_sweep`` draws every figure that applies to a sweep into ``DIR/<sweep_id>/plots/``.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from glth_core import controls  # noqa: E402
from orchestrator.axes import with_axes  # noqa: E402
from orchestrator.layout import SweepDir  # noqa: E402
from orchestrator.results import CURVE, curve_label, is_strong_search, summarize, threshold_index, varying  # noqa: E402

CHANNEL_NAMES = {1: ("",), 3: ("R", "G", "B")}
MAX_SEED_ROWS = 4


def _save(fig, path: Path) -> Path:
    from orchestrator import atomic

    path = Path(path)
    with atomic.writing(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _band(mean: np.ndarray, std: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Half-width of a 95% confidence interval of the mean over n seeds (Student t)."""
    n = np.maximum(n, 1)
    t = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), 0.0)
    return t * std / np.sqrt(n)


def _colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per curve, stable across a sweep's figures; controls share their curve's colour."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bases = sorted({lab.split(" [")[0] for lab in labels})
    return {lab: cycle[bases.index(lab.split(" [")[0]) % len(cycle)] for lab in labels}


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
    return _save(accuracy_figure(rows, delta, log_remaining, title, select_on), path)


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
    strong = is_strong_search(rows)
    colors = _colors([lab for lab, _ in curves])
    for label, curve in curves:
        kind = controls.control_of(curve["control"].iloc[0])  # its marker and line; its dictionary's colour
        control = not kind.is_imp()
        comp = curve["compression_mean"].to_numpy()
        x = np.maximum(1.0 - comp, 1e-6) if log_remaining else comp
        m = 100 * curve["test_accuracy_mean"].to_numpy()
        h = 100 * _band(
            curve["test_accuracy_mean"].to_numpy(), curve["test_accuracy_std"].to_numpy(), curve["seeds"].to_numpy()
        )
        color = colors[label]
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
    if len(dense) and not strong and networks:  # one line would average different networks' dense accuracies
        ax.plot(
            [],
            [],
            ls="none",
            label=f"dense: each curve's round 0 (the {' and '.join(n + 's' for n in networks)} differ)",
        )
    elif len(dense) and not strong:
        base = 100 * dense["test_accuracy_mean"].mean()
        ax.axhline(base, color="black", ls="--", lw=1, label=f"dense, round 0 ({base:.1f}%)", zorder=2)
        ax.axhline(
            base - 100 * delta, color="grey", ls=":", lw=1, label=f"dense − δ (δ = {100 * delta:g} pt)", zorder=2
        )
    if not strong:
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
        _remaining_axis(ax, 1.0 - summary["compression_mean"].max())
    else:
        ax.set_xlabel("compression (removed fraction of the dictionary)")
        ax.set_xlim(-0.02, 1.0)
    ax.set_ylabel("test accuracy (%)")
    seeds = int(summary["seeds"].max())
    note = f"mean over {seeds} seeds; band: 95% CI of the mean" if seeds > 1 else "one seed (no band)"
    if not summary["control"].map(controls.is_imp).all():
        note += "; dashed: random masks, dotted: re-initialized"
    if not strong:
        note += f"\nthreshold (star) chosen on {'validation' if select_on == 'val' else 'TEST'} accuracy"
        note += "; its bar: 95% bootstrap CI over seeds" if seeds > 1 else ""
    if title is None:
        one = {k: summary[k].iloc[0] for k in ("model", "dataset") if k in summary and summary[k].nunique() == 1}
        what = "Strong tickets (edge-popup, no weight training)" if strong else "IMP"
        title = f"{what} on {one['model']}, {one['dataset']}" if len(one) == 2 else f"{what} in several dictionaries"
    ax.set_title(f"{title}\n{note}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    return fig


def _remaining_axis(ax, smallest: float) -> None:
    """Log-scale x of the remaining fraction, 100% on the left, ticks labelled in percent."""
    ax.set_xscale("log")
    ticks = [
        t for t in (1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4) if t >= smallest * 0.7
    ]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(1.15, smallest * 0.8)
    ax.set_xlabel("remaining fraction of the dictionary, 1 − compression (log scale)")


def _log_ticks(axis, lo: float, hi: float) -> None:
    """Plain-number ticks 1, 2, 5, 10, 20, … between lo and hi on a log axis (no 10^x labels)."""
    ticks = [m * 10**e for e in range(-1, 8) for m in (1, 2, 5) if lo * 0.8 <= m * 10**e <= hi * 1.25]
    axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


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
    colors = _colors([lab for lab, _ in curves])
    markers = "osD^vP"
    full = 0.0
    for i, (label, curve) in enumerate(curves):
        g = curve.groupby("round").agg(rank=("rank", "mean"), acc=("test_accuracy", "mean")).reset_index()
        control = not controls.is_imp(curve["control"].iloc[0])
        style = dict(
            marker=markers[i % len(markers)],
            ms=4,
            ls="--" if control else "-",
            color=colors[label],
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
            color=colors[label],
            ha="center",
        )
    for a in (ax, ax2):
        a.grid(alpha=0.3, which="both")
    lo, hi = float(grouped["rank"].min()), float(grouped["rank"].max())
    ax.set_yscale("log")
    _log_ticks(ax.yaxis, lo, hi)
    ax.set_ylim(lo * 0.7, hi * 1.4)
    ax.set_xlabel("round")
    ax.set_ylabel("kept rank m (columns of U), log scale")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(f"rank per round (d_in = {full:.0f}; equal τ gives equal ranks)", fontsize=10)
    ax2.set_xscale("log")
    _log_ticks(ax2.xaxis, lo, hi)
    ax2.set_xlim(hi * 1.3, lo * 0.75)
    ax2.set_xlabel("kept rank m (log scale)")
    ax2.set_ylabel("test accuracy (%), mean over seeds")
    ax2.set_title("accuracy against the kept rank", fontsize=10)
    ax2.legend(fontsize=8)
    fig.suptitle(title or "Bottleneck dictionaries: W = U_kept C_kept", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def kept_coordinates(maps: np.ndarray, path, title: str, row_labels: Sequence[str], frequency: bool = False) -> Path:
    """Fig. 3: ``maps`` is seeds × C × H × W in {0, 1} (kept). Several channels: one row per seed,
    a map per channel and their sum (how many channels keep the position); one channel: a map
    per seed, side by side."""
    n_seeds, c, h, w = maps.shape
    names = CHANNEL_NAMES.get(c, tuple(f"ch{i}" for i in range(c)))
    full = (h, w)
    if frequency:  # kept DCT frequencies sit in a low-frequency corner: show that corner, larger
        rows, cols = np.nonzero(maps.reshape(-1, h, w).any(0))
        k = max(8, int(max(rows.max(initial=0), cols.max(initial=0))) + 3)
        if k < max(h, w):
            maps, h, w = maps[..., :k, :k], min(k, h), min(k, w)
            title += f" — lowest {h}×{w} of the {full[0]}×{full[1]} frequencies shown"
    cells = (
        [[(s, k) for k in range(c + (1 if c > 1 else 0))] for s in range(n_seeds)]
        if c > 1
        else [[(s, 0) for s in range(n_seeds)]]
    )
    n_rows, n_cols = len(cells), len(cells[0])
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.4 * n_cols + 0.8, 2.6 * n_rows + 0.9), squeeze=False, layout="constrained"
    )
    what = "frequencies" if frequency else "kept"
    for r, row in enumerate(cells):
        for col, (s, k) in enumerate(row):
            ax = axes[r, col]
            if k < c:
                img, vmax, cmap = maps[s, k], 1, "gray"
                name = f"{names[k]} channel" if names[k] else "kept"
                sub = f"{name}: {int(maps[s, k].sum())}" + (f" {what}" if names[k] else "")
            else:
                img, vmax, cmap = maps[s].sum(0), c, "magma"
                sub = f"sum of the {c}: {int((maps[s].sum(0) > 0).sum())} positions"
            if c == 1:
                sub = f"{row_labels[s]}: {int(maps[s, 0].sum())} of {h * w} kept"
            im = ax.imshow(img, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(sub, fontsize=8.5)
            if frequency:  # frequency indices are worth reading
                ticks = list(range(0, w, max(1, w // 4)))
                ax.set_xticks(ticks)
                ax.set_yticks(ticks)
                ax.tick_params(labelsize=6.5, length=2)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            if c > 1 and col == 0:
                ax.set_ylabel(row_labels[s], fontsize=10)
            if k == c and c > 1:
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, ticks=range(c + 1))
                cb.ax.tick_params(labelsize=7)
            if frequency and r == n_rows - 1 and col == 0:
                ax.set_xlabel("horizontal frequency →  (vertical ↓)", fontsize=7.5)
    fig.suptitle(textwrap.fill(title, width=max(40, int(16 * n_cols + 20))), fontsize=10)
    return _save(fig, path)


def dct_basis_grid(
    U: np.ndarray,
    image: tuple[int, int, int],
    path,
    count: int = 24,
    seed: int = 0,
    kept: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """Fig. 4: ``count`` columns of U chosen at random (``seed``), each shown as the image plane
    it lives on (one DCT per channel, so a column is nonzero on one channel only)."""
    c, h, w = image
    names = CHANNEL_NAMES.get(c, tuple(f"ch{i}" for i in range(c)))
    rng = np.random.default_rng(seed)
    if kept is None:
        chosen = np.sort(rng.choice(U.shape[1], size=min(count, U.shape[1]), replace=False))
    else:  # half among the kept elements, half among the pruned: uniform picks would be all pruned
        on, off = np.flatnonzero(kept), np.flatnonzero(~kept)
        n_on = min(len(on), count // 2)
        chosen = np.concatenate(
            [
                np.sort(rng.choice(on, size=n_on, replace=False)),
                np.sort(rng.choice(off, size=min(len(off), count - n_on), replace=False)),
            ]
        )
    cols = 6 if len(chosen) > 6 else len(chosen)
    rows = int(np.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.85 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, j in zip(axes.flat, chosen):
        planes = U[:, j].reshape(c, h, w)
        ch = int(np.abs(planes).reshape(c, -1).max(1).argmax())
        u, v = divmod(int(j) % (h * w), w)
        lim = float(np.abs(planes[ch]).max()) or 1.0
        ax.imshow(planes[ch], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        name = f"{names[ch]} " if names[ch] else ""
        mark = ""
        if kept is not None:
            mark = " kept" if kept[j] else " pruned"
        ax.set_title(f"{name}({u},{v}){mark}", fontsize=7.5, color="black" if kept is None or kept[j] else "dimgrey")
        if kept is not None and kept[j]:
            for side in ax.spines.values():
                side.set_visible(True)
                side.set_color("tab:green")
                side.set_linewidth(2.5)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    title = title or f"{len(chosen)} random elements of the DCT basis ({h}×{w} per channel, seed {seed})"
    fig.suptitle(f"{title}\n(u, v) = (vertical, horizontal) frequency; colour: sign and size of the entry", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# -- one sweep, every figure ------------------------------------------------------------------------
def _bottleneck_dictionary(config: dict):
    """The bottleneck dictionary of a trial config when it acts on the image input; else None."""
    from glth_core import data, dictionaries, models

    spec = config.get("dictionary") or {}
    if not spec or not dictionaries.kind_of(spec).maps_input_pixels(spec):
        return None
    source = data.DATASETS[config["dataset"]]
    net = models.build(config["model"], source.input_shape, source.num_classes)
    d = dictionaries.build(spec, net)
    return d if d.is_input_layer else None


def _chosen_round(curve_rows: pd.DataFrame, round_: int | None, delta: float, select_on: str = "val") -> int:
    """``round_`` if the curve has it, else the curve's winning-ticket round, else its last."""
    rounds = sorted(curve_rows["round"].unique())
    if round_ is not None:
        return min(rounds, key=lambda r: abs(r - round_))
    summary = summarize(curve_rows, delta, select_on)
    idx = threshold_index(summary, delta, select_on)
    return int(summary.loc[idx, "round"]) if idx is not None else int(rounds[-1])


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
    from orchestrator.plots_layers import plot_layers

    out = Path(out_dir) if out_dir is not None else Path(sweep_dir.store.root) / "plots"
    rows = with_axes(rows)  # once, over every trial: each figure draws the same curves
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    ok = ok.assign(**{k: "none" for k in ("control",) if k not in ok})
    if ok.empty:  # every trial failed: nothing to draw (the caller says so)
        return []
    construct = construct_vs_n(ok, out / "construct_vs_n.png")
    if construct is not None:  # a construction sweep has no pruning curve to draw
        return [construct]
    name = "accuracy_vs_remaining_log.png" if log_remaining else "accuracy_vs_compression.png"
    written = [
        accuracy_vs_compression(ok, out / name, delta, log_remaining=log_remaining, title=title, select_on=select_on)
    ]
    rank = rank_vs_round(ok, out / "rank_vs_round.png")
    if rank is not None:
        written.append(rank)
    written += plot_layers(ok, out)  # per-layer density, FLOPs, LMC barrier (orchestrator.plots_layers)
    basis_done = False
    for _, curve in ok[ok["control"].map(controls.is_imp).astype(bool)].groupby(CURVE, sort=True, dropna=False):
        config = json.loads(curve["config"].iloc[0])
        dic = _bottleneck_dictionary(config)
        if dic is None:
            continue
        rnd = _chosen_round(curve, round_, delta, select_on)
        seeds = curve.drop_duplicates("trial_id").sort_values("seed").head(MAX_SEED_ROWS)
        maps, labels = [], []
        for r in seeds.itertuples():
            try:
                ticket = sweep_dir.tickets(r.trial_id).get(rnd)
            except FileNotFoundError:
                ticket = None
            if ticket is None:
                continue
            keep = ticket.mask.view(dic.d_out, dic.d_in).any(0).cpu().numpy()
            maps.append(keep.reshape(dic.image).astype(float))
            labels.append(f"seed {r.seed}")
        if not maps:
            continue
        comp = float(curve.loc[curve["round"] == rnd, "compression"].mean())
        label = curve_label(curve.iloc[0], varying(ok))
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
        if dic.basis == "identity":
            title = f"{label}, round {rnd} (compression {100 * comp:.1f}%): kept input coordinates (white)"
            written.append(kept_coordinates(np.stack(maps), out / f"kept_inputs_{stem}.png", title, labels))
        else:
            title = f"{label}, round {rnd} (compression {100 * comp:.1f}%): kept DCT frequencies per channel (white)"
            written.append(
                kept_coordinates(np.stack(maps), out / f"kept_frequencies_{stem}.png", title, labels, frequency=True)
            )
            if not basis_done:
                U = dic.U.cpu().numpy()
                written.append(
                    dct_basis_grid(
                        U,
                        dic.image,
                        out / "dct_basis.png",
                        basis_count,
                        basis_seed,
                        kept=maps[0].reshape(-1) > 0,
                        title=f"Random elements of the DCT basis ({dic.image[1]}×{dic.image[2]} "
                        f"per channel, seed {basis_seed}): half among those {label} kept at "
                        f"round {rnd} ({labels[0]}, green), half among the pruned",
                    )
                )
                basis_done = True
    return written


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


def construct_vs_n(rows: pd.DataFrame, path) -> Path | None:
    """Constructive strong tickets: weight error and kept/target ratio against n (log scale)."""
    from orchestrator.results import construct_summary

    summary = construct_summary(rows)
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
    return _save(fig, path)
