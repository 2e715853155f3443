"""Where each round of an IMP trajectory starts training, over which steps of the schedule, and
on which data order: the rewinding modes of the lottery-ticket literature.

``rewind`` (round t ≥ 1; round 0 always trains the dense network from the initialization):

* ``init`` — weights rewound to the initialization, the full schedule, round t's own data
  order (Frankle & Carbin 2019).
* ``{step: k}`` / ``{epoch: e}`` — late rewinding (Frankle et al. 2020; open_lth
  ``--rewinding_steps``; an epoch is ``ceil(n_train / batch_size)`` steps): weights rewound to
  w_k, the weights of round 0 after k steps, and the remaining T − k steps trained with the
  learning-rate schedule *and* the data order resumed at step k. As in open_lth (whose data
  order seed is the same for every level), every round of such a trajectory draws the one data
  order of round 0. What is saved at k is what open_lth saves, the weights alone: every training
  that passes step k starts a fresh optimizer there (momentum, Adam moments and step count zero),
  round 0 included, which is open_lth's pretraining to k followed by its level-0 training from
  k. Hence, under an all-ones mask, a rewound round repeats round 0's steps k…T bit for bit.
* ``none`` — fine-tuning: the previous round's trained weights, T steps at a constant rate,
  ``train.finetune_lr`` or else the schedule's final rate (refused where that is 0, e.g. cosine).
* ``lr`` / ``{lr_step: k}`` / ``{lr_epoch: e}`` — learning-rate rewinding (Renda et al. 2020):
  the previous round's trained weights, the schedule replayed from step k (``lr``: k = 0) for
  T − k steps, on round t's own data order from its step k (so ``{lr_step: 0}`` is ``lr``).

The ``reinit`` control trains the round's mask from a fresh initialization (drawn with seed +
``REINIT_SEED_OFFSET``). It follows the rewind mode as open_lth's ``randomly_reinitialize``
branch does: where the ticket restarts from an early state (``init``, late rewinding) the fresh
weights train exactly the ticket's steps, rates and batches (with late rewinding steps k…T, the
fresh weights standing in for w_k; round 0: the same schedule, restart at k included). Where the
ticket continues from its trained weights (fine-tuning, learning-rate rewinding) a fresh
initialization has nothing to continue, so it trains the full schedule from step 0: the
train-from-scratch baseline of Liu et al. 2019 and Renda et al. 2020.

``rewind_norm`` (``none`` | ``tensor`` | ``part``): norm-preserving rewind. Rewinding keeps the
initial coefficients a_0 of the surviving elements only, so the rewound weights are P w_0, the
projection of w_0 onto the span of the kept elements. On a subspace that does not depend on w_0 (a
random mask; in a random rotation, any mask that training has decorrelated from the start) P keeps
about a fraction ρ (the density) of w_0's energy: ‖P w_0‖ ≈ √ρ ‖w_0‖, so a ticket at 10% density
restarts from weights about 3× smaller than the initialization its layers were scaled for, and part
of a random-rotation ticket's gain (or loss) may be an effect of init *scale*, not of the subspace.
IMP's own masks keep large trained coefficients, which after short training are mostly the large
initial ones, so they shrink less (digits, mlp_300_100, 1 epoch a round: ‖P w_0‖/‖w_0‖ = 0.68 at
ρ = 1/8 for random-fast and 0.69 for canonical, against √ρ = 0.35 under ``control: random_mask``,
measured 0.353 and 0.351). ``tensor`` rescales the kept coefficients of each scope tensor by
‖a_0,T‖ / ‖(a_0 ⊙ m)_T‖, so every rewound tensor has its initial norm (in model coordinates too:
each tensor's elements are orthonormal within it), which needs coefficients that belong to one
tensor each (``glth_core.layer_density``); ``part`` rescales each composite part (or the whole
dictionary) as one. Free parameters are never rescaled. It applies to every rewound start of a
round ≥ 1 (the init, a late rewinding point w_k: its own norm, and the reinit control's fresh
init, which trains the same mask); fine-tuning and lr rewinding continue from trained weights,
so they refuse it. A segment with nothing kept, or everything kept, is left as it is (density 1
changes nothing, bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from glth_core.controls import control_of
from glth_core.schedule import SchedulePlan, TrainConfig

if TYPE_CHECKING:
    from glth_core.parameterization import Weights

REWINDS = ("init", "none", "lr")
#: norm-preserving rewind: off, per scope tensor, per composite part (or the whole dictionary)
REWIND_NORMS = ("none", "tensor", "part")
#: the one key of a mapping-valued rewind: weight rewinding to a step or epoch, lr rewinding likewise
REWIND_KEYS = ("step", "epoch", "lr_step", "lr_epoch")
_ALLOWED = f"{', '.join(REWINDS)}, or one of {{step: k}}, {{epoch: e}}, {{lr_step: k}}, {{lr_epoch: e}}"


class TrainJob(NamedTuple):
    """One training a round needs: where it starts, which steps of the schedule it runs (``plan``),
    a step callback, and the round whose data order it draws (``streams.round_generator(seed, data_round)``)."""

    start: "Weights"
    plan: SchedulePlan
    on_step: Callable[[int, "Weights"], None] | None
    data_round: int


def check_rewind(rewind) -> None:
    if isinstance(rewind, dict):
        key = next(iter(rewind), None)
        value = rewind.get(key)
        if (
            len(rewind) != 1
            or key not in REWIND_KEYS
            or isinstance(value, bool)
            or not isinstance(value, int)
            or value < 0
        ):
            raise ValueError(f"rewind: {rewind!r} is not {_ALLOWED} with an integer ≥ 0")
    elif rewind not in REWINDS:
        raise ValueError(f"rewind: {rewind!r} is not one of {_ALLOWED}")


def rewind_label(rewind) -> str:
    """The rewind in run names: init, none, lr, step5, epoch2, lrstep5, lrepoch2."""
    if isinstance(rewind, dict):
        ((key, value),) = rewind.items()
        return f"{key.replace('_', '')}{value}"
    return str(rewind)


def is_late(rewind) -> bool:
    """Weight rewinding to a step k (``{step: k}`` or ``{epoch: e}``)."""
    return isinstance(rewind, dict) and next(iter(rewind)) in ("step", "epoch")


def continues_trained(rewind) -> bool:
    """Rounds start from the previous round's trained weights (fine-tuning or lr rewinding)."""
    return rewind in ("none", "lr") or (isinstance(rewind, dict) and next(iter(rewind)) in ("lr_step", "lr_epoch"))


