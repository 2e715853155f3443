"""Bad input, tried systematically: hypothesis generates specs and ``glth run`` overrides (wrong
types, unknown keys, out-of-range values, empty and huge grids, unicode, deep nesting, arbitrary
text) from a valid spec, and every case must either validate or be refused with exit status 2 and
ONE line naming the field, with nothing written and no Ray started.

Most cases run ``glth run --dry-run`` in-process (``orchestrator.cli.main``: the validation every
run does before Ray starts, then the plan); a few run the real console script, where a refused
case runs without ``--dry-run`` (the refusal must come before Ray) and must say what the
in-process run said. Each test prints how many cases it tried. (tests/test_bad_input.py holds the
hand-written corpus; an ``@example`` below is a case the fuzzing found, kept as a regression.)
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator import cli
from orchestrator.spec import sweep_model

GLTH = str(Path(sys.executable).with_name("glth"))
BASE = {
    "name": "fuzz",
    "dataset": "digits",
    "model": "mlp_300_100",
    "dictionary": {"kind": "canonical"},
    "tau": 0.2,
    "seeds": [0],
    "rounds": 2,
    "train": {"epochs": 1},
}
MODEL = sweep_model("imp")
TOP = sorted(MODEL.model_fields)
NESTED = {
    "train": sorted(MODEL.model_fields["train"].annotation.model_fields),
    "dataset": ["name", "data_dir", "val_fraction", "split_seed"],
    "resources": ["cpu", "gpu"],
    "dictionary": ["kind", "method", "seed", "label", "layer", "scope", "per", "parts", "rank"],
    "rewind": ["step", "epoch", "lr_step", "lr_epoch"],
}
PATHS = [(k,) for k in TOP] + [(k, sub) for k, subs in NESTED.items() for sub in subs]
WORDS = [
    "canonical",
    "random",
    "pca",
    "digits",
    "mnist",
    "cifar10",
    "mlp_300_100",
    "lenet5",
    "adam",
    "sgd",
    "cosine",
    "init",
    "none",
    "layerwise",
    "cuda",
    "auto",
    "imp",
    "strong",
    "null",
    "nan",
    "1e-3",
    "0-4",
    "0.1,0.2",
    "",
    " ",
    "∞",
    "é",
    "名前",
    "\u202e",
    "a,b",
    "a/b",
    "../..",
    "{kind: pca}",
    "[0, 1]",
]


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` levels deep (``[[[…]]]`` or ``{a: {a: …}}``), written as YAML text."""

    depth: int
    mapping: bool = False

    def text(self) -> str:
        if self.mapping:
            return "{a: " * self.depth + "1" + "}" * self.depth
        return "[" * self.depth + "]" * self.depth


def yaml_text(value) -> str:
    """``value`` as YAML flow text (JSON-like, so any nesting and any unicode can be written)."""
    if isinstance(value, Deep):
        return value.text()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_text(k)}: {yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(yaml_text, value)) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)  # a double-quoted YAML scalar


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**80).map(lambda n: -n if n % 2 else n),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
values = st.one_of(
    st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(WORDS + [p[-1] for p in PATHS]) | st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=10,
    ),
    st.builds(Deep, st.integers(1, 3000), st.booleans()),
)
unknown_keys = st.text(min_size=1, max_size=10).filter(lambda k: k not in MODEL.model_fields)


@dataclass(frozen=True)
class Case:
    """A spec text, override items, and the fields a refusal may name (None: any field)."""

    what: str
    text: str
    items: tuple[str, ...] = ()
    fields: tuple[str, ...] | None = None


def spec_yaml(raw) -> str:
    if isinstance(raw, dict):
        return "".join(f"{yaml_text(k)}: {yaml_text(v)}\n" for k, v in raw.items())
    return yaml_text(raw) + "\n"


def _with(path: tuple, value) -> dict:
    raw = json.loads(json.dumps(BASE))
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
    node[path[-1]] = value
    return raw


@st.composite
def set_field(draw) -> Case:
    path = draw(st.sampled_from(PATHS) | unknown_keys.map(lambda k: (k,)))
    value = draw(values)
    fields = None if path[0] == "kind" else (str(path[0]),)  # another kind refuses the imp keys it lacks
    return Case("set", spec_yaml(_with(path, value)), fields=fields)


