"""The figures of what a dictionary on the image input keeps, drawn from a sweep's tickets.

* ``kept_coordinates`` — Fig. 3: which columns of U a bottleneck on the image input keeps at a
  round, as H×W maps per channel and their sum (identity: input pixels; dct: frequencies);
* ``dct_basis_grid`` — Fig. 4: randomly chosen (seeded) columns of the DCT U as image planes.

``input_maps`` draws both for every IMP curve of a sweep whose dictionary maps input pixels.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from glth_core import controls
from orchestrator.layout import SweepDir
from orchestrator.plots_style import plt, save
from orchestrator.results import CURVE, curve_label, summarize, threshold_index, varying

CHANNEL_NAMES = {1: ("",), 3: ("R", "G", "B")}
MAX_SEED_ROWS = 4


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
    return save(fig, path)


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
    return save(fig, path)


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


def input_maps(
    ok: pd.DataFrame,
    sweep_dir: SweepDir,
    out: Path,
    round_: int | None = None,
    delta: float = 0.005,
    select_on: str = "val",
    basis_count: int = 24,
    basis_seed: int = 0,
) -> list[Path]:
    """Figs. 3 and 4 for each IMP curve of ``ok`` (the ok rows, with their axes) whose dictionary is
    a bottleneck on the image input, at ``round_`` (default: the curve's winning-ticket round), from
    the tickets in ``sweep_dir``; one DCT basis grid for the first DCT curve."""

    written = []
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
        if dic.groups_are_inputs:  # kept pixels; else kept DCT frequencies
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
