"""`glth export SWEEP --trial T --round R -o model.pt [--bench]`: one round's ticket of one trial
as a plain PyTorch module (``glth_core.export``), with a JSON of metadata beside it.

The trial's network is rebuilt from its config (the Parquet ``config`` column: same model, same
dictionary), the round's ticket comes from the trial's checkpoint. Before saving, the exported
module is checked against the masked network on test images. Any kind that keeps tickets exports the same
way: IMP rounds and strong-ticket (edge-popup) levels alike, in any dictionary (the runner is rebuilt
through ``glth_core.kinds``; a strong ticket is the random network's a_0 under the level's mask).
The metadata carries ``flops`` and ``flops_dense`` (one input, ``glth_core.flops``: structured
pruning shows its real cost, single-weight masks the dense one). ``--bench`` times both on the same
batch and logs the numbers (and the FLOPs) to the trial's MLflow child run (step = round).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch

from glth_core import controls, kinds
from glth_core import export as gexport
from glth_core.flops import count_flops
from orchestrator import atomic
from orchestrator.analysis import experiment_of
from orchestrator.layout import SweepDir

#: exported and masked outputs must agree to this (float32 sums over up to d_in terms)
TOLERANCE = 1e-4


class ExportError(ValueError):
    """Bad input for an export (unknown trial or round); one line, exit status 2."""


def trial_config(row: dict):
    """The config of a Parquet row's trial (its ``config`` column, recorded extras dropped)."""
    cfg = json.loads(row["config"])
    config_cls = kinds.get(row.get("kind") or kinds.DEFAULT).config_cls
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls.from_dict({k: v for k, v in cfg.items() if k in names})


def pick_trial(rows, key: str) -> str:
    """The trial id equal to ``key`` or starting with it (unique)."""
    ids = sorted(rows["trial_id"].unique())
    match = [t for t in ids if t == key] or [t for t in ids if t.startswith(key)]
    if len(match) != 1:
        why = "is ambiguous" if match else "matches no trial"
        listing = ", ".join(
            f"{r.trial_id} ({r.dictionary}{'' if controls.is_imp(r.control) else ' ' + r.control}, seed {r.seed})"
            for r in rows.drop_duplicates("trial_id").sort_values(["dictionary", "seed"]).itertuples()
        )
        raise ExportError(f"--trial: {key!r} {why}; trials: {listing}")
    return match[0]


