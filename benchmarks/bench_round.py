"""One IMP round inside a real ``glth run`` vs the machine's floor for the same work.

The floor: plain PyTorch training of the same model for the same steps (an nn.Module and
torch.optim.SGD over the same tensors, batch and threads), plus one forward pass over the splits a
round evaluates (train, val, test, at glth's evaluation batch), timed in this process ``--repeats``
times before the run and as many after it (timing it during the run too, tried, slows the run's
trial and driver on 2 cores more than it slows the floor). Two ratios per case:

* compute: a round's ``wall_seconds`` (its training, from the Parquet rows) plus its evaluation
  (the rows' ``eval_seconds``; where the rows lack that column, glth's own ``evaluate`` of the three
  splits timed here, and the line says so) vs the floor;
* whole round: the wall time between two consecutive reports of the trial as the driver logged
  them (the MLflow metric timestamps of rounds r−1 and r), so also sparsifying, the ticket and
  state writes, Tune's reporting, the Parquet rewrite and the MLflow logging, vs the floor.

Round 0 is left out (no report before it). Every number is the fastest of its samples (floor
timings; rounds 1…R−1; gaps between reports): on a machine shared with other work, load only ever
slows a sample, so the fastest is the best estimate of each side's own cost. A third number splits
the whole round's excess: ``Trajectory.run_round`` of the same trial in this process (no Ray, Tune,
files, Parquet or MLflow). The cases (``CASES``) run as one sweep per model and dataset, one trial
at a time (max_concurrent 1, 1 CPU).

    .venv/bin/python benchmarks/bench_round.py [--quick] [--only lenet mlp cnn] [--device cuda]
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from common import REPO, parser, verdict

from glth_core import data as datasets
from glth_core import dictionaries, models
from glth_core.imp import Trajectory
from glth_core.train import Parameterization, TrainConfig, evaluate
from glth_core.trajectory import TrajectoryConfig

TARGET = 1.15
SHARED = REPO.parent / "shared" / "data"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Case:
    key: str
    dataset: str
    data_dir: Path | None
    model: str
    dictionaries: tuple[dict, ...]
    batch_size: int
    lr: float
    steps: int  # per round (quick: a quarter)


CASES = (
    Case("lenet", "mnist", SHARED / "mnist", "lenet_300_100", ({"kind": "canonical"},), 128, 0.05, 400),
    Case(
        "mlp",
        "cifar10",
        SHARED / "cifar10-approx",
        "mlp_300_100",
        (
            {"kind": "bottleneck", "layer": "1", "basis": "identity"},
            {"kind": "bottleneck", "layer": "1", "basis": "dct"},
        ),
        128,
        0.02,
        400,
    ),
    Case(
        "cnn",
        "cifar10",
        SHARED / "cifar10-approx",
        "cnn_paper",
        ({"kind": "canonical"}, {"kind": "random", "method": "fast", "version": 2}),
        64,
        0.01,
        300,
    ),
)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def wall(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# -- the run --------------------------------------------------------------------------------------
def spec_of(case: Case, rounds: int, steps: int, device: str) -> dict:
    return {
        "name": f"bench-round-{case.key}",
        "experiment": "glth-bench-round",
        "dataset": {"name": case.dataset, "data_dir": str(case.data_dir)},
        "model": case.model,
        "dictionary": list(case.dictionaries),
        "tau": 0.2,
        "seeds": [0],
        "rounds": rounds,
        "train": {"steps": steps, "batch_size": case.batch_size, "lr": case.lr, "momentum": 0.9},
        "resources": {"cpu": 1, **({"gpu": 1} if device.startswith("cuda") else {})},
        "max_concurrent": 1,
        "device": device,
        "system_metrics": False,
    }


def glth_run(spec: dict, tmp: Path):
    """(rows, {trial_id: [driver log time of round r, …]}, wall seconds) of one ``glth run``."""
    from mlflow.tracking import MlflowClient

    from orchestrator.layout import SweepDir
    from orchestrator.sinks import parquet
    from orchestrator.sinks.mlflow.client import TAG_ROLE, TAG_TRIAL

    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cmd = [str(Path(sys.executable).with_name("glth")), "run", "spec.yaml", "--out", "out", "--tracking-uri", uri]
    t0 = time.perf_counter()
    with open(tmp / "glth.log", "w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=tmp,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.wait()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"round: glth run failed ({proc.returncode}): {(tmp / 'glth.log').read_text()[-2000:]}")
    (sweep_dir,) = [d for d in (tmp / "out").iterdir() if d.is_dir()]
    rows = parquet.read_rounds(SweepDir.under(tmp / "out", sweep_dir.name))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(spec["experiment"])
    logged = {}
    for run in client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'child'"):
        history = sorted(client.get_metric_history(run.info.run_id, "density"), key=lambda m: m.step)
        logged[run.data.tags[TAG_TRIAL]] = [m.timestamp / 1000.0 for m in history]
    return rows, logged, seconds


# -- the floor, and glth's evaluation where the rows lack it ----------------------------------------
def floor_arms(case: Case, data, spec: dict, rounds: int, steps: int, device: str, eval_batch: int) -> dict:
    """The arms timed here, by name: ``train`` (plain training of ``steps`` steps), ``forward`` (one
    plain forward over the splits), ``glth_eval`` (glth's evaluate of the splits under ``spec``, every
    coefficient kept) and ``glth_round`` (round 1 of the trial by ``Trajectory.run_round``, no Ray,
    Tune, files, Parquet or MLflow; it reports its training as ``glth_train``)."""
    torch.manual_seed(0)
    model = models.build(case.model, data.input_shape, data.num_classes).to(device)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data.train_x, data.train_y
    splits = [(getattr(data, f"{s}_x"), getattr(data, f"{s}_y")) for s in SPLITS]

    def train():
        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), lr=case.lr, momentum=0.9)
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0)).to(device)
        batches = order.split(case.batch_size)
        for i in range(steps):
            idx = batches[i % len(batches)]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx)).backward()
            opt.step()

    @torch.no_grad()
    def forward():
        for sx, _ in splits:
            for xb in sx.split(eval_batch):
                model(xb)

    glth_model = models.build(case.model, data.input_shape, data.num_classes).to(device)
    d = dictionaries.build(dictionaries.seeded(spec, 0), glth_model, train_x=data.train_x)
    param = Parameterization(glth_model, d)
    weights = param.weights_of(glth_model)
    mask = torch.ones(d.size, dtype=torch.bool, device=device)
    inputs = [(param.prepare_inputs(sx), sy) for sx, sy in splits]

    def glth_eval():
        for sx, sy in inputs:
            evaluate(param, weights, mask, sx, sy, eval_batch)

    cfg = TrajectoryConfig(
        dataset=case.dataset,
        data_dir=str(case.data_dir),
        model=case.model,
        dictionary=spec,
        tau=0.2,
        rounds=rounds,
        seed=0,
        device=device,
        train=TrainConfig(steps=steps, batch_size=case.batch_size, lr=case.lr, momentum=0.9),
    )
    first = Trajectory(cfg, data=data)
    first.run_round()
    after_round_0 = copy.deepcopy(first.state)

    def glth_round():
        t = Trajectory(cfg, data=data, state=copy.deepcopy(after_round_0))
        t0 = time.perf_counter()
        record = t.run_round()
        sync(device)
        return {"glth_round": time.perf_counter() - t0, "glth_train": record["wall_seconds"]}

    return {"train": train, "forward": forward, "glth_eval": glth_eval, "glth_round": glth_round}


def fastest(arms: dict, repeats: int, device: str, into: dict[str, list[float]]) -> None:
    """``repeats`` timings of each arm, round-robin, appended to ``into`` (after one warm-up). An arm
    that returns {name: seconds} times itself."""
    for fn in arms.values():
        fn()
    for _ in range(repeats):
        for k, fn in arms.items():
            sync(device)
            t0 = time.perf_counter()
            own = fn()
            sync(device)
            for name, seconds in (own or {k: time.perf_counter() - t0}).items():
                into.setdefault(name, []).append(seconds)


# -- one case: floor before, the run, floor after ---------------------------------------------------
def run_case(case: Case, rounds: int, steps: int, repeats: int, device: str) -> list[float]:
    data = datasets.load(case.dataset, case.data_dir, device=device)
    eval_batch = TrainConfig().eval_batch_size
    arms = {}
    for spec in case.dictionaries:
        arms[dictionaries.label_of(spec)] = floor_arms(case, data, spec, rounds, steps, device, eval_batch)
    times = {label: {} for label in arms}
    for label, a in arms.items():
        fastest(a, repeats, device, times[label])
    # not during the run: on 2 cores the floor would slow the run's trial and driver more than itself
    with tempfile.TemporaryDirectory(prefix=f"glth-bench-round-{case.key}-") as tmp:
        rows, logged, seconds = glth_run(spec_of(case, rounds, steps, device), Path(tmp))
    print(
        f"# round {case.model} {case.dataset}: glth run of {len(case.dictionaries)} trial(s) x {rounds} rounds of "
        f"{steps} steps: {seconds:.0f} s",
        flush=True,
    )
    for label, a in arms.items():
        fastest(a, repeats, device, times[label])
    ratios = []
    for spec in case.dictionaries:
        label = dictionaries.label_of(spec)
        mine = rows[rows["dictionary"] == label].sort_values("round")
        later = mine[mine["round"] >= 1]
        if later.empty:
            print(f"round {case.model} {case.dataset} {label}: no rows after round 0", flush=True)
            continue
        t = {k: min(v) for k, v in times[label].items()}
        floor = t["train"] + t["forward"]
        has_eval = "eval_seconds" in later and later["eval_seconds"].notna().all()
        evals = [float(e) for e in later["eval_seconds"]] if has_eval else [t["glth_eval"]] * len(later)
        compute = min(float(w) + e for w, e in zip(later["wall_seconds"], evals))
        stamps = logged.get(str(mine["trial_id"].iloc[0]), [])
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        whole = min(gaps) if gaps else float("nan")
        where = "the rows' eval_seconds" if has_eval else "eval timed here: the rows have no eval_seconds"
        print(
            f"round {case.model} {case.dataset} {label}: compute {compute / floor:.2f}x floor "
            f"(train {min(later['wall_seconds']):.2f} s + eval {min(evals):.2f} s [{where}] vs floor {floor:.2f} s = "
            f"plain train {t['train']:.2f} s + forward {t['forward']:.2f} s) {verdict(compute / floor, TARGET)}",
            flush=True,
        )
        print(
            f"round {case.model} {case.dataset} {label}: whole round {whole / floor:.2f}x floor "
            f"({whole:.2f} s between the driver's reports; {whole - compute:+.2f} s besides training and evaluation, "
            f"for state and ticket writes, Tune's report, Parquet, MLflow, sparsifying) {verdict(whole / floor, TARGET)}",
            flush=True,
        )
        print(
            f"round {case.model} {case.dataset} {label}: here, without Ray: Trajectory.run_round {t['glth_round'] / floor:.2f}x "
            f"floor ({t['glth_round']:.2f} s = training {t['glth_train'] / t['train']:.2f}x plain, evaluation "
            f"{t['glth_eval'] / t['forward']:.2f}x the plain forward, {t['glth_round'] - t['glth_train'] - t['glth_eval']:+.2f} s "
            f"sparsify, next mask, ticket)",
            flush=True,
        )
        ratios += [compute / floor, whole / floor]
    return ratios


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--only", nargs="*", default=None, choices=[c.key for c in CASES])
    p.add_argument("--rounds", type=int, default=None, help="rounds per trial (default 6; --quick 4)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU machine (trials then take gpu: 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (4 if args.quick else 6)
    repeats = 2 if args.quick else args.repeats
    print(
        f"# round: each round of a real `glth run` vs plain PyTorch of the same steps + one forward pass over "
        f"train/val/test; {rounds} rounds, 1 trial at a time, {args.threads} thread(s), {args.device}, wall clock; "
        f"each number the fastest of its samples (floor: {repeats} before and {repeats} after the run; "
        f"rounds 1…R−1; a machine shared with other work slows samples, never speeds them)",
        flush=True,
    )
    for case in CASES:
        if args.only is not None and case.key not in args.only:
            continue
        if case.data_dir is not None and not case.data_dir.is_dir():
            print(f"round {case.model} {case.dataset}: skipped, no data at {case.data_dir}", flush=True)
            continue
        steps = max(10, case.steps // 4) if args.quick else case.steps
        run_case(case, rounds, steps, repeats, args.device)


if __name__ == "__main__":
    main()
