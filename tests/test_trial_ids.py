"""Trial ids are pinned: they name Parquet files, MLflow runs and the dedupe key of every stored
sweep, so a refactor must never change them silently (as open_lth's lottery/test/test_desc.py).

They changed once, in issue #10 (the hash now covers the kind and only the fields away from their
defaults). A default is part of what an id means, so the defaults are pinned too: changing one
changes what every stored trial with that default computed, and must be a deliberate edit here.
"""

from __future__ import annotations

import dataclasses

import pytest

from glth_core.config import Config
from glth_core.imp import TrajectoryConfig
from glth_core.strong.construct_run import ConstructConfig
from glth_core.strong.edge_popup import StrongConfig
from glth_core.train import TrainConfig

PINNED = {
    "b2567f559249": TrajectoryConfig(),
    "15268a8458a4": TrajectoryConfig(dictionary={"kind": "bottleneck", "layer": "1", "basis": "dct"}, tau=0.5, rounds=5,
                                     seed=1, train=TrainConfig(epochs=2, lr=0.02)),
    "f2731a15cabc": TrajectoryConfig(model="cnn_paper", dictionary={"kind": "random", "method": "fast"}, control="reinit",
                                     rewind={"step": 3}, seed=2),
    "5fb955c3923a": StrongConfig(),
    "894ee1245f02": StrongConfig(dictionary={"kind": "random"}, densities=(1.0, 0.5), select="per_tensor", seed=3),
    "265fa2aaa2cf": ConstructConfig(),
    "bf2e92475659": ConstructConfig(epsilon=0.02, n=12, distribution="hyperbolic", seed=1),
}


@pytest.mark.parametrize("trial_id", sorted(PINNED))
def test_trial_id_is_pinned(trial_id):
    assert PINNED[trial_id].content_hash() == trial_id


#: the defaults every pinned id was made with (new fields may be added; these may not change)
DEFAULTS = {
    TrainConfig: {"epochs": 1, "steps": None, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                  "weight_decay": 0.0, "schedule": "constant", "milestones": [0.5, 0.75], "gamma": 0.1,
                  "eval_batch_size": 2048, "precision": "fp32", "channels_last": False},
    TrajectoryConfig: {"dataset": "digits", "data_dir": None, "model": "mlp_300_100", "dictionary": {"kind": "canonical"},
                       "tau": 0.2, "rounds": 8, "seed": 0, "rewind": "init", "val_fraction": 0.1, "split_seed": 0,
                       "control": "none"},
    StrongConfig: {"dataset": "digits", "data_dir": None, "model": "mlp_300_100", "dictionary": {"kind": "canonical"},
                   "densities": [1.0, 0.5, 0.3, 0.1], "select": "global", "seed": 0, "val_fraction": 0.1,
                   "split_seed": 0},
    ConstructConfig: {"dataset": "mnist", "data_dir": None, "model": "mlp_500_nobias", "epsilon": 0.01, "n": None,
                      "c": 3.0, "distribution": "uniform", "seed": 0, "val_fraction": 0.1, "split_seed": 0},
}


@pytest.mark.parametrize("config_cls", list(DEFAULTS), ids=lambda c: c.__name__)
def test_defaults_are_pinned(config_cls):
    current = config_cls().to_dict()
    changed = {k: (v, current.get(k)) for k, v in DEFAULTS[config_cls].items() if current.get(k) != v}
    assert not changed, f"defaults changed (pinned, current): {changed}"


def test_identity_leaves_out_defaults_and_where_it_runs():
    assert TrajectoryConfig().identity() == {}
    assert TrajectoryConfig(device="cuda").content_hash() == TrajectoryConfig().content_hash()
    assert TrajectoryConfig(tau=0.2).content_hash() == TrajectoryConfig().content_hash()  # 0.2 is the default
    assert TrajectoryConfig(train=TrainConfig(precision="bf16")).identity() == {"train": {"precision": "bf16"}}


def test_the_kind_is_in_the_hash():
    ids = {TrajectoryConfig().content_hash(), StrongConfig().content_hash(), ConstructConfig().content_hash()}
    assert len(ids) == 3
    shared = {f.name for f in dataclasses.fields(TrajectoryConfig)} & {f.name for f in dataclasses.fields(StrongConfig)}
    same = {k: getattr(TrajectoryConfig(), k) for k in shared}
    assert TrajectoryConfig(**same).content_hash() != StrongConfig(**same).content_hash()


@pytest.mark.parametrize("config", list(PINNED.values()), ids=list(PINNED))
def test_configs_roundtrip_through_their_dict(config: Config):
    again = type(config).from_dict(config.to_dict())
    assert again.content_hash() == config.content_hash() and again.seeds() == config.seeds()


def test_an_unknown_key_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^train\.speed: unknown key; allowed: epochs, "):
        TrajectoryConfig.from_dict({"train": {"speed": 3}})
