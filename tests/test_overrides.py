"""Command-line overrides: parse, apply, record, and `glth run SPEC PATH=VALUE …` end to end (no Ray)."""

from __future__ import annotations

import os

import pytest
import yaml

from orchestrator import cli, spec
from orchestrator.overrides import Override, OverrideError, apply, parse, record

RAW = {
    "name": "o",
    "tau": 0.2,
    "seeds": [0],
    "dictionary": [{"kind": "canonical"}, {"kind": "bottleneck", "layer": "1", "basis": "identity"}],
    "train": {"epochs": 1},
}

SPEC = """\
name: o
dataset: digits
model: mlp_300_100
dictionary:
  - {kind: canonical}
  - {kind: bottleneck, layer: "1", basis: identity}
tau: 0.2
seeds: [0]
rounds: 2
train: {epochs: 1}
"""


def test_parse_values():
    got = {
        o.key: o.value
        for o in parse(
            [
                "tau=0.1,0.2",
                "seeds=0-4",
                "train.epochs=3",
                "dictionary.0.basis=pca",
                "train.lr=1e-3",
                "control=none",
                "train.steps=null",
                "x=[1, 2]",
                "dictionary.1={kind: canonical}",
                "more=0-2,7",
                "name='a,b'",
                "flag=true",
            ]
        )
    }
    assert got == {
        "tau": [0.1, 0.2],
        "seeds": [0, 1, 2, 3, 4],
        "train.epochs": 3,
        "dictionary.0.basis": "pca",
        "train.lr": 0.001,
        "control": "none",
        "train.steps": None,
        "x": [1, 2],
        "dictionary.1": {"kind": "canonical"},
        "more": [0, 1, 2, 7],
        "name": "a,b",
        "flag": True,
    }
    (o,) = parse(["dictionary.0.basis=pca"])
    assert o.path == ("dictionary", 0, "basis") and str(o) == "dictionary.0.basis=pca"
    assert parse([]) == []


@pytest.mark.parametrize(
    "item,needle",
    [
        ("tau", "expected PATH=VALUE"),
        ("=3", "expected PATH=VALUE"),
        ("train..lr=1", "is not a key or a list index"),
        ("tau=", "no value"),
        ("0.basis=pca", "starts with a spec key"),
        ("seeds=4-0", "needs low ≤ high"),
        ("seeds=0-1000000", "needs low ≤ high"),
        ("tau=0.1,,0.2", "empty element"),
        ("x=[1,", "not a YAML list"),
        ("tau=0.1,[2]", "not a scalar"),
    ],
)
def test_bad_items_are_one_line_naming_the_item(item, needle):
    with pytest.raises(OverrideError) as e:
        parse(["seeds=0-1", item])
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and needle in msg and repr(item) in msg, msg


def test_apply_sets_paths_on_a_copy():
    out = apply(RAW, parse(["tau=0.1,0.2", "dictionary.1.basis=dct", "train.lr=0.5", "rewind=lr", "seeds=0-2"]))
    assert out["tau"] == [0.1, 0.2] and out["seeds"] == [0, 1, 2] and out["rewind"] == "lr"
    assert out["dictionary"][1] == {"kind": "bottleneck", "layer": "1", "basis": "dct"}
    assert out["dictionary"][0] == {"kind": "canonical"} and out["train"] == {"epochs": 1, "lr": 0.5}
    assert RAW["tau"] == 0.2 and RAW["dictionary"][1]["basis"] == "identity" and "lr" not in RAW["train"]
    # a later override of the same path wins; a missing mapping on the way is created
    assert apply(RAW, parse(["tau=0.3", "tau=0.4"]))["tau"] == 0.4
    assert apply({"name": "o"}, parse(["train.epochs=2"]))["train"] == {"epochs": 2}


def test_index_0_of_a_single_mapping_is_that_mapping():
    one = {"dictionary": {"kind": "canonical"}}
    assert apply(one, parse(["dictionary.0.kind=random"])) == {"dictionary": {"kind": "random"}}
    assert apply(one, parse(["dictionary.0={kind: dct}"])) == {"dictionary": {"kind": "dct"}}
    with pytest.raises(OverrideError, match=r"^dictionary\.1: the spec has 1 dictionary \(index 0\)$"):
        apply(one, parse(["dictionary.1.basis=pca"]))


