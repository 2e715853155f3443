"""One round's row: the ticket evaluated on every split, plus its per-layer view and its cost.
Shared by IMP (``glth_core.imp``) and the strong-ticket search (``glth_core.strong.edge_popup``)."""

from __future__ import annotations

import time

import torch

from glth_core import data as datasets
from glth_core.evaluation import Evaluation, evaluate, train_eval_split
from glth_core.flops import ticket_flops
from glth_core.layer_density import layer_density_json
from glth_core.parameterization import Parameterization, Weights
from glth_core.schedule import TrainConfig
from glth_core.ticket import Ticket

#: the columns ``round_record`` adds to ``experiment.ROUND_COLUMNS`` (declared by the imp kind)
VIEW_COLUMNS: dict[str, type] = {"layer_density": str, "flops": int, "flops_dense": int}


def evaluated_split(inputs: dict, data: datasets.Dataset, split: str, train_cfg: TrainConfig):
    """(inputs, labels) a round evaluates ``split`` on: the train split through ``train_eval_size``."""
    x, y = inputs[split], getattr(data, f"{split}_y")
    return train_eval_split(x, y, train_cfg.train_eval_size) if split == "train" else (x, y)


def round_record(
    param: Parameterization,
    inputs: dict,
    data: datasets.Dataset,
    w: Weights,
    mask: torch.Tensor,
    round_index: int,
    steps: int,
    train_cfg: TrainConfig,
    seconds: float,
    evaluations: dict[str, Evaluation] | None = None,
    eval_seconds: float | None = None,
) -> dict:
    """One round's row: ``w`` under ``mask`` evaluated on every split. ``inputs`` are the splits as the
    parameterization sees them (``prepare_inputs``). ``evaluations`` ({split: Evaluation}) are used
    instead when given (batched seeds evaluate together; ``eval_seconds`` is then their share of that
    time, else the evaluation here is timed). ``layer_density``: the kept fraction of each
    parameter tensor as JSON (``glth_core.layer_density``); ``flops`` / ``flops_dense``: the exported
    ticket's and the dense model's FLOPs on one input (``glth_core.flops``)."""
    dictionary = param.dictionary
    ev = evaluations
    if ev is None:
        t0 = time.perf_counter()
        ev = {
            split: evaluate(param, w, mask, *evaluated_split(inputs, data, split, train_cfg), train_cfg.eval_batch_size)
            for split in ("train", "val", "test")
        }
        eval_seconds = time.perf_counter() - t0
    kept, total = int(mask.sum()), dictionary.size
    n_train = inputs["train"].shape[0]
    record = {
        "round": round_index,
        "kept": kept,
        "total": total,
        "density": kept / total,
        "compression": 1.0 - kept / total,
        "test_accuracy": ev["test"].accuracy,
        "test_loss": ev["test"].loss,
        "val_accuracy": ev["val"].accuracy,
        "train_accuracy": ev["train"].accuracy,
        "train_loss": ev["train"].loss,
        "epochs": steps * train_cfg.batch_size / n_train,
        "wall_seconds": seconds,
        "eval_seconds": eval_seconds,
        "rank": None,
    }
    groups = dictionary.groups
    if groups is not None:
        kept_groups = torch.unique(groups[mask])
        record["rank"] = int(kept_groups.numel())
        if dictionary.groups_are_inputs:
            record["kept_inputs"] = kept_groups.tolist()
    record["layer_density"] = layer_density_json(dictionary, mask, param.model)
    record.update(ticket_flops(param.model, dictionary, Ticket.of(round_index, mask, w), data.input_shape))
    return record
