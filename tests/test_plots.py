"""`glth plot`: the paper's figures as PNGs, and the controls as curves of their own."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from in_process import glth_here
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator import plots_curves, plots_inputs, plots_style
from orchestrator.results import summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path, min_kb: float = 4, max_kb: float = 1500) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert min_kb * 1024 <= len(data) <= max_kb * 1024, (path, len(data))
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
    assert 400 <= w <= 3000 and 250 <= h <= 3000, (path, w, h)
    return w, h


# -- pieces without a sweep -----------------------------------------------------------------------------
def fake_rows(seeds=(0, 1, 2), rounds=6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    out = []
    for dictionary in ("canonical", "bottleneck-identity"):
        for control in ("none", "random_mask"):
            for seed in seeds:
                for r in range(rounds):
                    acc = 0.9 - (0.05 * r if control != "none" else 0.01 * max(0, r - 3)) + rng.normal(0, 0.005)
                    out.append(
                        {
                            "dataset": "digits",
                            "model": "mlp",
                            "dictionary": dictionary,
                            "control": control,
                            "tau": 0.5,
                            "rewind": "init",
                            "seed": seed,
                            "round": r,
                            "status": "ok",
                            "test_accuracy": acc,
                            "val_accuracy": acc,
                            "compression": 1 - 0.5**r,
                            "density": 0.5**r,
                            "trial_id": f"{dictionary}-{control}-{seed}",
                            "rank": 64 * 0.5**r if dictionary.startswith("bottleneck") else None,
                        }
                    )
    return pd.DataFrame(out)


def test_strong_ticket_rows_are_drawn_without_a_winning_ticket_threshold():
    """Strong trials have no τ (NaN): their curves must not be dropped, and a search's density
    1.0 is a random network, so no dense baseline or threshold is drawn against it."""
    rows = fake_rows(rounds=4).query("control == 'none'").assign(kind="strong", tau=np.nan, rewind="none")
    fig = plots_curves.accuracy_figure(rows, delta=0.005)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    drawn = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    title = ax.get_title()
    plt.close(fig)
    assert labels == ["bottleneck-identity", "canonical"]
    mean_first = 100 * rows[rows["round"] == 0].groupby("dictionary").test_accuracy.mean()
    assert np.allclose(drawn["canonical"][0], mean_first["canonical"])
    assert "Strong tickets" in title
    assert not summarize(rows).winning.any()


def test_accuracy_figure_has_one_curve_per_dictionary_and_control():
    rows = fake_rows()
    fig = plots_curves.accuracy_figure(rows, delta=0.005)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    plt.close(fig)
    for want in ("canonical", "canonical [random_mask]", "bottleneck-identity", "bottleneck-identity [random_mask]"):
        assert want in labels
    assert any(lab.startswith("dense, round 0") for lab in labels)
    assert "winning-ticket threshold" in labels


def test_two_models_get_no_averaged_dense_line():
    """Each curve's threshold is against its own round 0: a line at the mean of two networks' dense
    accuracies would be neither's baseline."""
    one = fake_rows().query("control == 'none'")
    two = pd.concat(
        [
            one,
            one.assign(
                model="conv4",
                trial_id=one.trial_id + "-b",
                test_accuracy=one.test_accuracy - 0.2,
                val_accuracy=one.val_accuracy - 0.2,
            ),
        ]
    )
    for rows, dense_lines in ((one, 1), (two, 0)):
        fig = plots_curves.accuracy_figure(rows, delta=0.005)
        ax = fig.axes[0]
        labels = ax.get_legend_handles_labels()[1]
        flat = [line for line in ax.get_lines() if line.get_label().startswith("dense, round 0")]
        plt.close(fig)
        assert len(flat) == dense_lines, labels
        assert any(lab.startswith("dense: each curve's round 0 (the models differ)") for lab in labels) == (
            dense_lines == 0
        )


def test_band_is_a_95_percent_t_interval():
    from scipy import stats

    half = plots_style.band(np.array([0.5]), np.array([0.1]), np.array([3]))
    assert half[0] == pytest.approx(stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3))
    assert plots_style.band(np.array([0.5]), np.array([0.0]), np.array([1]))[0] == 0.0