@st.composite
def drop_field(draw) -> Case:
    key = draw(st.sampled_from(sorted(BASE)))
    return Case("drop", spec_yaml({k: v for k, v in BASE.items() if k != key}), fields=(key,))


@st.composite
def grid(draw) -> Case:
    """Grid axes of 0 to many values, seeds as a range up to 10^5."""
    axes = draw(
        st.lists(
            st.sampled_from([("tau",), ("train", "lr"), ("rounds",), ("dictionary",), ("dataset",)]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    raw = json.loads(json.dumps(BASE))
    seeds = draw(st.sampled_from(["0", "0-3", "0-99999", "5-2", "0-2,7", "[]", "[0, 0]"]))
    for path in axes:
        n = draw(st.sampled_from([0, 1, 2, 3, 2000]))
        element = {
            "tau": st.floats(0.01, 0.99),
            "rounds": st.integers(1, 3),
            "dictionary": st.just({"kind": "canonical"}),
            "dataset": st.just("digits"),
            "lr": st.floats(1e-4, 1.0),
        }[path[-1]]
        if n > 3:  # a huge grid: 2000 values × 10 seeds, over the limit of trials (and cheap to refuse)
            axis, seeds = [0.01 + 0.98 * i / n for i in range(n)], "0-9"
        else:
            axis = draw(st.lists(element, min_size=n, max_size=n))
        raw = _with_from(raw, path, axis)
    return Case("grid", spec_yaml(raw), (f"seeds={seeds}",), fields=("grid", "seeds", *(p[0] for p in axes)))


def _with_from(raw: dict, path: tuple, value) -> dict:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return raw


override_values = st.one_of(
    values.map(yaml_text),
    st.text(max_size=15),
    st.sampled_from(WORDS),
    st.lists(st.sampled_from(["0.1", "x", "", "1e400", "-1", "0-3", "'q'", "[1]", "é"]), min_size=2, max_size=4).map(
        ",".join
    ),
    st.tuples(st.integers(-5, 10**6), st.integers(-5, 10**6)).map(lambda ab: f"{ab[0]}-{ab[1]}"),
)
override_paths = st.one_of(
    st.sampled_from(PATHS).map(".".join),
    st.text(max_size=10),
    st.tuples(
        st.sampled_from(["dictionary", "dataset", "seeds", "tau", "train"]),
        st.integers(0, 3),
        st.sampled_from(["kind", "basis", "x", "0"]),
    ).map(lambda t: ".".join(map(str, t))),
)
items = st.one_of(st.tuples(override_paths, override_values).map("=".join), st.text(max_size=20))


@st.composite
def overrides(draw) -> Case:
    got = draw(
        st.lists(items.filter(lambda s: not s.lstrip().startswith("-") and "\x00" not in s), min_size=1, max_size=3)
    )
    heads = tuple(i.partition("=")[0].strip().split(".")[0] for i in got)
    return Case("overrides", spec_yaml(BASE), tuple(got), fields=("override", *heads))


@st.composite
def any_text(draw) -> Case:
    text = draw(st.text(max_size=200) | values.map(spec_yaml))
    return Case("text", text.replace("\x00", ""))


cases = st.one_of(set_field(), drop_field(), grid(), overrides(), any_text())


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_in_process(case: Case, cwd: Path) -> tuple[int, str]:
    """(exit status, stderr) of ``glth run --dry-run`` on ``case``, asserting the rules."""
    (cwd / "spec.yaml").write_text(case.text)
    before = _listing(cwd)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["run", "spec.yaml", *case.items, "--dry-run", "--out", str(cwd / "out")])
    err = err.getvalue().strip()
    assert code in (0, 2), (code, err)
    assert _listing(cwd) == before, "something was written"
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    if code == 2:
        check_refusal(case, err)
    else:
        assert err == "" and "dry run: Ray not started" in out.getvalue(), err
    return code, err


def check_refusal(case: Case, err: str) -> None:
    """One line, naming the field: its first words are ``glth: error: <field>:`` or ``override '…'``."""
    assert err and len(err.splitlines()) == 1, err
    assert err.startswith("glth: error: "), err
    message = err.removeprefix("glth: error: ")
    head = message.split(":")[0]
    assert head and not head.startswith(" "), message
    assert not re.search(r"\b(dict|list)\[", head), f"pydantic's own location in {message!r}"
    if case.fields is not None and not message.startswith("spec: not valid YAML"):  # then no field can be read
        # an unprintable key (say an unassigned code point) is named quoted, as Python's repr writes it
        named = any(f and (f in message or repr(f) in message) for f in case.fields)
        assert named, f"{message!r} names none of {case.fields}"


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cwd"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def _set(path: tuple, value, fields: tuple) -> Case:
    return Case("set", spec_yaml(_with(path, value)), fields=fields)


def _override(*items: str) -> Case:
    return Case(
        "overrides", spec_yaml(BASE), items, fields=("override", *(i.split("=")[0].split(".")[0] for i in items))
    )


#: what the fuzzing found, each fixed (before: a traceback, a grid of no trials, or no field named)
FOUND = [
    _override("tau=" + "[" * 3000 + "]" * 3000),  # RecursionError from YAML
    _set(("seeds",), Deep(3000), ("seeds",)),  # the same in the spec's text
    _set(("kind",), ["imp"], ("kind",)),  # TypeError: unhashable type: 'list'
    _set(("dictionary", "kind"), ["canonical", "random"], ("dictionary",)),  # the same, without a field named
    _set(("tau",), [], ("tau",)),  # an empty axis: 0 trials, validated
    _override("train.lr=[]"),  # the same, nested
    _override("seeds=0-99999", "tau=0.1,0.2"),  # 200 000 trials, validated one by one for minutes
    _set(("tau",), [0.2, 0.2], ("tau",)),  # one trial id twice in the grid
    _override("dictionary=[{kind: random, seed: 0}, {kind: random}]"),  # the same, a default spelled out
    _set(("dictionary",), None, ("dictionary",)),  # named dictionary.dict[any,any]
    _set(("a\x0cb",), [], ("'a\\x0cb'",)),  # an unknown key with a form feed: two lines
    _set((" ",), None, ("' '",)),  # a blank unknown key: a message starting ' : unknown key'
    _set(("\ud7fc",), None, ("\ud7fc",)),  # an unassigned code point: named quoted, as repr writes it
    _set(("layer_tau",), [False], ("layer_tau",)),  # named layer_tau.list[nullable[dict[str,float]]]
]


def _examples(test):
    for case in FOUND:
        test = example(case)(test)
    return test


def test_bad_input_fuzz_in_process(cwd, capsys):
    tried: Counter = Counter()

    @settings(max_examples=75, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(cases)
    @_examples
    def check(case: Case):
        code, _ = run_in_process(case, cwd)
        tried[case.what] += 1
        tried["refused" if code == 2 else "validated"] += 1

    check()
    n = sum(v for k, v in tried.items() if k not in ("refused", "validated"))
    with capsys.disabled():
        print(f"\nbad-input fuzz, in process: {n} cases ({dict(tried)})")
    assert tried["refused"] > 0 and tried["validated"] > 0


@pytest.mark.slow
def test_bad_input_fuzz_console_script(cwd, capsys):
    """The real ``glth run`` on a few generated cases: the in-process outcome, nothing written,
    RAY_TMPDIR left empty (no Ray session)."""
    tried: Counter = Counter()

    @settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(cases)
    def check(case: Case):
        code, err = run_in_process(case, cwd)
        before = _listing(cwd)
        ray_tmp = tempfile.mkdtemp(prefix="glf-", dir="/tmp")
        argv = [GLTH, "run", "spec.yaml", *case.items, "--out", str(cwd / "out")]
        if code == 0:  # a valid spec: plan only (a real run would start Ray)
            argv.append("--dry-run")
        try:
            proc = subprocess.run(
                argv, cwd=cwd, env={**os.environ, "RAY_TMPDIR": ray_tmp}, capture_output=True, text=True, timeout=300
            )
            started = os.listdir(ray_tmp)
        finally:
            if not os.listdir(ray_tmp):
                os.rmdir(ray_tmp)
        assert (proc.returncode, proc.stderr.strip()) == (code, err)
        assert _listing(cwd) == before, "something was written"
        assert started == [], "Ray was started"
        tried["refused" if code == 2 else "validated"] += 1

    check()
    with capsys.disabled():
        print(f"\nbad-input fuzz, console script: {sum(tried.values())} cases ({dict(tried)})")
    assert sum(tried.values()) >= 5
