"""Every field of every kind's config (and of its nested TrainConfig) is a spec key: accepted with a
good value (which reaches the trial's config), refused with a bad one in one line naming it.

Numbers and booleans get their values from their type; every other field needs an entry in
``VALUES`` (a field added without one fails ``test_every_field_has_values``, on purpose).
"""

from __future__ import annotations

import dataclasses
import typing

import pytest

from glth_core import kinds
from glth_core.config import field_default, hints, nested_config
from orchestrator import spec
from orchestrator.spec.schema import kind_fields

#: field → (a good value, a bad value); for kind-specific meanings, "kind.field"
VALUES = {
    "model": ("lenet_300_100", "resnet9000"),
    "construct.model": ("mlp_500_nobias", "resnet9000"),
    "dictionary": ({"kind": "random", "method": "fast"}, {"kind": "wavelet"}),
    "rewind": ({"step": 2}, "sometimes"),
    "control": ("random_mask", "placebo"),
    "select": ("per_tensor", "everything"),
    "scores": ("fresh", "warm"),
    "densities": ([1.0, 0.25], [1.5]),
    "distribution": ("hyperbolic", "normal"),
    "optimizer": ("adam", "lbfgs"),
    "schedule": ("cosine", "exponential"),
    "precision": ("bf16", "fp16"),
    "milestones": ([0.3, 0.6], "soon"),
    "prune_rounding": ("ceil", "floor-ish"),
    "pruning": ("layerwise", "sometimes"),
    "layer_tau": ({"2.weight": 0.1}, {"2.weight": 1.5}),
    "rewind_norm": ("part", "sometimes"),
    "lmc_points": (11, 1),
    "init": ("signed_constant", "zeros-ish"),
    "signs": ("paired", "random"),
    "rounds": (3, "x"),
    "tau": (0.3, 1.5),
    "epsilon": (0.02, 2.0),
    "augment": ("crop_flip", "mixup"),
}
BASE = {
    "imp": "name: f\nseeds: [0]\nrounds: 2\ndataset: digits\n",
    "strong": "name: f\nkind: strong\nseeds: [0]\ndataset: digits\n",
    "construct": "name: f\nkind: construct\nseeds: [0]\ndataset: digits\nmodel: mlp_500_nobias\n",
}
SCALARS = (int, float, bool)


def _scalar(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if len(args) == 1 and args[0] in SCALARS else None


def _auto(hint, default):
    """(good, bad) for a number or a boolean field, from its type and default."""
    t = _scalar(hint)
    if t is bool:
        return (not default), "sometimes"
    if t is int:
        return (2 if default in (None, 0, 1) else default + 1), "x"
    if t is float:
        return (0.5 * default if default else 0.05), "x"
    return None


def _cases():
    out = []
    for kind, experiment in kinds.KINDS.items():
        types = hints(experiment.config_cls)
        defaults = {f.name: field_default(f) for f in dataclasses.fields(experiment.config_cls)}
        for name in kind_fields(kind):
            sub = nested_config(types[name])
            if sub is None:
                out.append((kind, name, types[name], defaults[name]))
                continue
            sub_types = hints(sub)
            for f in dataclasses.fields(sub):
                out.append((kind, f"{name}.{f.name}", sub_types[f.name], getattr(defaults[name], f.name)))
    return out


CASES = _cases()


def _values(kind, path, hint, default):
    leaf = path.split(".")[-1]
    return VALUES.get(f"{kind}.{path}") or VALUES.get(path) or VALUES.get(leaf) or _auto(hint, default)


def test_every_field_has_values():
    missing = [f"{k}.{p}" for k, p, h, d in CASES if _values(k, p, h, d) is None]
    assert not missing, f"give these fields a (good, bad) pair in VALUES: {missing}"


def _text(kind: str, path: str, value) -> str:
    import yaml

    head, _, leaf = path.rpartition(".")
    entry = {head: {leaf: value}} if head else {leaf: value}
    base = yaml.safe_load(BASE[kind])
    if path == "model" and kind == "construct":
        base.pop("model")
    return yaml.safe_dump({**base, **entry})


def _config_value(config, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("kind,path,hint,default", CASES, ids=[f"{k}.{p}" for k, p, _, _ in CASES])
def test_each_field_is_a_spec_key(kind, path, hint, default):
    good, bad = _values(kind, path, hint, default)
    sweep = spec.parse(_text(kind, path, good))
    value = _config_value(sweep.trials[0].config, path)
    expect = tuple(good) if isinstance(value, tuple) else good
    if path.endswith("dictionary"):
        value = {k: v for k, v in value.items() if k != "seed"}
    assert value == expect
    with pytest.raises(spec.SpecError) as e:
        spec.parse(_text(kind, path, bad))
    message = str(e.value)
    assert "\n" not in message and path.split(".")[-1] in message, message