@pytest.mark.parametrize(
    "item,message",
    [
        ("dictionary.3.basis=pca", "dictionary.3: the spec has 2 dictionaries (indices 0…1)"),
        ("seeds.1=4", "seeds.1: the spec has 1 seed (index 0)"),
        (
            "dictionary.basis=pca",
            "dictionary.basis: dictionary is a list of 2; index it first, e.g. dictionary.0.basis",
        ),
        ("tau.x=1", "tau.x: tau is 0.2, not a mapping"),
        ("train.epochs.0=1", "train.epochs.0: epochs is 1, not a list to index"),
    ],
)
def test_bad_paths_are_one_line_naming_the_field(item, message):
    with pytest.raises(OverrideError) as e:
        apply(RAW, parse([item]))
    assert str(e.value) == message


def test_record_appends_and_extends_one_line():
    items = ["tau=0.1,0.2", "seeds=0-4", "name=a: b # c", "dictionary.0={kind: canonical}"]
    text = record(SPEC, items)
    assert text.startswith(SPEC) and text.count("\n") == SPEC.count("\n") + 1
    assert yaml.safe_load(text)["overrides"] == items
    more = record(text, ["train.epochs=3"])
    assert yaml.safe_load(more)["overrides"] == [*items, "train.epochs=3"] and more.count("overrides:") == 1
    assert record(SPEC, []) == SPEC
    with pytest.raises(OverrideError, match="^overrides: must be a list"):
        record(SPEC + "overrides: tau=0.1\n", ["seeds=0-1"])
    with pytest.raises(OverrideError, match="must be one line"):
        record(SPEC + "overrides:\n  - tau=0.1\n", ["seeds=0-1"])


def test_recorded_text_applies_to_the_same_mapping():
    items = ["tau=0.1,0.2", "seeds=0-4", "dictionary.1.basis=dct"]
    raw = yaml.safe_load(record(SPEC, items))
    recorded = raw.pop("overrides")
    assert apply(raw, parse(recorded)) == apply(yaml.safe_load(SPEC), parse(items))
    assert all(isinstance(o, Override) for o in parse(recorded))


def test_spec_applies_overrides_and_parses_back_to_the_same_sweep():
    items = ["tau=0.1,0.2", "seeds=0-2", "dictionary.1.basis=dct"]
    sweep = spec.parse(SPEC, overrides=items)
    assert len(sweep.trials) == 2 * 2 * 3
    assert sweep.sweep_id != spec.parse(SPEC).sweep_id  # part of the sweep id
    again = spec.parse(sweep.text)  # what the sweep directory's spec.yaml holds
    assert again.sweep_id == sweep.sweep_id and [t.trial_id for t in again.trials] == [t.trial_id for t in sweep.trials]
    # a later run from that spec.yaml with one more override extends the record
    more = spec.parse(sweep.text, overrides=["tau=0.3"])
    assert len(more.trials) == 2 * 3 and yaml.safe_load(more.text)["overrides"] == [*items, "tau=0.3"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["tau"], "override 'tau': expected PATH=VALUE"),
        (["dictionary.3.basis=pca"], "dictionary.3: the spec has 2 dictionaries"),
        (["tau=2"], "tau"),  # validated like the YAML: τ above 1
        (["train.speed=3"], "train.speed: unknown key"),
        (["seeds=0,0"], "distinct"),
    ],
)
def test_cli_bad_override_exits_2_one_line_nothing_written(argv, message, tmp_path, capsys, monkeypatch):
    import ray

    (tmp_path / "spec.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", "spec.yaml", *argv, "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert err.startswith("glth: error: ")
    assert os.listdir(tmp_path) == ["spec.yaml"]
    assert not ray.is_initialized()


def test_cli_overrides_may_sit_between_options(tmp_path, capsys, monkeypatch):
    (tmp_path / "spec.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "spec.yaml", "tau=0.1,0.2", "--dry-run", "seeds=0-2"]) == 0
    out = capsys.readouterr().out
    assert "12 trials: 0 done, 0 partial, 12 pending" in out
    assert os.listdir(tmp_path) == ["spec.yaml"]