@torch.no_grad()
def _accuracy(module, x, y, batch: int = 2048) -> float:
    correct = 0
    for i in range(0, len(y), batch):
        correct += (module(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return correct / max(1, len(y))


def export_trial(
    sweep_dir: SweepDir,
    rows,
    trial_key: str,
    round_: int | None,
    out: Path,
    bench: bool = False,
    bench_images: int = 1000,
    repeats: int = 30,
    threads: int = 1,
    tracking_uri: str | None = None,
    log=print,
    to_mlflow: bool = False,
) -> dict:
    """Export one round's ticket to ``out`` (+ ``out.json``); returns the metadata written.
    ``to_mlflow``: also log the module as an MLflow model (input example, signature) on the
    trial's child run."""
    from orchestrator.layout import LayoutError

    trial_id = pick_trial(rows, trial_key)
    trial_rows = rows[(rows["trial_id"] == trial_id) & (rows["status"] == "ok")].sort_values("round")
    where = sweep_dir
    try:
        where.check_layout()
    except LayoutError as e:
        raise ExportError(str(e)) from None
    tickets = where.tickets(trial_id)
    available = sorted(tickets)
    if not available:
        raise ExportError(f"--trial: {trial_id} has no tickets (its kind keeps none, or no round has finished)")
    rnd = available[-1] if round_ is None else round_
    if rnd not in tickets:
        raise ExportError(
            f"--round: {rnd} is not a finished round of {trial_id}; rounds: {', '.join(map(str, available))}"
        )
    row = trial_rows[trial_rows["round"] == rnd].iloc[0].to_dict()
    config = trial_config(row)

    torch.set_num_threads(max(1, threads))
    traj = kinds.get(row.get("kind") or kinds.DEFAULT).runner(dataclasses.replace(config, device="cpu"))
    ticket = tickets[rnd]
    masked = gexport.masked_model(traj.model, traj.dictionary, ticket)
    exported = gexport.export(traj.model, traj.dictionary, ticket)
    module = exported.module.eval()

    x = traj.data.test_x[:bench_images]
    with torch.no_grad():
        diff = float((module(x) - masked(x)).abs().max())
    if not diff <= TOLERANCE:
        raise RuntimeError(f"exported network disagrees with the masked one by {diff:.3g} (> {TOLERANCE})")
    accuracy = _accuracy(module, traj.data.test_x, traj.data.test_y)
    one = traj.data.test_x[:1]
    flops, flops_dense = count_flops(module, one), count_flops(masked, one)

    meta = {
        "sweep_id": where.sweep_id,
        "trial_id": trial_id,
        "round": int(rnd),
        "dictionary": row["dictionary"],
        "control": row.get("control", "none"),
        "seed": int(row["seed"]),
        "compression": float(row["compression"]),
        **exported.describe(),
        "parameters_dense": gexport.count_parameters(masked),
        "flops": flops,
        "flops_dense": flops_dense,
        "kind": row.get("kind") or kinds.DEFAULT,
        "test_accuracy": accuracy,
        "test_accuracy_recorded": float(row["test_accuracy"]),
        "max_abs_diff_vs_masked": diff,
        "input": {
            "shape": list(traj.data.input_shape),
            "normalize_mean": list(traj.data.mean),
            "normalize_std": list(traj.data.std),
            "note": "inputs are N×C×H×W floats normalised as in training: (x − mean) / std per channel, x the values the dataset loader reads (0..255 pixels for CIFAR-10 and MNIST)"
            if traj.data.mean
            else "inputs as the dataset loader gives them",
        },
        "config": json.loads(row["config"]),
        "torch": torch.__version__,
        "load": "torch.load(path, weights_only=False) with glth installed (glth_core.export_layers.IndexSelect)",
    }
    if bench:
        meta["bench"] = {
            **_bench(masked, module, x, repeats, threads),
            "flops": flops,
            "flops_dense": flops_dense,
            "flops_ratio": flops_dense / max(1, flops),
        }
    with atomic.writing(out) as tmp:
        torch.save(module, tmp)
    meta_path = out.with_suffix(".json")
    atomic.write_text(meta_path, json.dumps(meta, indent=1, default=str) + "\n")

    log(
        f"exported {trial_id} round {rnd} ({row['dictionary']}, compression {100 * meta['compression']:.1f}%) "
        f"as {exported.form}: {meta['parameters']:,} parameters (dense {meta['parameters_dense']:,}), "
        f"{flops:,} FLOPs per input (dense {flops_dense:,}); "
        f"test accuracy {100 * accuracy:.2f}% (recorded {100 * meta['test_accuracy_recorded']:.2f}%); "
        f"max |exported − masked| = {diff:.2g}"
    )
    log(f"wrote {out} and {meta_path}")
    if bench:
        b = meta["bench"]
        log(
            f"bench on {b['images']} test images, {threads} thread(s), median of {repeats}:\n"
            f"  {'':10} {'parameters':>12} {'latency ms':>11} {'FLOPs/input':>14}\n"
            f"  {'dense':10} {b['params_dense']:>12,} {b['latency_ms_dense']:>11.3f} {b['flops_dense']:>14,}\n"
            f"  {'exported':10} {b['params']:>12,} {b['latency_ms']:>11.3f} {b['flops']:>14,}\n"
            f"  ratio      {b['param_ratio']:>11.1f}× {b['speedup']:>10.2f}× {b['flops_ratio']:>13.2f}×  (dense / exported)"
        )
        if tracking_uri:
            _log_bench(sweep_dir, where.sweep_id, trial_id, rnd, meta, meta_path, tracking_uri, log)
    if to_mlflow:
        meta["mlflow_model"] = _log_model(sweep_dir, where.sweep_id, trial_id, rnd, module, x[:4], tracking_uri, log)
    return meta


def _log_model(
    sweep_dir, sweep_id: str, trial_id: str, rnd: int, module, example, tracking_uri: str | None, log
) -> str:
    """``mlflow.pytorch.log_model`` of the exported ticket on the trial's child run; its model URI."""
    from orchestrator.sinks import mlflow as mlflow_sink

    if not tracking_uri:
        raise ExportError("--mlflow: no tracking URI (give --tracking-uri or set MLFLOW_TRACKING_URI)")
    try:
        _, child = mlflow_sink.find_runs(tracking_uri, experiment_of(sweep_dir), sweep_id, trial_id)
        if child is None:
            raise ExportError(f"--mlflow: no MLflow child run for trial {trial_id} at {tracking_uri}")
        uri = mlflow_sink.log_exported_model(tracking_uri, child, module, example, name=f"ticket_round_{rnd}")
    except mlflow_sink.MlflowUnavailable as e:
        raise ExportError(f"--mlflow: MLflow at {tracking_uri} is unavailable ({e})") from None
    log(f"logged the exported ticket to MLflow run {child} as {uri}")
    return uri


def _bench(masked, module, x, repeats: int, threads: int) -> dict:
    dense_s, ours_s = gexport.latency([masked, module], x, repeats)
    p_dense, p_ours = gexport.count_parameters(masked), gexport.count_parameters(module)
    return {
        "images": int(x.shape[0]),
        "repeats": repeats,
        "threads": threads,
        "machine": platform.processor() or platform.machine(),
        "params_dense": p_dense,
        "params": p_ours,
        "param_ratio": p_dense / max(1, p_ours),
        "latency_ms_dense": 1000 * dense_s,
        "latency_ms": 1000 * ours_s,
        "speedup": dense_s / ours_s,
    }


def _log_bench(
    sweep_dir: SweepDir, sweep_id: str, trial_id: str, rnd: int, meta: dict, meta_path: Path, tracking_uri: str, log
) -> None:
    from orchestrator.sinks import mlflow as mlflow_sink

    try:
        _, child = mlflow_sink.find_runs(tracking_uri, experiment_of(sweep_dir), sweep_id, trial_id)
        if child is None:
            log(f"[glth] no MLflow child run for {trial_id} at {tracking_uri}; bench not logged")
            return
        b = meta["bench"]
        metrics = [
            (f"export_{k}", float(b[k]), rnd)
            for k in (
                "params",
                "params_dense",
                "param_ratio",
                "latency_ms",
                "latency_ms_dense",
                "speedup",
                "flops",
                "flops_dense",
                "flops_ratio",
            )
        ]
        mlflow_sink.log_extra(
            tracking_uri,
            child,
            metrics,
            tags={"glth.export.form": meta["form"], "glth.export.round": rnd},
            artifacts={f"export/round_{rnd}.json": meta_path},
        )
        log(f"logged to MLflow run {child} (metrics export_*, step {rnd})")
    except mlflow_sink.MlflowUnavailable as e:
        print(f"[glth] MLflow unavailable ({e}); bench not logged", file=sys.stderr)
