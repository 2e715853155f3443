"""Per-epoch training time in each dictionary vs plain PyTorch training (an nn.Module + torch.optim
SGD loop on the same data tensors, same batch size, same threads), one line per dictionary:

    epoch cnn_paper canonical: 1.04x plain (0.91 s vs 0.87 s) target <=1.10 OK

The dictionary arms run ``glth_core.train.train`` on the dense mask (round 0: the most
expensive round for the input bottleneck, whose later rounds use only kept columns). The
random-haar arm times ``--haar-steps`` steps and scales them to an epoch, with a dense
orthonormal stand-in matrix of the same size unless ``--exact-haar``.

    .venv/bin/python benchmarks/bench_epoch.py [--quick] [--threads 1] [--exact-haar]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from common import cifar_or_digits, data_label, haar_cost_dictionary, interleaved, parser, set_threads, verdict

from glth_core import dictionaries, models
from glth_core.train import Parameterization, TrainConfig, train

CNN_ARMS = {  # label: (dictionary spec, or "haar" for the stand-in; target ratio or None)
    "canonical": ({"kind": "canonical"}, 1.10),
    "bottleneck-identity (layer 7)": ({"kind": "bottleneck", "layer": "7", "basis": "identity"}, 1.10),
    "blockdiag-dct": ({"kind": "blockdiag", "per": "tensor", "block": "dct"}, 1.25),
    "random-fast v2": ({"kind": "random", "method": "fast", "seed": 0, "version": 2}, 1.20),
    "random-fast v1": ({"kind": "random", "method": "fast", "seed": 0, "version": 1}, None),
    "random-haar": ("haar", None),
}
MLP_ARMS = {
    "bottleneck-identity (layer 1)": ({"kind": "bottleneck", "layer": "1", "basis": "identity"}, 1.10),
    "bottleneck-dct (layer 1)": ({"kind": "bottleneck", "layer": "1", "basis": "dct"}, 1.25),
}


def fresh_model(name, data):
    torch.manual_seed(0)
    return models.build(name, data.input_shape, data.num_classes)


def plain_arm(name, data, cfg: TrainConfig, steps: int):
    model = fresh_model(name, data)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data.train_x, data.train_y

    def run():
        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        for idx in order.split(cfg.batch_size)[:steps]:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx)).backward()
            opt.step()

    return run


def glth_arm(name, data, cfg: TrainConfig, spec, exact_haar: bool):
    model = fresh_model(name, data)
    d = haar_cost_dictionary(model, exact_haar) if spec == "haar" else dictionaries.build(spec, model, data.train_x)
    param = Parameterization(model, d)
    start = param.weights_of(model)
    mask = torch.ones(d.size, dtype=torch.bool)
    x = param.prepare_inputs(data.train_x)  # once per dataset (the input bottleneck's x ↦ x U)
    return lambda: train(param, start, mask, x, data.train_y, cfg, torch.Generator().manual_seed(0))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--train-images", type=int, default=5000)
    p.add_argument("--haar-steps", type=int, default=8, help="steps timed for random-haar, scaled to an epoch")
    p.add_argument(
        "--exact-haar", action="store_true", help="draw the real Haar matrix (a d³ QR: very slow at d=28,950)"
    )
    p.add_argument("--skip-haar", action="store_true")
    p.add_argument(
        "--arms",
        nargs="*",
        default=None,
        metavar="LABEL",
        help="only the dictionary arms whose label starts with one of these (plain always runs)",
    )
    args = p.parse_args()
    threads = set_threads(args.threads, args.clock)
    repeats = 2 if args.quick else args.repeats
    data = cifar_or_digits(args.train_images, 1000)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.01, momentum=0.9)
    epoch_steps = math.ceil(len(data.train_y) / cfg.batch_size)
    print(
        f"# epoch: {data_label(data)}, batch {cfg.batch_size} ({epoch_steps} steps), {threads} thread(s), "
        f"{args.clock} clock, median of {repeats}",
        flush=True,
    )

    for model_name, arms in (("cnn_paper", CNN_ARMS), ("mlp_300_100", MLP_ARMS)):
        if args.arms is not None:
            arms = {k: v for k, v in arms.items() if any(k.startswith(a) for a in args.arms)}
            if not arms:
                continue
        timers = {"plain": plain_arm(model_name, data, cfg, epoch_steps)}
        for label, (spec, _) in arms.items():
            if spec != "haar":
                timers[label] = glth_arm(model_name, data, cfg, spec, args.exact_haar)
        seconds = interleaved(timers, repeats)
        if "random-haar" in arms and not args.skip_haar:
            short = TrainConfig(steps=args.haar_steps, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum)
            per = interleaved(
                {
                    "plain": plain_arm(model_name, data, cfg, args.haar_steps),
                    "haar": glth_arm(model_name, data, short, "haar", args.exact_haar),
                },
                repeats,
            )
            seconds["random-haar"] = per["haar"] / per["plain"] * seconds["plain"]
        plain = seconds["plain"]
        for label, (_, target) in arms.items():
            if label not in seconds:
                continue
            ratio = seconds[label] / plain
            note = (
                f" [{args.haar_steps} steps scaled to an epoch{'' if args.exact_haar else ', dense orthonormal stand-in'}]"
                if label == "random-haar"
                else ""
            )
            print(
                f"epoch {model_name} {label}: {ratio:.2f}x plain ({seconds[label]:.2f} s vs {plain:.2f} s) "
                f"{verdict(ratio, target)}{note}",
                flush=True,
            )


if __name__ == "__main__":
    main()
