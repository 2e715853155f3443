"""``glth schema``: the JSON Schema an editor checks a sweep YAML against. The example specs (profiles
included) validate against it with ``jsonschema``; bad specs fail it where the spec parser fails them,
and the dictionary specs are a union discriminated on ``kind`` with the kinds' declared values."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from glth_core import dictionaries
from orchestrator import spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "specs").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator():
    glth = Path(sys.executable).with_name("glth")
    out = subprocess.run([str(glth), "schema"], capture_output=True, text=True, check=True, timeout=120)
    schema = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_there_are_examples_of_every_kind():
    kinds = {yaml.safe_load(p.read_text()).get("kind", "imp") for p in EXAMPLES}
    assert kinds == {"imp", "strong", "construct"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_spec_validates(validator, path):
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


DEMO = yaml.safe_load((ROOT / "orchestrator" / "specs" / "demo.yaml").read_text())


def _with(**changes) -> dict:
    out = copy.deepcopy(DEMO)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


BAD = {
    "unknown dictionary kind": _with(dictionary={"kind": "wavelet"}),
    "unknown random method": _with(dictionary=[{"kind": "canonical"}, {"kind": "random", "method": "spiral"}]),
    "negative dictionary seed": _with(dictionary={"kind": "random", "seed": -1}),
    "unknown dictionary key": _with(dictionary={"kind": "canonical", "seed": 1}),
    "bottleneck without basis": _with(dictionary={"kind": "bottleneck", "layer": "1"}),
    "composite part tau out of range": _with(
        dictionary={"kind": "composite", "parts": [{"kind": "canonical", "tau": 1.5}]}
    ),
    "composite in a composite": _with(
        dictionary={"kind": "composite", "parts": [{"kind": "composite", "parts": [{"kind": "canonical"}]}]}
    ),
    "unknown top-level key": _with(epochs=3),
    "no seeds": _with(seeds=None),
    "imp without rounds": _with(rounds=None),
    "a strong spec with an imp key": _with(kind="strong", tau=None, rewind=None),  # rounds: imp only
    "unknown kind": _with(kind="lottery"),
    "train key misspelt": _with(train={"epoch": 3}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_specs_fail_the_schema_and_the_parser(validator, case):
    raw = BAD[case]
    assert list(validator.iter_errors(raw)), f"the schema accepts {case}"
    with pytest.raises(spec.SpecError) as e:
        spec.parse(yaml.safe_dump(raw))
    assert "\n" not in str(e.value)


def test_the_demo_itself_validates(validator):
    assert list(validator.iter_errors(DEMO)) == []


def test_dictionary_specs_are_discriminated_on_kind_with_declared_values(validator):
    defs = validator.schema["$defs"]
    random = next(d for name, d in defs.items() if name.startswith("RandomRotation") and name.endswith("Spec"))
    assert random["properties"]["kind"]["const"] == "random"
    assert random["properties"]["method"]["enum"] == list(dictionaries.KINDS["random"].FIELDS["method"].choices)
    assert random["additionalProperties"] is False
    unions = [d for d in defs.values() if "discriminator" in json.dumps(d)] + [validator.schema]
    mapping = next(m for m in _discriminators(unions) if "wavelet" not in m and "composite" in m)
    assert sorted(mapping) == sorted(dictionaries.KINDS)


def _discriminators(nodes):
    """Every ``discriminator.mapping`` found under ``nodes``."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("discriminator"), dict) and "mapping" in node["discriminator"]:
                yield node["discriminator"]["mapping"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def test_schema_written_to_a_file(tmp_path):
    glth = Path(sys.executable).with_name("glth")
    target = tmp_path / "glth-spec.schema.json"
    subprocess.run([str(glth), "schema", "-o", str(target)], check=True, timeout=120)
    assert json.loads(target.read_text())["title"] == "glth sweep spec"
