"""The compute a sweep asks for, stated by ``glth run --dry-run``: per trial, rounds × trainings a
round × steps a training, summed, and device-hours where a step time has been measured for the
model on the spec's device (``STEP_SECONDS``, with the measurement it comes from); elsewhere the
line says that no step time is known. Plain data, no torch: trials come as their configs."""

from __future__ import annotations

from collections import defaultdict

from orchestrator.dry_run import _duration

#: training images of each dataset's official training split (before validation is held out)
TRAIN_SPLIT = {"digits": 1437, "mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}

#: measured seconds per training step: (model, device) → (seconds, batch size it was measured at, how)
STEP_SECONDS = {
    ("cifar_resnet_20", "cpu"): (1.4, 128, "plain PyTorch, one lightly loaded core of the 2-core development machine"),
}


def n_train(config) -> int | None:
    """Training images a trial's epoch reads: the official split less the held-out validation."""
    n = TRAIN_SPLIT.get(getattr(config, "dataset", None))
    return None if n is None else n - round(getattr(config, "val_fraction", 0.1) * n)


def trainings_per_round(config) -> int:
    """The ticket's, the reinit control's (a second training), and linear mode connectivity's two copies."""
    return 1 + (getattr(config, "control", "none") == "reinit") + 2 * bool(getattr(config, "lmc_points", 0))


def describe(trials, device: str) -> list[str]:
    """``trials``: (config, rounds left) pairs. One line per model: trials × rounds × trainings × steps,
    and the device time where a step time is measured, with that assumption; then the total steps."""
    by_model: dict[str, list] = defaultdict(list)
    epochs: dict[str, set] = defaultdict(set)
    unknown = 0
    for config, left in trials:
        train, n = getattr(config, "train", None), n_train(config)
        if train is None or n is None or not left:
            unknown += bool(left)
            continue
        by_model[config.model].append((left, trainings_per_round(config), train.total_steps(n), train.batch_size))
        if train.steps is None:
            epochs[config.model].add(f"{train.epochs} epochs of {train.steps_per_epoch(n):,} steps")
    lines = []
    for model, rows in by_model.items():
        steps = sum(left * k * t for left, k, t, _ in rows)
        rounds = sum(left for left, *_ in rows)
        trainings = sum(left * k for left, k, *_ in rows)
        per = ", ".join(f"{t:,}" for t in sorted({t for *_, t, _ in rows})) + " steps"
        per += f" ({', '.join(sorted(epochs[model]))})" if epochs[model] else ""
        line = (
            f"compute ({model}): {len(rows)} trials × {rounds:,} rounds in all, {trainings:,} trainings "
            f"(controls and LMC copies included) × {per} → {steps:,} training steps"
        )
        measured = STEP_SECONDS.get((model, device))
        if measured is None:
            line += f"; no measured step time for {model} on {device}"
        else:
            sec, batch, how = measured
            total = sum(left * k * t * sec * b / batch for left, k, t, b in rows)
            line += (
                f" ≈ {_duration(total)} of {device} time, assuming {sec:g} s a step at batch {batch} "
                f"({how}; proportional to the batch size; evaluation not counted)"
            )
        lines.append(line)
    if unknown:
        lines.append(f"compute: not estimated for {unknown} trials (no training schedule or an unknown dataset size)")
    return lines
