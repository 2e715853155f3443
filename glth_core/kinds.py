"""The registry of trial kinds: name → ``glth_core.experiment.Experiment``. One line a kind."""

from __future__ import annotations

from glth_core.experiment import Experiment
from glth_core.imp_kind import EXPERIMENT as IMP
from glth_core.strong.construct_run import EXPERIMENT as CONSTRUCT
from glth_core.strong.edge_popup import EXPERIMENT as STRONG

KINDS: dict[str, Experiment] = {e.name: e for e in (IMP, STRONG, CONSTRUCT)}
DEFAULT = IMP.name


def get(name: str) -> Experiment:
    """The experiment of a kind name; a one-line error lists the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"kind: {name!r} is not one of {', '.join(KINDS)}") from None


def columns() -> dict[str, type]:
    """Every row column of every kind, in registry order (the Parquet schema follows from it)."""
    out: dict[str, type] = {}
    for e in KINDS.values():
        out.update(e.all_columns())
    return out
