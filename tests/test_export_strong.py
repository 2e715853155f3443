"""`glth export` of strong tickets (edge-popup masks in any dictionary) as well as IMP ones: the
runner is rebuilt through glth_core.kinds, the level's ticket read from the sweep directory, and the
exported module computes what the masked random network computes, to 1e-5."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from in_process import glth_here

from glth_core import data as datasets
from glth_core import kinds
from glth_core.export import export, masked_model
from glth_core.strong.edge_popup import StrongConfig, StrongSearch
from glth_core.train import TrainConfig

GLTH = str(Path(sys.executable).with_name("glth"))
TOL = 1e-5
COMPOSITE = {
    "kind": "composite",
    "parts": [{"kind": "bottleneck", "layer": "1", "basis": "dct"}, {"kind": "canonical"}],
}
DICTIONARIES = [
    {"kind": "canonical"},
    {"kind": "bottleneck", "layer": "1", "basis": "identity"},
    {"kind": "channels", "layer": "3", "per": "out"},
    COMPOSITE,
]


def _forward(search: StrongSearch, ticket) -> torch.Tensor:
    """The search's own training-time forward of a ticket on the test split."""
    with torch.no_grad():
        return search.param.forward(
            ticket.weights(), ticket.mask, search.inputs["test"], search.param.kept_columns(ticket.mask)
        )


@pytest.mark.parametrize("dictionary", DICTIONARIES, ids=lambda d: d["kind"])
def test_a_strong_ticket_exports_to_the_masked_random_network(dictionary):
    search = StrongSearch(
        StrongConfig(
            dataset="digits",
            dictionary=dictionary,
            densities=(0.3,),
            init="signed_constant",
            train=TrainConfig(epochs=1, optimizer="adam", lr=0.01),
        ),
        data=datasets.load("digits"),
    )
    record = search.run_round()
    ticket = search.ticket
    ex = export(search.model, search.dictionary, ticket).module.eval()
    with torch.no_grad():
        got = ex(search.data.test_x)
        masked = masked_model(search.model, search.dictionary, ticket)(search.data.test_x)
    assert (got - masked).abs().max().item() <= TOL
    assert (got - _forward(search, ticket)).abs().max().item() <= TOL
    accuracy = float((got.argmax(1) == search.data.test_y).double().mean())
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-12)
    # a strong ticket is the untrained a_0 under the mask: the free parameters are the random init's
    assert all(torch.equal(ticket.free[k], search.init.free[k]) for k in search.init.free)
    assert record["flops"] <= record["flops_dense"] == 2 * (64 * 300 + 300 * 100 + 100 * 10)


STRONG_SPEC = """
name: strong-export
experiment: glth-test-strong-export
kind: strong
dataset: digits
model: mlp_300_100
dictionary:
  - {kind: canonical}
  - {kind: bottleneck, layer: "1", basis: identity}
  - kind: composite
    parts:
      - {kind: bottleneck, layer: "1", basis: dct}
      - {kind: canonical}
densities: [1.0, 0.3]
seeds: [0]
train: {epochs: 1, optimizer: adam, lr: 0.01, batch_size: 64}
resources: {cpu: 1}
max_concurrent: 2
"""


@pytest.mark.slow
def test_glth_export_of_a_strong_sweeps_last_level(tmp_path):
    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet

    (tmp_path / "spec.yaml").write_text(STRONG_SPEC)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run(
        [GLTH, "run", "spec.yaml", "--out", "out", "--tracking-uri", uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (sweep_dir,) = [d for d in (tmp_path / "out").iterdir() if d.is_dir()]
    rows = parquet.read_rounds(SweepDir.under(tmp_path / "out", sweep_dir.name))
    assert len(rows) == 6 and set(rows.kind) == {"strong"}
    for trial_id, trial_rows in rows.groupby("trial_id"):
        last = trial_rows.sort_values("round").iloc[-1]
        out = tmp_path / f"{trial_id}.pt"
        proc = glth_here(  # export starts no Ray: in this process (cli.main, as the console script)
            "export",
            sweep_dir.name,
            "--out",
            "out",
            "--trial",
            trial_id[:8],
            "-o",
            str(out),
            "--bench",
            "--repeats",
            "3",
            "--images",
            "100",
            "--tracking-uri",
            uri,
            cwd=tmp_path,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        meta = json.loads(out.with_suffix(".json").read_text())
        assert meta["kind"] == "strong" and meta["round"] == 1 == int(last["round"])
        assert meta["test_accuracy"] == pytest.approx(meta["test_accuracy_recorded"], abs=1e-12)
        assert (meta["flops"], meta["flops_dense"]) == (int(last["flops"]), int(last["flops_dense"]))
        assert meta["bench"]["flops"] == meta["flops"] and meta["bench"]["flops_dense"] == meta["flops_dense"]
        assert "FLOPs/input" in proc.stdout

        # independently: the search rebuilt from its config, the level's ticket from the sweep directory
        config = kinds.get("strong").config_cls.from_dict(
            {k: v for k, v in json.loads(last["config"]).items() if k in StrongConfig.__dataclass_fields__}
        )
        search = StrongSearch(config)
        ticket = SweepDir.at(sweep_dir).tickets(trial_id)[1]
        module = torch.load(out, weights_only=False).eval()
        with torch.no_grad():
            got = module(search.data.test_x)
        assert (got - _forward(search, ticket)).abs().max().item() <= TOL
        if last["dictionary"] == "bottleneck-identity":
            m = int(last["rank"])
            assert meta["form"] == "input-select" and meta["flops"] == 2 * (m * 300 + 300 * 100 + 100 * 10)
