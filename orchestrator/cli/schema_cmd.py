"""``glth schema``: the JSON Schema of a sweep spec file, for editors (the YAML language server)."""

from __future__ import annotations

import json


def add_parsers(sub, parents) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of a sweep spec (for an editor's YAML language server)")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write it to FILE instead of printing it")
    p.set_defaults(func=cmd_schema)


def spec_json_schema() -> dict:
    from orchestrator.spec.schema import spec_file_model

    schema = spec_file_model().model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "glth sweep spec"}


def cmd_schema(args) -> int:
    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if args.output is None:
        print(text, end="")
    else:
        from orchestrator import atomic

        atomic.write_text(args.output, text)
    return 0