def rewind_step(rewind, train: TrainConfig, n_train: int) -> int:
    """The step k a mapping-valued rewind names (epochs converted with the round's steps per
    epoch), checked to be below the round's T steps; 0 for ``init``, ``none`` and ``lr``."""
    if not isinstance(rewind, dict):
        return 0
    ((key, value),) = rewind.items()
    k = value * train.steps_per_epoch(n_train) if key.endswith("epoch") else value
    total = train.total_steps(n_train)
    if k >= total:
        raise ValueError(f"rewind.{key}: {value} is step {k}, not below the {total} steps of a round")
    return k


def check_with_train(rewind, train: TrainConfig) -> None:
    """What a rewind needs of the training, checked without the data: fine-tuning needs a nonzero
    rate (``rewind: none`` with a schedule ending at 0 and no ``train.finetune_lr`` is refused), and a
    step k must be below ``train.steps`` when that fixes T (epochs are checked once the data is known)."""
    if rewind == "none" and train.finetune_lr is None and train.final_lr() == 0:
        raise ValueError(
            f"train.finetune_lr: rewind none fine-tunes at train.schedule {train.schedule}'s final "
            "rate, which is 0; give train.finetune_lr"
        )
    if isinstance(rewind, dict) and train.steps is not None:
        ((key, value),) = rewind.items()
        if key in ("step", "lr_step") and value >= train.steps:
            raise ValueError(f"rewind.{key}: {value} is not below the {train.steps} steps of a round (train.steps)")


def check_rewind_norm(rewind_norm, rewind) -> None:
    """``rewind_norm`` is one of ``REWIND_NORMS`` and (when on) meets a rewind that restarts from an
    early state (``init`` or late rewinding), not one that continues trained weights."""
    if rewind_norm not in REWIND_NORMS:
        raise ValueError(f"rewind_norm: {rewind_norm!r} is not one of {', '.join(REWIND_NORMS)}")
    if rewind_norm != "none" and continues_trained(rewind):
        raise ValueError(
            f"rewind_norm: {rewind_norm} rescales a rewound start; rewind {rewind_label(rewind)} "
            "continues from trained weights (use rewind init or {step: k}, or rewind_norm none)"
        )


