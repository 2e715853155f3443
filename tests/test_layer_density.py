"""Per-layer density: every round row's ``layer_density`` (the kept fraction of each parameter tensor,
as JSON) against independent counts, absent where a rotation mixes tensors; its column in the
Parquet schema; and the layerwise figures ``glth plot`` draws from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from glth_core import data as datasets
from glth_core import kinds
from glth_core.export import masked_model
from glth_core.imp import Trajectory
from glth_core.imp_kind import EXPERIMENT
from glth_core.layer_density import layer_density, mixing_part, tensor_segments
from glth_core.train import TrainConfig
from glth_core.trajectory import TrajectoryConfig

TRAIN = TrainConfig(epochs=1, batch_size=64, lr=0.05)
NAMES = ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"]


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _run(digits, rounds=3, **kw) -> Trajectory:
    cfg = TrajectoryConfig(**{**dict(dataset="digits", model="mlp_300_100", tau=0.5, rounds=rounds, train=TRAIN), **kw})
    traj = Trajectory(cfg, data=digits)
    traj.run()
    return traj


def _last(traj) -> dict:
    return json.loads(traj.state.records[-1]["layer_density"])


def test_canonical_density_is_the_nonzero_fraction_of_each_tensor(digits):
    traj = _run(digits)
    for record in traj.state.records:
        assert isinstance(record["layer_density"], str)
    got = _last(traj)
    net = masked_model(traj.model, traj.dictionary, traj.ticket)
    want = {n: float((p.detach().numpy() != 0).mean()) for n, p in net.named_parameters()}
    assert list(got) == NAMES and got == pytest.approx(want, abs=1e-12)
    sizes = np.array([p.numel() for _, p in net.named_parameters()])
    assert float(np.dot(list(got.values()), sizes) / sizes.sum()) == pytest.approx(traj.state.records[-1]["density"])
    assert json.loads(traj.state.records[0]["layer_density"]) == dict.fromkeys(NAMES, 1.0)


def test_bottleneck_density_counts_its_columns_and_free_tensors_are_dense(digits):
    traj = _run(digits, dictionary={"kind": "bottleneck", "layer": "1", "basis": "dct"})
    got, record = _last(traj), traj.state.records[-1]
    assert got == {"1.weight": record["rank"] / 64, **dict.fromkeys(NAMES[1:], 1.0)}


def test_channels_out_keeps_weight_and_bias_of_the_same_units(digits):
    traj = _run(digits, dictionary={"kind": "channels", "layer": "3", "per": "out"})
    got, units = _last(traj), traj.state.records[-1]["rank"]
    assert got["3.weight"] == got["3.bias"] == units / 100
    assert {got[n] for n in ("1.weight", "1.bias", "5.weight", "5.bias")} == {1.0}


def test_rotations_over_several_tensors_are_absent_not_invented(digits):
    assert _last(_run(digits, rounds=2, dictionary={"kind": "random", "method": "fast"})) == {}
    one = _run(digits, rounds=2, dictionary={"kind": "random", "method": "fast", "scope": ["3.weight"]})
    got = _last(one)
    assert got == {**dict.fromkeys(NAMES, 1.0), "3.weight": pytest.approx(one.state.records[-1]["density"])}
    two = _run(digits, rounds=2, dictionary={"kind": "random", "scope": ["1.weight", "3.weight"]})
    assert _last(two) == dict.fromkeys(["1.bias", "3.bias", "5.weight", "5.bias"], 1.0)


def test_composite_is_read_part_by_part(digits):
    spec = {"kind": "composite", "parts": [{"kind": "random", "scope": ["1.*"]}, {"kind": "canonical"}]}
    traj = _run(digits, dictionary=spec)
    got = _last(traj)
    assert "1.weight" not in got and "1.bias" not in got
    segments = tensor_segments(traj.dictionary)
    assert segments["1.weight"] is None and segments["1.bias"] is None
    mask = traj.ticket.mask
    for name in NAMES[2:]:
        lo, hi = segments[name]
        assert got[name] == int(mask[lo:hi].sum()) / (hi - lo)
    assert mixing_part(spec, traj.model) == "part 0 (kind random) mixes its 2 scope tensors"
    assert (
        mixing_part(
            {
                "kind": "composite",
                "parts": [{"kind": "bottleneck", "layer": "1", "basis": "dct"}, {"kind": "canonical"}],
            },
            traj.model,
        )
        is None
    )


def test_layer_density_of_a_hand_made_mask():
    from glth_core import dictionaries, models

    net = models.build("mlp_300_100", (1, 8, 8), 10)
    d = dictionaries.build({"kind": "canonical", "scope": ["3.weight", "5.weight"]}, net)
    mask = torch.zeros(d.size, dtype=torch.bool)
    mask[:7500] = True  # a quarter of 3.weight (30,000), none of 5.weight
    assert layer_density(d, mask, net) == {
        "1.weight": 1.0,
        "1.bias": 1.0,
        "3.weight": 0.25,
        "3.bias": 1.0,
        "5.weight": 0.0,
        "5.bias": 1.0,
    }


def test_the_columns_are_declared_and_typed_in_parquet():
    from orchestrator.sinks import parquet

    for name, t in {
        "layer_density": str,
        "flops": int,
        "flops_dense": int,
        "lmc_barrier_test": float,
        "lmc_barrier_train": float,
        "lmc_seconds": float,
    }.items():
        assert EXPERIMENT.columns[name] is t and kinds.columns()[name] is t
    assert str(parquet.SCHEMA.field("layer_density").type) == "string"
    assert str(parquet.SCHEMA.field("flops").type) == "int64"
    assert str(parquet.SCHEMA.field("lmc_barrier_test").type) == "double"


# -- figures ---------------------------------------------------------------------------------------
def _rows(digits, tmp_path) -> pd.DataFrame:
    """Rows as the sweep writes them (describe columns, config JSON, status) for two dictionaries."""
    frames = []
    for spec in ({"kind": "canonical"}, {"kind": "bottleneck", "layer": "1", "basis": "dct"}):
        for seed in (0, 1):
            cfg = TrajectoryConfig(
                dataset="digits", dictionary=spec, tau=0.5, rounds=3, seed=seed, train=TRAIN, lmc_points=3
            )
            traj = Trajectory(cfg, data=digits)
            extra = {
                **EXPERIMENT.describe(cfg),
                "seed": seed,
                "status": "ok",
                "trial_id": cfg.content_hash(),
                "kind": "imp",
                "dataset": "digits",
                "model": cfg.model,
                "config": json.dumps(cfg.to_dict()),
            }
            frames += [{**r, **extra} for r in traj.run()]
    return pd.DataFrame(frames)


def test_plot_sweep_draws_layer_density_flops_and_lmc(digits, tmp_path):
    from orchestrator import plots
    from orchestrator.layout import SweepDir
    from orchestrator.plots_layers import layer_densities, plot_layers

    rows = _rows(digits, tmp_path)
    curve = rows[rows.dictionary == "canonical"]
    table = layer_densities(curve)
    assert list(table.columns) == NAMES and list(table.index) == [0, 1, 2]
    by_hand = np.mean([json.loads(s)["3.weight"] for s in curve[curve["round"] == 2]["layer_density"]])
    assert table.loc[2, "3.weight"] == pytest.approx(by_hand)
    written = plots.plot_sweep(rows, SweepDir.at(tmp_path / "sweep"), out_dir=tmp_path / "plots")
    names = {p.name for p in written}
    assert {"layer_density.png", "flops_vs_compression.png", "lmc_barrier.png"} <= names
    for name in ("layer_density.png", "flops_vs_compression.png", "lmc_barrier.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    old = rows.drop(columns=["layer_density", "flops", "flops_dense", "lmc_barrier_test", "lmc_barrier_train"])
    assert plot_layers(old, tmp_path / "none") == []  # rows from before these columns: nothing drawn
