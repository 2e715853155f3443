"""Spec profiles: `profiles: {NAME: {...}}` deep-merged over the spec by `glth run --profile NAME`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import spec

REPO = Path(__file__).resolve().parents[1]
GLTH = str(Path(sys.executable).with_name("glth"))

TEXT = """
name: prof
dataset: digits
model: mlp_300_100
dictionary: [{kind: canonical}, {kind: bottleneck, layer: "1", basis: identity}]
seeds: [0, 1, 2]
rounds: 10
train: {epochs: 5, lr: 0.05, batch_size: 64}
profiles:
  quick: {train: {epochs: 1}, seeds: [0, 1], rounds: 3}
  only_id: {dictionary: {kind: bottleneck, layer: "1", basis: identity}}
"""


def test_profile_deep_merges_over_the_spec():
    base, quick = spec.parse(TEXT), spec.parse(TEXT, profile="quick")
    assert base.profile is None and len(base.trials) == 6 and base.spec.rounds == 10
    assert quick.profile == "quick" and len(quick.trials) == 4 and quick.spec.rounds == 3
    t = quick.trials[0].config.train
    assert (t.epochs, t.lr, t.batch_size) == (1, 0.05, 64)  # train merged key by key
    only = spec.parse(TEXT, profile="only_id")
    assert len(only.trials) == 3  # a list (here: a mapping) replaces the spec's value


def test_profile_is_in_the_sweep_id_and_the_saved_text():
    base, quick = spec.parse(TEXT), spec.parse(TEXT, profile="quick")
    assert base.sweep_id.startswith("prof-") and quick.sweep_id.startswith("prof-quick-")
    assert "profile: quick" in quick.text
    again = spec.parse(quick.text)  # what the sweep directory's spec.yaml holds parses back the same
    assert again.sweep_id == quick.sweep_id and again.profile == "quick"
    switched = spec.parse(quick.text, profile="only_id")
    assert switched.profile == "only_id" and switched.text.count("profile:") == 1


def test_unknown_profile_is_one_line_naming_the_allowed():
    with pytest.raises(spec.SpecError) as e:
        spec.parse(TEXT, profile="full")
    assert str(e.value) == "profile: 'full' is not one of quick, only_id"
    with pytest.raises(spec.SpecError, match="spec has no profiles"):
        spec.parse(TEXT.split("profiles:")[0], profile="quick")
    with pytest.raises(spec.SpecError, match="profiles: must map"):
        spec.parse(TEXT.split("profiles:")[0] + "profiles: [quick]\n")


def test_profile_keys_are_validated_like_the_spec():
    with pytest.raises(spec.SpecError, match="rounds"):
        spec.parse(TEXT + "  bad: {rounds: 0}\n", profile="bad")


def test_cli_unknown_profile_exits_2(tmp_path):
    (tmp_path / "s.yaml").write_text(TEXT)
    proc = subprocess.run(
        [GLTH, "run", "s.yaml", "--profile", "nope", "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "glth: error: profile: 'nope' is not one of quick, only_id"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["fig2_left", "fig2_right"])
def test_example_specs_and_their_profiles_parse(name, cifar10_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # data_dir is relative to the repository
    path = REPO / "examples" / "specs" / f"{name}.yaml"
    full, quick = spec.load(path, profile="full"), spec.load(path, profile="quick")
    assert len(quick.trials) <= len(full.trials)
    assert {t.config.model for t in full.trials} == {"cnn_paper" if name == "fig2_left" else "mlp_300_100"}
    assert all(t.config.dataset == "cifar10" for t in full.trials)


def test_strong_ticket_example_specs_parse(mnist_dir, monkeypatch):
    monkeypatch.chdir(REPO)
    strong = spec.load(REPO / "examples" / "specs" / "strong_digits.yaml")
    assert {t.kind for t in strong.trials} == {"strong"} and len(strong.trials) == 4 * 2  # dictionaries × seeds
    assert {t.config.densities for t in strong.trials} == {(1.0, 0.5, 0.3, 0.1)}
    assert {(t.config.select, t.config.scores, t.config.init) for t in strong.trials} == {
        ("global", "fresh", "default")
    }
    anchor = spec.load(
        REPO / "examples" / "specs" / "strong_digits.yaml", profile="anchor"
    )  # hidden-networks' settings
    assert len(anchor.trials) == 2 and {(t.config.select, t.config.scores, t.config.init) for t in anchor.trials} == {
        ("per_layer", "fresh", "signed_constant")
    }
    assert {t.config.dictionary["scope"] for t in anchor.trials} == {"weights"}
    construct = spec.load(REPO / "examples" / "specs" / "construct_mnist.yaml")
    assert {t.kind for t in construct.trials} == {"construct"} and len(
        construct.trials
    ) == 4 * 2 * 2  # n × distribution × signs
    assert {(t.config.n, t.config.distribution, t.config.signs) for t in construct.trials} == {
        (n, d, s) for n in (6, 12, 15, 21) for d in ("uniform", "hyperbolic") for s in ("iid", "paired")
    }
