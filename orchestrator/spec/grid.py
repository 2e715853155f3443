"""Grid expansion: a validated spec → one config per grid point, each checked against its model.

Any key whose value is a grid axis (``schema.is_axis``), in the spec or in a nested config such
as ``train``, expands; so do a list of datasets and the seeds (last, so the seeds of one
configuration stand together).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import Any

from glth_core import data as datasets
from glth_core import models
from glth_core.config import hints, nested_config
from orchestrator.spec.schema import SUPPLIED, DatasetSpec, is_axis
from orchestrator.spec.text import SpecError
from orchestrator.spec.trials import Trial

#: the most trials one sweep expands to: a bigger grid is a typo (seeds=0-99999) or a sweep to split
MAX_TRIALS = 10_000


def _as_list(v) -> list:
    return list(v) if isinstance(v, list) else [v]


def _axes(config_cls: type, values: dict[str, Any], prefix: str = "") -> dict[str, list]:
    """Each field's list of values (one for a fixed value), nested configs expanded to their own
    combinations (each a dict). An axis must list at least one value, each value once."""
    types = hints(config_cls)
    out = {}
    for name, value in values.items():
        hint = types[name]
        sub = nested_config(hint)
        if sub is not None:
            inner = _axes(sub, value, f"{prefix}{name}.")
            _check_size({f"{prefix}{name}.{k}": len(v) for k, v in inner.items()})
            out[name] = [dict(zip(inner, combo)) for combo in itertools.product(*inner.values())]
        else:
            out[name] = list(value) if is_axis(hint, value) else [value]
            _check_axis(f"{prefix}{name}", out[name])
    return out


def _check_axis(field: str, values: list) -> None:
    if not values:
        raise SpecError(f"{field}: an empty list; a grid axis lists at least one value")
    seen = set()
    for v in values:
        key = json.dumps(v, sort_keys=True, default=repr)
        if key in seen:
            raise SpecError(f"{field}: {v!r} is listed twice in the grid (the same trials twice)")
        seen.add(key)


def _check_size(sizes: dict[str, int]) -> None:
    total = math.prod(sizes.values())
    if total > MAX_TRIALS:
        axes = " × ".join(f"{name} {n}" for name, n in sizes.items() if n > 1)
        raise SpecError(f"grid: {total} trials ({axes}), more than {MAX_TRIALS}; split the sweep")


def _dataset(d) -> DatasetSpec:
    return DatasetSpec(name=d) if isinstance(d, str) else d


def expand(spec, kind: str) -> list[Trial]:
    """The grid, checked point by point (names, τ, layers, bases, data directories)."""
    from glth_core import kinds

    experiment = kinds.get(kind)
    config_cls = experiment.config_cls
    own = {f.name: getattr(spec, f.name) for f in dataclasses.fields(config_cls) if f.name not in SUPPLIED}
    dumped = {k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in own.items()}
    axes = _axes(config_cls, dumped)
    data = [_dataset(d) for d in _as_list(spec.dataset)]
    _check_axis("dataset", [d.model_dump(exclude_defaults=True) for d in data])
    _check_size({"dataset": len(data), **{k: len(v) for k, v in axes.items()}, "seeds": len(spec.seeds)})
    trials, data_seen, points = [], {}, {}
    for ds, *values, seed in itertools.product(data, *axes.values(), spec.seeds):
        key = (ds.name, ds.data_dir)
        if key not in data_seen:
            try:
                data_seen[key] = datasets.check(ds.name, ds.data_dir)
            except datasets.DatasetError as e:
                raise SpecError(str(e)) from None
        info = data_seen[key]
        try:
            datasets.check_normalize(ds.normalize, info.input_shape[0])
        except ValueError as e:
            raise SpecError(str(e)) from None
        fields = dict(zip(axes, values))
        try:
            config = config_cls(
                **fields,
                dataset=ds.name,
                data_dir=ds.data_dir,
                val_fraction=ds.val_fraction,
                split_seed=ds.split_seed,
                normalize=ds.normalize,
                seed=seed,
                device=spec.device,
            )
            net = models.build(config.model, info.input_shape, info.num_classes)
            experiment.check(config, net)
            if spec.batch_seeds > 1:
                from glth_core.batched import check_batchable_model

                check_batchable_model(net)
        except (ValueError, TypeError) as e:
            raise SpecError(str(e).splitlines()[0]) from None
        trials.append(Trial(config, kind))
        _check_new_point(points, trials[-1].trial_id, {"dataset": ds.model_dump(exclude_defaults=True), **fields})
    return trials


def _check_new_point(points: dict, trial_id: str, point: dict) -> None:
    """Two grid values written differently that read as the same trial (a default spelled out)."""
    other = points.setdefault(trial_id, point)
    if other is not point:
        names = [k for k in point if point[k] != other[k]]
        raise SpecError(
            f"{', '.join(names)}: {other[names[0]]!r} and {point[names[0]]!r} are the same trial; list it once"
        )


def check_batches(spec, kind: str, trials: list[Trial]) -> None:
    """``batch_seeds > 1``: the kind must batch, and each set of seeds must be batchable."""
    from glth_core import kinds

    experiment = kinds.get(kind)
    if experiment.check_batch is None:
        batching = ", ".join(k for k, e in kinds.KINDS.items() if e.check_batch is not None)
        raise SpecError(f"batch_seeds: kind {kind} does not batch seeds (kinds that do: {batching})")
    for configs in seed_sets(trials).values():
        try:
            experiment.check_batch([t.config for t in configs])
        except ValueError as e:
            raise SpecError(f"batch_seeds: {str(e).splitlines()[0]}") from None


def seed_sets(trials: list[Trial]) -> dict[str, list[Trial]]:
    """Trials that differ only in their seed, by their seedless key (in grid order)."""
    out: dict[str, list[Trial]] = {}
    for t in trials:
        out.setdefault(t.config.seedless_key(), []).append(t)
    return out