def norm_segments(dictionary, mode: str) -> list[tuple[int, int]]:
    """The coefficient ranges [start, stop) that ``rewind_norm: mode`` rescales as one: each scope
    tensor's (``tensor``; a one-line ValueError where a dictionary part mixes tensors), each
    composite part's or the whole dictionary's (``part``), none (``none``)."""
    from glth_core.layer_density import tensor_segments

    if mode == "none":
        return []
    if mode == "part":
        return [(start, stop) for _, start, stop in dictionary.part_ranges()]
    segments = tensor_segments(dictionary)
    mixed = [name for name, seg in segments.items() if seg is None]
    if mixed:
        raise ValueError(
            f"rewind_norm: tensor needs coefficients that each belong to one tensor; this dictionary "
            f"mixes {', '.join(mixed[:3])}{', …' if len(mixed) > 3 else ''} (use rewind_norm part)"
        )
    return list(segments.values())


def preserve_norm(start: "Weights", mask: torch.Tensor, segments) -> "Weights":
    """``start`` with each segment's coefficients scaled by ‖a_seg‖ / ‖(a ⊙ mask)_seg‖ (in float64),
    so the kept part of every segment has the whole segment's norm; segments fully kept or fully
    pruned are left alone, free parameters too. A new ``Weights``; ``start`` is not changed."""
    if not segments:
        return start
    from glth_core.parameterization import Weights

    a = start.coeffs.detach().clone()
    keep = mask.to(torch.bool)
    for lo, hi in segments:
        m = keep[lo:hi]
        if bool(m.all()) or not bool(m.any()):
            continue
        seg = a[lo:hi].double()
        kept = float(seg[m].norm())
        if kept > 0:
            a[lo:hi] = (seg * (float(seg.norm()) / kept)).to(a.dtype)
    return Weights(a, dict(start.free))


def round_jobs(
    config: Any,  # a glth_core.trajectory.TrajectoryConfig (that module imports this one)
    state: Any,  # its TrajectoryState
    n_train: int,
    capture: Callable[["Weights"], None],
    segments: list[tuple[int, int]] | None = None,
) -> list[TrainJob]:
    """The trainings of ``state``'s next round: the ticket's, then the control's extra ones
    (``Control.extra_starts``: reinit's fresh initialization). ``capture(w_k)`` receives round 0's weights at the late-rewinding step.
    ``segments`` (``norm_segments``): the rewound starts of rounds ≥ 1 keep their norm there."""
    rewind, t = config.rewind, state.round
    k = rewind_step(rewind, config.train, n_train)
    late = is_late(rewind)
    if t == 0:
        on_step = None
        if late and k == 0:
            capture(state.init.clone())
        elif late:

            def on_step(step, w):
                if step == k:
                    capture(w.clone())

        plan = SchedulePlan(restart_at=k) if late and k > 0 else SchedulePlan()
        ticket = TrainJob(state.init, plan, on_step, 0)
    elif late:
        ticket = TrainJob(state.rewind_point, SchedulePlan(start_step=k), None, 0)
    elif rewind == "init":
        ticket = TrainJob(state.init, SchedulePlan(), None, t)
    elif rewind == "none":
        ticket = TrainJob(state.last, SchedulePlan(lr=config.train.finetune_rate()), None, t)
    else:  # lr rewinding from step k (``lr``: k = 0)
        ticket = TrainJob(state.last, SchedulePlan(start_step=k), None, t)
    rescale = bool(segments) and t > 0 and not continues_trained(rewind)
    if rescale:
        ticket = ticket._replace(start=preserve_norm(ticket.start, state.mask, segments))
    jobs = [ticket]
    for start in control_of(config.control).extra_starts(state):  # reinit: the mask from a fresh init
        if continues_trained(rewind):
            jobs.append(TrainJob(start, SchedulePlan(), None, t))
        else:
            fresh = preserve_norm(start, state.mask, segments) if rescale else start
            jobs.append(TrainJob(fresh, ticket.plan, None, ticket.data_round))
    return jobs
