"""The axes a sweep varies, read from its trials' configs: the dry run's columns and what makes a curve.

A *curve* is the trials whose configs differ only in their seed: the trial's ``seed`` and what
follows from it (a random dictionary's seed when the spec gives none, the random-mask, re-init and
LMC seeds, which the configs derive from the seed). Every other field a sweep varies — any
``train.*`` field, ``rounds``, a dictionary's fields, ``split_seed``, a kind's own fields — tells
curves apart, so results never average two configurations as if they were seeds.

Rows carry the describing columns ``STANDARD`` (dataset, model, dictionary label, control, τ,
rewind) and their trial's config (the JSON ``config`` column). ``with_axes`` adds the in-memory
column ``axes``: the varying fields that the standard columns do not already tell apart, as text
(``lr=0.05 rounds=3``); a curve is then the standard columns plus ``axes``. Nothing is stored.
"""

from __future__ import annotations

import json
import math

import pandas as pd

#: the in-memory column: a curve's varying fields beside the standard columns ("" when none)
AXES = "axes"
#: the columns every row describes its trial by (``Trial.meta``)
STANDARD = ("dataset", "model", "dictionary", "control", "tau", "rewind")
#: what a row's config column holds beside the config itself (``Trial.meta``), and never an axis
NOT_CONFIG = ("seeds", "trial_id", "device")
SEED = "seed"


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested mappings → dotted keys (``train.lr``); anything else is a leaf."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def cell(v):
    return str(list(v)) if isinstance(v, (list, tuple)) else v


#: a config's code for a field it does not give (no value's ``repr`` is empty)
ABSENT = ""


def _codes(flat: list[dict]) -> dict[str, list[str]]:
    """Flattened configs as columns: dotted key (first-seen order) → each config's
    ``repr(cell(value))``, ``ABSENT`` where it does not give the key. Every comparison below is of
    these texts, each computed once per config and field."""
    keys = dict.fromkeys(k for f in flat for k in f)
    return {k: [repr(cell(f[k])) if k in f else ABSENT for f in flat] for k in keys}


def _given(column: list[str]) -> list[str]:
    """A column's codes with a missing field read as ``None`` (``dict.get``)."""
    return [c or "None" for c in column]


def _varying(codes: dict[str, list[str]]) -> list[str]:
    return [k for k, column in codes.items() if len(set(_given(column))) > 1]


def varying_axes(configs: list[dict]) -> list[str]:
    """Keys (dotted) whose values differ across the configs, in first-seen order."""
    return _varying(_codes([flatten(c) for c in configs]))


def seedless(flat: list[dict]) -> list[dict]:
    """The flattened configs without their seeds: ``seed`` itself, and a nested ``seed`` (a
    dictionary's) where it follows the trial's seed (``dictionaries.seeded``): it equals the
    trial's ``seed`` and, among the trials that agree on every other field, no trial of another
    seed has it. A nested seed the spec fixes (the same for several trial seeds, or unlike the
    trial's) stays, and tells its trials' curve apart."""
    return _seedless(flat)[0]


def _seedless(flat: list[dict]) -> tuple[list[dict], dict[str, list[str]]]:
    """``seedless(flat)`` and its ``_codes``."""
    out = [{k: v for k, v in f.items() if k != SEED} for f in flat]
    codes = _codes(out)
    nested = [k for k in codes if k.endswith(f".{SEED}")]
    for a in nested:
        others = [column for k, column in codes.items() if k != a]
        parts: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(*others) if others else [()] * len(out)):
            parts.setdefault(key, []).append(i)
        for members in parts.values():
            seeds_of: dict = {}
            for i in members:
                seeds_of.setdefault(repr(flat[i].get(a)), set()).add(repr(flat[i].get(SEED)))
            for i in members:
                value = flat[i].get(a)
                if value is None or (value == flat[i].get(SEED) and len(seeds_of[repr(value)]) == 1):
                    out[i].pop(a, None)
                    codes[a][i] = ABSENT
    if nested:  # a popped seed moves its key in first-seen order, or out of the configs altogether
        codes = {k: codes[k] for k in dict.fromkeys(k for f in out for k in f)}
    return out, codes


def config_of(value) -> dict:
    """A row's config column (JSON text or a dict) as the config alone."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return {k: v for k, v in value.items() if k not in NOT_CONFIG} if isinstance(value, dict) else {}


def _clean(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        return None if pd.isna(v) else v
    except (TypeError, ValueError):
        return v


def _standard(trial: dict) -> tuple:
    return tuple(repr(_clean(trial.get(k))) for k in STANDARD)


def curve_axes(trials: list[dict]) -> tuple[list[str], list[dict]]:
    """The fields that tell these trials' curves apart beside the standard columns — varying, not a
    seed, and not already implied by the standard columns (τ by the ``tau`` column, a dictionary's
    field by its label when the label differs) — and the trials' seedless flattened configs.
    ``trials``: one record per trial with the standard columns and ``config``."""
    flat, codes = _seedless([flatten(config_of(t.get("config"))) for t in trials])
    keys = [_standard(t) for t in trials]
    out = []
    for a in _varying(codes):
        values: dict[tuple, set] = {}
        for key, code in zip(keys, _given(codes[a])):
            values.setdefault(key, set()).add(code)
        if any(len(v) > 1 for v in values.values()):
            out.append(a)
    return out, flat


def _name(axis: str, axes: list[str]) -> str:
    """The axis's last part (``lr`` for ``train.lr``) unless another shown axis ends the same."""
    last = axis.rsplit(".", 1)[-1]
    return last if sum(a.rsplit(".", 1)[-1] == last for a in axes) == 1 else axis


def _value(v) -> str:
    v = cell(v)
    return f"{v:g}" if isinstance(v, float) else str(v).replace(" ", "")


def axes_text(flat: dict, axes: list[str]) -> str:
    """``lr=0.05 rounds=3``: a seedless flattened config's values of ``axes`` (a field it does not
    give — a default, a seed that follows the trial's — is left out)."""
    return " ".join(f"{_name(a, axes)}={_value(flat[a])}" for a in axes if flat.get(a) is not None)


def trial_axes(trials: list[dict]) -> dict[str, str]:
    """trial id → its ``axes`` text, over one sweep's trials (records as ``curve_axes`` takes)."""
    axes, flat = curve_axes(trials)
    return {str(t["trial_id"]): axes_text(f, axes) for t, f in zip(trials, flat)}


def with_axes(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the ``axes`` column (computed over all of their trials, failed ones too);
    unchanged when it is there already. Rows without a config column get ``""`` (one curve per
    standard key, as before)."""
    if AXES in rows:
        return rows
    if not len(rows) or "trial_id" not in rows or "config" not in rows:
        return rows.assign(**{AXES: ""})
    cols = ["trial_id", "config", *(k for k in STANDARD if k in rows)]
    trials = rows[cols].drop_duplicates("trial_id").to_dict("records")
    return rows.assign(**{AXES: rows["trial_id"].astype(str).map(trial_axes(trials)).fillna("")})
