"""How deeply a YAML text nests lists and mappings, read from its event stream (no recursion).

PyYAML's composer recurses once per level, so whether it runs out of stack on a deeply nested text
depends on the interpreter's recursion limit (a test runner raises it): the same spec would be
refused one way in one process and another way in the next. The spec and the command-line
overrides are checked against ``MAX_DEPTH`` first, so the answer never depends on the process."""

from __future__ import annotations

import yaml

#: the deepest nesting of lists and mappings a spec or an override value may have (real ones: a few)
MAX_DEPTH = 64


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether ``text`` nests lists and mappings more than ``limit`` levels deep. A text that is not
    valid YAML raises yaml.YAMLError, as ``yaml.safe_load`` would."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > limit:
                return True
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return False
