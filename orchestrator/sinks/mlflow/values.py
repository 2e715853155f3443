"""Values as MLflow takes them: its size limits, a config flattened into params, metric values,
batches within the limits, timestamps."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import pandas as pd

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
# MLflow ≥ 2.x accepts 6000 chars, older servers 500: stay within what every server takes
MAX_PARAM_VALUE = 500
TRUNCATED = "...[truncated]"
MAX_TAG_VALUE = 5000


def _number(v) -> float | None:
    """A metric value, or None for missing (None, NaN, pandas NA)."""
    if v is None or v is pd.NA:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested dicts → ``a.b`` keys; values as strings, lists as JSON, long values truncated."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten_params(v, key + "."))
            continue
        text = json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple, dict)) else str(v)
        if len(text) > MAX_PARAM_VALUE:
            text = text[: MAX_PARAM_VALUE - len(TRUNCATED)] + TRUNCATED
        out[key] = text
    return out
