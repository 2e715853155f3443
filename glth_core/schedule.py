"""How one round trains: ``TrainConfig`` (optimizer, learning-rate schedule, warmup, the
fine-tuning rate) and ``SchedulePlan``, which steps of that schedule one training runs.

The schedule spans the round's T steps (``total_steps``). A training normally runs steps 0…T−1;
a ``SchedulePlan`` may start it at step k (late rewinding and learning-rate rewinding resume the
schedule *and* the data order there, as open_lth's ``start_step`` does), pin the rate
(fine-tuning) or restart the optimizer at a step (open_lth rewinds weights only, so every
training that passes a rewind point starts a fresh optimizer there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from glth_core.config import Config
from glth_core.data.augment import check_augment

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")
#: fp32: exact float32. tf32: float32 storage, TensorFloat-32 matmuls/convolutions on CUDA.
#: bf16: the training forward under torch.autocast(bfloat16) on CUDA. Both are no-ops on CPU.
PRECISIONS = ("fp32", "tf32", "bf16")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig(Config):
    """How one round trains. ``steps`` (when set) overrides ``epochs``.

    ``warmup_steps``: linear warmup, the schedule's rate times min(1, step / warmup_steps) (open_lth's
    ``--warmup_steps``: the rate at step 0 is 0). ``finetune_lr``: the constant rate of fine-tuning
    (``rewind: none``); without it fine-tuning runs at the schedule's final rate (``final_lr``), as
    open_lth and Renda et al. 2020 do, which a cosine schedule makes 0 (refused by the trajectory).
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    #: for ``schedule: step``: fractions of the round's steps where lr is multiplied by gamma
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    eval_batch_size: int = 2048
    #: train accuracy and loss (and the LMC train barrier) on a fixed subset of this many training
    #: images, the same every round and seed; 0: the whole train split (``evaluation.train_eval_split``)
    train_eval_size: int = 0
    precision: str = "fp32"
    #: conv models on CUDA: inputs and 4-D weights in NHWC memory format (a no-op on CPU)
    channels_last: bool = False
    warmup_steps: int = 0
    finetune_lr: float | None = None
    #: training batches augmented on the device: none, or crop_flip (``glth_core.data.augment``)
    augment: str = "none"

    def check(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule: {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size: must be ≥ 1, got {self.batch_size}")
        if self.steps is None and self.epochs < 1:
            raise ValueError(f"train.epochs: must be ≥ 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"train.steps: must be ≥ 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"train.lr: must be > 0, got {self.lr}")
        if not _count(self.warmup_steps) or self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps: must be an integer ≥ 0, got {self.warmup_steps!r}")
        if not _count(self.train_eval_size) or self.train_eval_size < 0:
            raise ValueError(
                f"train.train_eval_size: must be an integer ≥ 0 (0: the whole train split), "
                f"got {self.train_eval_size!r}"
            )
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise ValueError(f"train.finetune_lr: must be > 0 (or left out), got {self.finetune_lr}")
        check_augment(self.augment)
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def steps_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.batch_size)

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return self.steps
        return self.epochs * self.steps_per_epoch(n_train)

    def _schedule_at(self, step: int, total: int) -> float:
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        if self.schedule == "step":
            passed = sum(step >= m * total for m in self.milestones)
            return self.lr * self.gamma**passed
        return self.lr

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate at ``step`` of a schedule that spans ``total`` steps (warmup included)."""
        rate = self._schedule_at(step, total)
        if self.warmup_steps > 0:
            rate *= min(1.0, step / self.warmup_steps)
        return rate

    def final_lr(self) -> float:
        """The rate the schedule ends at (step T of T): lr for constant, lr·γ^(milestones ≤ 1) for
        step, 0 for cosine."""
        return self._schedule_at(1, 1)

    def finetune_rate(self) -> float:
        """Fine-tuning's constant rate: ``finetune_lr`` when given, else ``final_lr()``."""
        return self.finetune_lr if self.finetune_lr is not None else self.final_lr()


@dataclass(frozen=True)
class SchedulePlan:
    """Which steps of the round's schedule one training runs, and how.

    ``start_step``: the schedule position (and data-order position) the training starts at; it
    runs steps start_step…T−1, so T − start_step optimizer steps. ``lr``: a constant rate instead
    of the schedule (fine-tuning). ``restart_at``: a fresh optimizer (momentum and Adam moments
    zero) at this step, the weights-only rewind point of open_lth."""

    start_step: int = 0
    lr: float | None = None
    restart_at: int | None = None
