"""Command-line overrides of a sweep spec: ``glth run SPEC tau=0.1,0.2 seeds=0-4 train.epochs=3``.

An item is ``PATH=VALUE``:
- ``PATH`` is dotted; a part made of digits indexes a list (``dictionary.0.basis=pca``); index 0 of
  a key that holds one mapping instead of a list is that mapping;
- ``VALUE`` is a YAML scalar (``3``, ``0.1``, ``1e-3``, ``pca``, ``null``, ``true``), a YAML flow
  list or mapping (``[0, 1]``, ``{kind: pca}``), or comma-separated scalars (``0.1,0.2``), which is
  a list, so a grid axis; ``A-B`` (integers, A ≤ B) is the range A … B (``seeds=0-4``), also
  inside a comma list (``seeds=0-2,7``); a quoted value is one string (``name='a,b'``).

``parse`` checks the syntax, ``apply`` puts the values into the raw spec mapping (what the YAML
loaded to; the spec's own validation then judges them like any other key), and ``record`` writes
them into the spec text as an ``overrides:`` key, so the sweep directory's spec.yaml parses back
to the same sweep. Every problem is an ``OverrideError``: one line naming the item or the field.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator.yaml_depth import MAX_DEPTH, too_deep

KEY = "overrides"
_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$|^\d+$")
_RANGE = re.compile(r"^(\d+)-(\d+)$")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")  # 1e-3: YAML 1.1 reads it as a string
_MAX_RANGE = 100_000


class OverrideError(ValueError):
    """A bad override: ``str(e)`` is one line naming the item or the field."""


@dataclass(frozen=True)
class Override:
    path: tuple[str | int, ...]
    value: Any
    text: str  # the item as given, recorded in spec.yaml

    @property
    def key(self) -> str:
        return ".".join(map(str, self.path))

    def __str__(self) -> str:
        return self.text


# -- parse ----------------------------------------------------------------------------------
def parse(items: Iterable[str]) -> list[Override]:
    """``PATH=VALUE`` items → Overrides, in order (a later one on the same path wins)."""
    return [_parse_item(str(item)) for item in items]


def _parse_item(item: str) -> Override:
    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise OverrideError(f"override {item!r}: expected PATH=VALUE, e.g. tau=0.1,0.2 seeds=0-4 train.epochs=3")
    parts = key.split(".")
    bad = next((p for p in parts if not _PART.match(p)), None)
    if bad is not None:
        raise OverrideError(
            f"override {item!r}: {bad!r} is not a key or a list index (path parts are names or 0, 1, …)"
        )
    text = text.strip()
    if not text:
        raise OverrideError(f"override {item!r}: no value (write null for none)")
    path = tuple(int(p) if p.isdigit() else p for p in parts)
    if isinstance(path[0], int):
        raise OverrideError(f"override {item!r}: a path starts with a spec key, not an index")
    return Override(path, _value(item, text), item)


def _value(item: str, text: str) -> Any:
    if text[0] in "[{'\"":  # a YAML flow list or mapping, or a quoted string, taken whole
        try:
            if too_deep(text):
                raise OverrideError(f"override {item[:40]!r}…: nested more than {MAX_DEPTH} levels deep")
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise OverrideError(
                f"override {item!r}: not a YAML list, mapping or quoted string ({str(e).splitlines()[0]})"
            ) from None
        except RecursionError:
            raise OverrideError(f"override {item[:40]!r}…: nested too deeply") from None
    pieces = [p.strip() for p in text.split(",")]
    if any(not p for p in pieces):
        raise OverrideError(f"override {item!r}: an empty element in a comma list")
    values: list = []
    for piece in pieces:
        m = _RANGE.match(piece)
        if m:
            lo, hi = int(m[1]), int(m[2])
            if lo > hi or hi - lo >= _MAX_RANGE:
                raise OverrideError(
                    f"override {item!r}: the range {piece} needs low ≤ high (and under {_MAX_RANGE} values)"
                )
            values.extend(range(lo, hi + 1))
        else:
            values.append(_scalar(item, piece))
    if len(pieces) == 1 and not _RANGE.match(pieces[0]):
        return values[0]
    return values


def _scalar(item: str, piece: str) -> Any:
    if _FLOAT.match(piece):
        return float(piece)
    try:
        value = yaml.safe_load(piece)
    except yaml.YAMLError as e:
        raise OverrideError(f"override {item!r}: {piece!r} is not a YAML scalar ({str(e).splitlines()[0]})") from None
    if isinstance(value, (dict, list)):
        raise OverrideError(f"override {item!r}: {piece!r} is not a scalar (write a list as [a, b] or a,b)")
    return value


# -- apply ----------------------------------------------------------------------------------
def _plural(key: str, n: int) -> str:
    if n == 1:
        return key[:-1] if key.endswith("s") else key
    return key[:-1] + "ies" if key.endswith("y") else key if key.endswith("s") else key + "s"


def apply(raw: dict, overrides: Iterable[Override]) -> dict:
    """A new spec mapping with each override set in turn; ``raw`` is left as it was.

    Missing mapping keys on the way are created (the spec's validation then judges them); a list
    index past the end or a path through a scalar is an OverrideError naming the field.
    """
    out = copy.deepcopy(raw)
    for o in overrides:
        _set(out, o)
    return out


def _set(root: dict, o: Override) -> None:
    node: Any = root
    parent: Any = None  # the container holding ``node``, and its key there
    slot: str | int | None = None
    for i, part in enumerate(o.path):
        last = i == len(o.path) - 1
        here = ".".join(map(str, o.path[: i + 1]))
        owner = str(o.path[i - 1]) if i else "spec"
        if isinstance(part, int) and isinstance(node, dict) and part == 0 and parent is not None:
            # a key holding one mapping is a list of one: dictionary.0 of `dictionary: {kind: …}`
            if last:
                parent[slot] = o.value
            continue
        if isinstance(part, int):
            if isinstance(node, dict) and parent is not None:
                raise OverrideError(f"{here}: the spec has 1 {owner} (index 0)")
            if not isinstance(node, list):
                raise OverrideError(f"{here}: {owner} is {_describe(node)}, not a list to index")
            if part >= len(node):
                where = {0: "", 1: " (index 0)"}.get(len(node), f" (indices 0…{len(node) - 1})")
                raise OverrideError(f"{here}: the spec has {len(node)} {_plural(owner, len(node))}{where}")
        elif isinstance(node, list):
            raise OverrideError(f"{here}: {owner} is a list of {len(node)}; index it first, e.g. {owner}.0.{part}")
        elif not isinstance(node, dict):
            raise OverrideError(f"{here}: {owner} is {_describe(node)}, not a mapping")
        if last:
            node[part] = o.value
            return
        if isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        parent, slot, node = node, part, node[part]


def _describe(node: Any) -> str:
    return f"{node!r}" if isinstance(node, (int, float, str, bool)) or node is None else type(node).__name__


# -- record ---------------------------------------------------------------------------------
_KEY_LINE = re.compile(rf"^{KEY}:.*$", re.M)


def record(text: str, items: Iterable[str | Override]) -> str:
    """The spec text with the items appended to its ``overrides:`` list (one flow-style line,
    added at the end, or the spec's own one-line ``overrides: [...]`` extended)."""
    items = [str(i) for i in items]
    if not items:
        return text
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise OverrideError(f"spec: not valid YAML ({str(e).splitlines()[0]})") from None
    before = raw.get(KEY) if isinstance(raw, dict) else None
    if before is not None and (not isinstance(before, list) or not all(isinstance(i, str) for i in before)):
        raise OverrideError(f"{KEY}: must be a list of PATH=VALUE strings (got {before!r})")
    line = f"{KEY}: {yaml.safe_dump([*(before or []), *items], default_flow_style=True, width=10**9).strip()}"
    if before is None:
        return f"{text.rstrip()}\n{line}\n"
    lines = _KEY_LINE.findall(text)
    if len(lines) != 1 or yaml.safe_load(lines[0]).get(KEY) != before:
        raise OverrideError(f"{KEY}: the spec's own {KEY}: key must be one line, e.g. {KEY}: [tau=0.1], to add more")
    return _KEY_LINE.sub(lambda _: line, text, count=1)
