"""Controls and dictionary kinds are plug-ins: behaviour is asked of the registered class, never
chosen by comparing a name outside its registry package, and a control registered on the fly runs
an IMP trajectory without any other module knowing it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import torch

from glth_core import controls, dictionaries
from glth_core.controls import Control
from glth_core.imp import Trajectory
from glth_core.imp_kind import EXPERIMENT
from glth_core.sparsify import sparsify
from glth_core.train import TrainConfig
from glth_core.trajectory import TrajectoryConfig

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES = (ROOT / "glth_core" / "controls", ROOT / "glth_core" / "dictionaries")
#: attributes a kind declares; reading them by ``getattr(d, name, default)`` is guessing the kind
PROBED = {"parts", "tau_segments", "group_order", "part_ranges", "is_input_layer", "basis", "kind"}


def _strings(node) -> set[str]:
    """The string literals ``node`` is, or holds (a tuple / list / set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_strings(e) for e in node.elts)) if node.elts else set()
    return set()


def _names(node) -> str | None:
    """``control`` / ``kind`` when ``node`` reads such a value: a name, an attribute, a
    subscript ``x["control"]`` or a ``.get("kind")`` call."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return next(iter(_strings(node.slice)), None)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        return next(iter(_strings(node.args[0])), None)
    return None


def string_dispatch(path: Path) -> list[str]:
    """Where ``path`` compares a control, a dictionary kind or a bottleneck's basis to a name, or
    probes a dictionary."""
    kinds = set(dictionaries.KINDS)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(ROOT) if ROOT in path.parents else path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            read = {_names(s) for s in sides}
            literals = set().union(*(_strings(s) for s in sides))
            if literals and ("control" in read or "basis" in read or ("kind" in read and literals & kinds)):
                found.append(f"{where}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and _strings(node.args[1]) & PROBED
        ):
            found.append(f"{where}: {ast.unparse(node)}")
    return found


def test_controls_and_kinds_are_chosen_only_inside_their_registries():
    files = [
        p
        for tree in ("glth_core", "orchestrator")
        for p in sorted((ROOT / tree).rglob("*.py"))
        if not any(reg in p.parents for reg in REGISTRIES)
    ]
    assert len(files) > 40
    found = [hit for p in files for hit in string_dispatch(p)]
    assert found == [], "string dispatch outside the registries:\n" + "\n".join(found)


def test_the_scan_finds_what_it_forbids(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'a = config.control == "reinit"\nb = spec.get("kind") != "bottleneck"\n'
        'c = getattr(d, "tau_segments", None)\nd = row["control"] in ("none", None)\n'
        'e = trial.kind == "imp"\nf = dic.basis == "identity"\n'
    )
    found = string_dispatch(probe)
    assert [f.split(":")[1] for f in found] == ["1", "2", "3", "4", "6"]  # a trial kind ("imp") is no dictionary


class Inverse(Control):
    """A toy control: drops the survivors with the *largest* trained coefficients."""

    name = "inverse"
    marker, line = "x", ":"

    @classmethod
    def extra_seeds(cls, config) -> dict:
        return {"inverse": config.seed}

    def next_mask(self, mask, trained, dense, next_round):
        return sparsify(1.0 / (trained.abs() + 1e-30), mask, self.config.tau, None, self.config.prune_rounding)


def test_a_control_registered_in_one_line_runs_imp(monkeypatch):
    monkeypatch.setitem(controls.CONTROLS, Inverse.name, Inverse)
    train = TrainConfig(steps=5, batch_size=64, lr=0.05)
    config = TrajectoryConfig(
        dataset="digits", model="mlp_300_100", tau=0.25, rounds=2, seed=3, train=train, control="inverse"
    )
    config.check()
    assert config.extra_seeds()["inverse"] == 3
    assert EXPERIMENT.run_name(config).startswith("canonical-inverse-tau0.25-")
    assert controls.label("inverse") == " [inverse]" and not controls.is_imp("inverse")
    traj = Trajectory(config)
    traj.run_round()
    trained = traj.state.last.coeffs.abs()
    mask = traj.state.mask
    n = mask.numel()
    assert int(mask.sum()) == n - round(0.25 * n)
    assert float(trained[~mask].min()) >= float(trained[mask].max())  # the largest went
    imp = Trajectory(dataclasses.replace(config, control="none"))
    imp.run_round()
    assert torch.equal(imp.state.last.coeffs, traj.state.last.coeffs)  # same training, round 0
    assert not torch.equal(imp.state.mask, mask)
