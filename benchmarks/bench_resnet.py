"""A ResNet-20 training step (batch 128, crop_flip) in glth against plain PyTorch training of the
same masked ResNet-20 on the same augmented batches:

    resnet cifar_resnet_20 canonical: 1.05x plain masked PyTorch (… s vs … s) target <=1.10 OK
    resnet cifar_resnet_20 random fast: 1.25x plain masked PyTorch (… s vs … s) target <=1.30 OK

Arms, each over the same ``--steps`` batches of 128, run round-robin (``common.interleaved``):
``plain`` an nn.Module step (forward, backward, SGD with momentum and weight decay) on crop_flip
batches drawn as glth draws them, the conv and linear weights but the output layer multiplied by a
fixed random mask (half kept) after every step, as open_lth's masked training does; ``canonical``
and ``random fast`` ``glth_core.train.train`` with that scope (``weights_but_output``) and a mask of
the same density. The load average is printed: the ratios hold on a busy machine, the seconds do not.

    .venv/bin/python benchmarks/bench_resnet.py [--quick] [--threads 1] [--steps 3] [--device cuda]
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from bench_augment import BATCH, batches
from common import (
    add_device,
    cifar_or_digits,
    data_label,
    interleaved,
    on_device,
    parser,
    set_threads,
    synchronized,
    verdict,
)

from glth_core import dictionaries, models
from glth_core.data.augment import augmenter
from glth_core.train import Parameterization, TrainConfig, train

MODEL = "cifar_resnet_20"
TARGETS = {"canonical": 1.10, "random fast": 1.30}
SPECS = {
    "canonical": {"kind": "canonical", "scope": "weights_but_output"},
    "random fast": {"kind": "random", "method": "fast", "scope": "weights_but_output"},
}
OPT = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}


def arms(data, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    model = models.build(MODEL, data.input_shape, data.num_classes).to(device)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data.train_x, data.train_y
    idx = batches(data, steps)
    aug = augmenter("crop_flip", data)
    cfg = TrainConfig(steps=steps, batch_size=BATCH, augment="crop_flip", **OPT)
    out = {}
    for label, spec in SPECS.items():
        param = Parameterization(model, dictionaries.build(spec, model))
        start = param.weights_of(model)
        mask = (
            torch.rand(param.dictionary.size, generator=torch.Generator().manual_seed(1)).to(start.coeffs.device) < 0.5
        )

        def glth(param=param, start=start, mask=mask):
            train(param, start, mask, x, y, cfg, torch.Generator().manual_seed(0), augment=aug)

        out[label] = glth
    scope = Parameterization(model, dictionaries.build(SPECS["canonical"], model)).dictionary.scope_names
    params = dict(model.named_parameters())
    masks = [
        m.view_as(params[n])
        for n, m in zip(
            scope,
            torch.rand(sum(params[n].numel() for n in scope), generator=torch.Generator().manual_seed(1))
            .to(device)
            .lt(0.5)
            .split([params[n].numel() for n in scope]),
        )
    ]

    def plain():
        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), **OPT)
        stream = aug.stream(torch.Generator().manual_seed(0))
        with torch.no_grad():
            for n, m in zip(scope, masks):
                params[n].mul_(m)
        for step, i in enumerate(idx):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(stream(x.index_select(0, i), step)), y.index_select(0, i)).backward()
            opt.step()
            with torch.no_grad():
                for n, m in zip(scope, masks):
                    params[n].mul_(m)

    model.train()
    return {k: synchronized(fn, device) for k, fn in {"plain": plain, **out}.items()}


def main() -> None:
    p = parser(__doc__)
    add_device(p)
    p.add_argument("--steps", type=int, default=3, help="batches of 128 each arm runs")
    p.add_argument("--train-images", type=int, default=2560)
    args = p.parse_args()
    clock = "wall" if args.device.startswith("cuda") else args.clock
    threads = set_threads(args.threads, clock)
    repeats = 1 if args.quick else args.repeats
    steps = 2 if args.quick else args.steps
    data = on_device(cifar_or_digits(args.train_images, 100), args.device)
    print(
        f"# resnet: {MODEL}, {data_label(data)}, batch {BATCH}, crop_flip, {steps} steps an arm, {threads} thread(s), "
        f"{clock} clock, {args.device}, median of {repeats}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    s = interleaved(arms(data, steps, args.device), repeats)
    for label, target in TARGETS.items():
        ratio = s[label] / s["plain"]
        print(
            f"resnet {MODEL} {label}: {ratio:.2f}x plain masked PyTorch ({s[label]:.2f} s vs {s['plain']:.2f} s) "
            f"{verdict(ratio, target)}",
            flush=True,
        )
    print(f"# load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
