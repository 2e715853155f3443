"""Exported tickets: the pruned plain-PyTorch network computes what the masked network computes."""

from __future__ import annotations

import json

import pytest
import torch
from in_process import glth_here
from mlflow.tracking import MlflowClient
from torch import nn

from glth_core.export import IndexSelect, count_parameters, export, masked_model
from glth_core.imp import Trajectory
from glth_core.train import TrainConfig
from glth_core.trajectory import TrajectoryConfig

TOL = 1e-5


def trained(dictionary: dict, rounds: int = 5, tau: float = 0.5) -> Trajectory:
    """A digits trajectory; with τ = 0.5 and 5 rounds the last ticket keeps 1/16 (93.75% compressed)."""
    cfg = TrajectoryConfig(
        dataset="digits",
        model="mlp_300_100",
        dictionary=dictionary,
        tau=tau,
        rounds=rounds,
        train=TrainConfig(epochs=1, batch_size=64, lr=0.05),
    )
    traj = Trajectory(cfg)
    traj.run()
    return traj


def outputs(traj: Trajectory, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(module on the test images, the training-time forward of the last ticket on them)."""
    t = traj.ticket
    with torch.no_grad():
        got = module.eval()(traj.data.test_x)
        ref = traj.param.forward(t.weights(), t.mask, traj.inputs["test"], traj.param.kept_columns(t.mask))
    return got, ref


@pytest.fixture(scope="module")
def identity():
    return trained({"kind": "bottleneck", "layer": "1", "basis": "identity"})


@pytest.fixture(scope="module")
def dct():
    return trained({"kind": "bottleneck", "layer": "1", "basis": "dct"})


@pytest.mark.parametrize("which", ["identity", "dct"])
def test_bottleneck_export_is_smaller_and_agrees(which, request):
    traj = request.getfixturevalue(which)
    assert 1.0 - traj.state.records[-1]["density"] >= 0.90
    masked = masked_model(traj.model, traj.dictionary, traj.ticket)
    ex = export(traj.model, traj.dictionary, traj.ticket)
    got, ref = outputs(traj, ex.module)
    want, _ = outputs(traj, masked)
    assert (got - want).abs().max().item() <= TOL
    assert (got - ref).abs().max().item() <= TOL  # and both are the network IMP trained
    m = int(traj.ticket.mask.view(300, 64).any(0).sum())
    assert m == 4 and ex.kept_groups == m
    assert count_parameters(ex.module) < count_parameters(masked)
    layer = ex.module[1]
    assert isinstance(layer, nn.Sequential) and layer[1].weight.shape == (300, m)
    if which == "identity":
        assert ex.form == "input-select" and isinstance(layer[0], IndexSelect)
        assert count_parameters(masked) - count_parameters(ex.module) == (64 - m) * 300
    else:
        assert ex.form == "factorized" and layer[0].weight.shape == (m, 64) and layer[0].bias is None
        assert count_parameters(ex.module) == count_parameters(masked) - 64 * 300 + m * (64 + 300)


def test_canonical_export_is_the_masked_network():
    traj = trained({"kind": "canonical"}, rounds=3)
    ex = export(traj.model, traj.dictionary, traj.ticket)
    masked = masked_model(traj.model, traj.dictionary, traj.ticket)
    assert ex.form == "masked-dense"
    got, ref = outputs(traj, ex.module)
    want, _ = outputs(traj, masked)
    assert torch.equal(got, want)
    assert (got - ref).abs().max().item() <= TOL
    flat = torch.cat([p.detach().reshape(-1) for p in ex.module.parameters()])
    assert int((flat != 0).sum()) == int(traj.ticket.mask.sum())  # zeros exactly where pruned


def test_identity_on_a_hidden_layer_drops_the_previous_units():
    traj = trained({"kind": "bottleneck", "layer": "3", "basis": "identity"}, rounds=4)
    ex = export(traj.model, traj.dictionary, traj.ticket)
    got, ref = outputs(traj, ex.module)
    assert ex.form == "fold-previous"
    assert (got - ref).abs().max().item() <= TOL
    m = ex.kept_groups
    assert ex.module[1].weight.shape == (m, 64) and ex.module[3].weight.shape == (100, m)


def test_dense_round_is_not_factorized_into_something_bigger():
    traj = trained({"kind": "bottleneck", "layer": "1", "basis": "dct"}, rounds=1)
    ex = export(traj.model, traj.dictionary, traj.ticket)
    assert ex.form == "masked-dense"  # 64 kept columns: U_kept C_kept would be larger than W
    forced = export(traj.model, traj.dictionary, traj.ticket, factorize="always")
    got, ref = outputs(traj, forced.module)
    assert forced.form == "factorized" and (got - ref).abs().max().item() <= TOL


def test_saved_module_loads_and_runs(identity, tmp_path):
    ex = export(identity.model, identity.dictionary, identity.ticket)
    torch.save(ex.module, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    x = identity.data.test_x[:50]
    with torch.no_grad():
        assert torch.equal(loaded(x), ex.module(x))


# -- the CLI on a real sweep ---------------------------------------------------------------------------
def glth(*args, cwd):
    """``glth export`` starts no Ray: in this process (cli.main, as the console script)."""
    return glth_here(*args, cwd=cwd)


@pytest.mark.slow
def test_glth_export_with_bench(paper_sweep, tmp_path):
    rows = paper_sweep["rows"]
    trial = rows[(rows.dictionary == "bottleneck-dct") & (rows.control == "none") & (rows.seed == 0)]
    tid, last = trial.trial_id.iloc[0], int(trial["round"].max())
    out = tmp_path / "model.pt"
    proc = glth(
        "export",
        paper_sweep["sweep_id"],
        "--trial",
        tid[:8],
        "--round",
        str(last),
        "-o",
        str(out),
        "--bench",
        "--repeats",
        "5",
        "--out",
        str(paper_sweep["out"]),
        "--tracking-uri",
        paper_sweep["uri"],
        cwd=paper_sweep["cwd"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "factorized" in proc.stdout and "ratio" in proc.stdout

    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["trial_id"] == tid and meta["round"] == last and meta["form"] == "factorized"
    assert meta["compression"] >= 0.9 and meta["max_abs_diff_vs_masked"] <= TOL
    assert meta["parameters"] < meta["parameters_dense"]
    assert meta["test_accuracy"] == pytest.approx(
        meta["test_accuracy_recorded"], abs=1.5 / 360
    )  # an argmax tie at most
    bench = meta["bench"]
    assert bench["images"] == 360 and bench["params"] == meta["parameters"]  # digits has 360 test images
    assert bench["latency_ms"] > 0 and bench["speedup"] == pytest.approx(
        bench["latency_ms_dense"] / bench["latency_ms"]
    )

    # the saved module is the trial's network: compare with a fresh rebuild of the masked model
    from orchestrator.export_cmd import trial_config
    from orchestrator.layout import SweepDir

    module = torch.load(out, weights_only=False)
    traj = Trajectory(trial_config(trial.iloc[0].to_dict()))
    masked = masked_model(traj.model, traj.dictionary, SweepDir.at(paper_sweep["sweep_dir"]).tickets(tid)[last])
    with torch.no_grad():
        assert (module(traj.data.test_x) - masked(traj.data.test_x)).abs().max().item() <= TOL

    client = MlflowClient(paper_sweep["uri"])
    exp = client.get_experiment_by_name("glth-paper-test")
    (child,) = client.search_runs([exp.experiment_id], f"tags.`glth.trial_id` = '{tid}'")
    hist = client.get_metric_history(child.info.run_id, "export_params")
    assert [(m.step, m.value) for m in hist] == [(last, float(meta["parameters"]))]
    assert client.get_metric_history(child.info.run_id, "export_speedup")[0].value == pytest.approx(bench["speedup"])
    assert child.data.tags["glth.export.form"] == "factorized"


@pytest.mark.slow
def test_glth_export_bad_trial_and_round_are_one_line(paper_sweep, tmp_path):
    base = ["export", paper_sweep["sweep_id"], "-o", str(tmp_path / "x.pt"), "--out", str(paper_sweep["out"])]
    proc = glth(*base, "--trial", "zzzz", cwd=paper_sweep["cwd"])
    assert proc.returncode == 2 and "--trial" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    tid = paper_sweep["rows"].trial_id.iloc[0]
    proc = glth(*base, "--trial", tid, "--round", "99", cwd=paper_sweep["cwd"])
    assert proc.returncode == 2 and "--round: 99" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_glth_export_mlflow_logs_the_ticket_as_a_model(paper_sweep, tmp_path):
    """`glth export --mlflow` (#14): the exported ticket as an MLflow model on the trial's run,
    with a signature and an input example, that loads back and computes the same outputs."""
    import mlflow.pytorch

    rows = paper_sweep["rows"]
    trial = rows[(rows.dictionary == "bottleneck-identity") & (rows.control == "none") & (rows.seed == 1)]
    tid, last = trial.trial_id.iloc[0], int(trial["round"].max())
    out = tmp_path / "ticket.pt"
    proc = glth(
        "export",
        paper_sweep["sweep_id"],
        "--trial",
        tid,
        "--round",
        str(last),
        "-o",
        str(out),
        "--mlflow",
        "--out",
        str(paper_sweep["out"]),
        "--tracking-uri",
        paper_sweep["uri"],
        cwd=paper_sweep["cwd"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    uri = next(
        line.split(" as ")[-1].strip() for line in proc.stdout.splitlines() if "logged the exported ticket" in line
    )
    mlflow.set_tracking_uri(paper_sweep["uri"])
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    from orchestrator.export_cmd import trial_config

    loaded = mlflow.pytorch.load_model(uri)
    module = torch.load(out, weights_only=False)
    x = Trajectory(trial_config(trial.iloc[0].to_dict())).data.test_x[:5]
    with torch.no_grad():
        assert torch.allclose(loaded(x), module(x), atol=1e-6)
