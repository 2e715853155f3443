"""Every example spec under examples/specs parses, with every one of its profiles, into the trials it
promises; the examples of issue 13 (LMC with late rewinding, norm-preserving rewind, conv
dictionaries, composite edge-popup) are checked for what they are about, and their quick profiles
for staying CPU-sized."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from glth_core import data as datasets
from glth_core.rewind import rewind_step
from orchestrator import spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples" / "specs").glob("*.yaml"))
#: training images an epoch reads, by dataset, after the default 10% validation split
TRAIN_IMAGES = {"digits": 1293, "mnist": 54000, "fashion_mnist": 54000, "cifar10": 45000}
#: a quick profile trains at most this many image-passes in all (≈ 10 CIFAR epochs of cnn_paper:
#: minutes on two CPU cores)
QUICK_BUDGET = 500_000


def _cases():
    out = []
    for path in EXAMPLES:
        profiles = (yaml.safe_load(path.read_text()) or {}).get("profiles") or {}
        out += [(path, None)] + [(path, p) for p in profiles]
    return out


def _load(path: Path, profile: str | None, monkeypatch):
    monkeypatch.chdir(REPO)  # data_dir is relative to where glth runs: the repository root
    try:
        return spec.load(path, profile=profile)
    except spec.SpecError as e:
        if "not found" in str(e) or "no such" in str(e).lower():
            pytest.skip(f"{path.name} [{profile}]: its data is not here ({e})")
        raise


@pytest.mark.parametrize("path,profile", _cases(), ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_every_example_parses_with_every_profile(path, profile, monkeypatch):
    sweep = _load(path, profile, monkeypatch)
    assert sweep.trials and sweep.rounds >= 1
    assert sweep.profile == profile
    assert len({t.trial_id for t in sweep.trials}) == len(sweep.trials)
    for trial in sweep.trials:  # late rewinding must fall inside a round (checked only at run time otherwise)
        c = trial.config
        if isinstance(getattr(c, "rewind", None), dict):
            n = TRAIN_IMAGES[c.dataset]
            assert rewind_step(c.rewind, c.train, n) < c.train.total_steps(n)


def _trainings(config) -> int:
    """Trainings per round: the ticket's, the reinit control's, the two LMC copies."""
    return 1 + (getattr(config, "control", "none") == "reinit") + 2 * bool(getattr(config, "lmc_points", 0))


NEW = ["lmc_rewind", "norm_rewind", "conv_dictionaries", "strong_composite", "lth_resnet20", "lth_vgg16"]


@pytest.mark.parametrize("name", NEW)
def test_quick_profiles_are_cpu_sized(name, monkeypatch):
    sweep = _load(REPO / "examples" / "specs" / f"{name}.yaml", "quick", monkeypatch)
    assert sweep.spec.device == "cpu" and len(sweep.trials) <= 10
    passes = 0
    for t in sweep.trials:
        c = t.config
        n = TRAIN_IMAGES[c.dataset]
        passes += t.rows_expected * _trainings(c) * c.train.total_steps(n) * min(c.train.batch_size, n)
    assert passes <= QUICK_BUDGET, passes


def test_lmc_example_sweeps_late_rewinding_with_lmc(monkeypatch):
    path = REPO / "examples" / "specs" / "lmc_rewind.yaml"
    for profile in (None, "quick"):
        trials = _load(path, profile, monkeypatch).trials
        assert {tuple(t.config.rewind.items()) for t in trials} == {(("step", 0),), (("step", 10),), (("step", 50),)}
        assert {t.config.lmc_points for t in trials} <= {5, 11} and all(t.config.lmc_points >= 3 for t in trials)
        kinds = {t.config.dictionary["kind"] for t in trials}
        assert kinds == {"canonical", "random", "bottleneck"}
    assert {t.config.dataset for t in _load(path, None, monkeypatch).trials} == {"cifar10"}


def test_norm_example_runs_random_fast_with_and_without(monkeypatch):
    path = REPO / "examples" / "specs" / "norm_rewind.yaml"
    full = _load(path, None, monkeypatch).trials
    assert {(t.config.dictionary["kind"], t.config.rewind_norm) for t in full} == {
        ("random", "none"),
        ("random", "part"),
        ("canonical", "none"),
        ("canonical", "part"),
    }
    assert {t.config.model for t in full} == {"cnn_paper"}
    quick = _load(path, "quick", monkeypatch).trials
    assert sorted((t.config.dictionary["method"], t.config.rewind_norm) for t in quick) == [
        ("fast", "none"),
        ("fast", "part"),
    ]
    assert sorted(t.describe["dictionary"] for t in quick) == ["random-fast", "random-fast-normpart"]


def test_conv_example_compares_three_dictionaries_on_conv2_and_conv4(monkeypatch):
    path = REPO / "examples" / "specs" / "conv_dictionaries.yaml"
    for profile in (None, "quick"):
        trials = _load(path, profile, monkeypatch).trials
        labels = {(t.config.model, t.describe["dictionary"]) for t in trials}
        assert labels == {(m, d) for m in ("conv2", "conv4") for d in ("canonical", "channels-in", "bottleneck-dct")}


def test_strong_composite_example_searches_the_input_bottleneck_with_canonical_elsewhere(monkeypatch):
    path = REPO / "examples" / "specs" / "strong_composite.yaml"
    trials = _load(path, "quick", monkeypatch).trials
    assert {t.kind for t in trials} == {"strong"}
    labels = {t.describe["dictionary"] for t in trials}
    assert labels == {"canonical", "bottleneck-dct", "composite-bottleneck-dct+canonical"}
    datasets.check("digits")


@pytest.mark.parametrize("name,model", [("lth_resnet20", "cifar_resnet_20"), ("lth_vgg16", "cifar_vgg_16")])
def test_lth_recipes_full_profile_is_open_lths_recipe(name, model, monkeypatch):
    """open_lth's default_hparams for cifar_resnet_20 / cifar_vgg_16, in glth's fields, with the three
    rewinding modes, canonical plus another dictionary and the controls, 3 seeds."""
    trials = _load(REPO / "examples" / "specs" / f"{name}.yaml", "full", monkeypatch).trials
    configs = [t.config for t in trials]
    for c in configs:
        t = c.train
        assert (c.model, t.optimizer, t.lr, t.momentum, t.weight_decay, t.batch_size) == (
            model,
            "sgd",
            0.1,
            0.9,
            1e-4,
            128,
        )
        assert (t.epochs, t.steps, t.schedule, tuple(t.milestones), t.gamma) == (160, None, "step", (0.5, 0.75), 0.1)
        assert t.augment == "crop_flip" and c.tau == 0.2 and c.pruning == "global"
        assert c.dictionary.get("scope") == "weights_but_output"
    assert {c.seed for c in configs} == {0, 1, 2}
    assert {str(c.rewind) for c in configs} == {"init", "lr", "{'step': 2000}"}
    assert {c.control for c in configs} == {"none", "random_mask", "reinit"}
    kinds = {c.dictionary["kind"] for c in configs}
    assert "canonical" in kinds and len(kinds) >= 2
