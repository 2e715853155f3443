"""What every figure of ``glth plot`` shares: matplotlib without a display, the atomic PNG write,
a curve's colour and confidence band, and the log axes of remaining fraction and rank."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from orchestrator import atomic  # noqa: E402

__all__ = ["band", "colors", "log_ticks", "plt", "remaining_axis", "save"]


def save(fig, path: Path) -> Path:
    """The figure as a PNG at ``path`` (written whole or not at all), then closed."""
    path = Path(path)
    with atomic.writing(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def band(mean: np.ndarray, std: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Half-width of a 95% confidence interval of the mean over n seeds (Student t)."""
    n = np.maximum(n, 1)
    t = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), 0.0)
    return t * std / np.sqrt(n)


def colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per curve, stable across a sweep's figures; controls share their curve's colour."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bases = sorted({lab.split(" [")[0] for lab in labels})
    return {lab: cycle[bases.index(lab.split(" [")[0]) % len(cycle)] for lab in labels}


def remaining_axis(ax, smallest: float) -> None:
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


def log_ticks(axis, lo: float, hi: float) -> None:
    """Plain-number ticks 1, 2, 5, 10, 20, … between lo and hi on a log axis (no 10^x labels)."""
    ticks = [m * 10**e for e in range(-1, 8) for m in (1, 2, 5) if lo * 0.8 <= m * 10**e <= hi * 1.25]
    axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