def test_fig2_png_linear_and_log(tmp_path):
    rows = fake_rows()
    check_png(plots_curves.accuracy_vs_compression(rows, tmp_path / "a.png"))
    check_png(plots_curves.accuracy_vs_compression(rows, tmp_path / "b.png", log_remaining=True))
    check_png(plots_curves.rank_vs_round(rows, tmp_path / "r.png"))
    assert (
        plots_curves.rank_vs_round(rows[rows.dictionary == "canonical"].assign(rank=None), tmp_path / "none.png")
        is None
    )


def test_kept_coordinates_and_basis_grid(tmp_path):
    rng = np.random.default_rng(0)
    maps = (rng.random((2, 3, 32, 32)) < 0.05).astype(float)
    w, h = check_png(plots_inputs.kept_coordinates(maps, tmp_path / "k.png", "kept", ["seed 0", "seed 1"]))
    assert w > h  # R, G, B and their sum side by side
    check_png(plots_inputs.kept_coordinates(maps[:, :1], tmp_path / "k1.png", "kept", ["seed 0", "seed 1"]))
    from glth_core.dictionaries.bottleneck import _dct_basis

    U = _dct_basis((3, 32, 32)).numpy()
    check_png(
        plots_inputs.dct_basis_grid(U, (3, 32, 32), tmp_path / "d.png", count=24, seed=0, kept=maps[0].reshape(-1) > 0)
    )


# -- `glth plot` on a real sweep -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plotted(paper_sweep):
    proc = glth_here(  # glth plot starts no Ray: in this process (cli.main, as the console script)
        "plot", paper_sweep["sweep_id"], "--out", "out", "--tracking-uri", paper_sweep["uri"], cwd=paper_sweep["cwd"]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_controls_run_and_are_separate_curves(paper_sweep):
    rows = paper_sweep["rows"]
    assert set(rows.control) == {"none", "random_mask", "reinit"}
    assert rows.groupby("control").trial_id.nunique().eq(6).all()  # 3 dictionaries × 2 seeds each
    summary = summarize(rows)
    assert len(summary.groupby(["dictionary", "control"])) == 9 and (summary.seeds == 2).all()
    # the random-mask control keeps IMP's density schedule but not its masks
    for d in ("canonical", "bottleneck-identity"):
        imp = rows[(rows.dictionary == d) & (rows.control == "none")].sort_values(["seed", "round"])
        rnd = rows[(rows.dictionary == d) & (rows.control == "random_mask")].sort_values(["seed", "round"])
        assert np.allclose(imp.density.to_numpy(), rnd.density.to_numpy())
    seeds = json.loads(rows[rows.control == "reinit"].config.iloc[0])["seeds"]
    assert seeds["reinit"] is not None
    # `glth run` printed them as curves of their own
    assert "[random_mask]" in paper_sweep["stdout"] and "[reinit]" in paper_sweep["stdout"]
    fig = plots_curves.accuracy_figure(rows)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    plt.close(fig)
    assert {"canonical [reinit]", "bottleneck-dct [random_mask]", "bottleneck-identity"} <= set(labels)


@pytest.mark.slow
def test_glth_plot_writes_the_figures(paper_sweep, plotted):
    plots_dir = paper_sweep["sweep_dir"] / "plots"
    names = {p.name for p in plots_dir.glob("*.png")}
    assert {
        "accuracy_vs_compression.png",
        "rank_vs_round.png",
        "dct_basis.png",
        "kept_inputs_bottleneck-identity.png",
        "kept_frequencies_bottleneck-dct.png",
    } <= names
    for p in plots_dir.glob("*.png"):
        check_png(p)
        assert f"plot: {p}" in plotted.stdout
    assert not list(plots_dir.glob(".*"))  # no temporary files left behind


@pytest.mark.slow
def test_plots_are_logged_to_the_parent_run(paper_sweep, plotted):
    client = MlflowClient(paper_sweep["uri"])
    exp = client.get_experiment_by_name("glth-paper-test")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`glth.role` = 'parent'")
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    local = {f"plots/{p.name}" for p in (paper_sweep["sweep_dir"] / "plots").glob("*.png")}
    assert local <= logged


@pytest.mark.slow
def test_plot_round_and_log_scale(paper_sweep):
    proc = glth_here(
        "plot",
        paper_sweep["sweep_id"],
        "--out",
        "out",
        "--round",
        "2",
        "--log-remaining",
        "--tracking-uri",
        paper_sweep["uri"],
        cwd=paper_sweep["cwd"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_png(paper_sweep["sweep_dir"] / "plots" / "accuracy_vs_remaining_log.png")
