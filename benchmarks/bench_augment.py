"""What augmentation and glth's input path cost against a training step (batch 128), per model:

    augment cnn_paper crop_flip: 2.1% of a plain step (1.7 ms vs 80.0 ms a batch) target <=0.05 OK
    augment cnn_paper input path: 61,000 images/s vs the step's 1,600 images/s: 38.1x target >=10.00 OK
    augment cnn_paper glth step with crop_flip: 1.02x without (0.83 s vs 0.81 s) target <=1.05 OK

Arms, each over the same ``--steps`` batches of 128, run round-robin (``common.interleaved``):
``plain`` a plain PyTorch step (nn.Module forward, backward, SGD); ``crop_flip`` the augmentation
alone of those batches (``glth_core.data.augment``: draws and gather); ``input`` glth's whole input
path of a step (``batch_indices``, the batch's ``index_select``, crop_flip); ``glth none`` and
``glth crop_flip`` ``glth_core.train.train`` without and with the augmentation.

    .venv/bin/python benchmarks/bench_augment.py [--quick] [--threads 1] [--models cnn_paper conv2] [--device cuda]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
from glth_core.train import Parameterization, TrainConfig, batch_indices, train

BATCH = 128
AUGMENT_SHARE = 0.05  # crop_flip ≤ 5 % of a plain step
INPUT_MARGIN = 10.0  # the input path delivers ≥ 10× the images a step consumes
DEFAULT_MODELS = ("cnn_paper", "conv2", "cifar_resnet_20")  # the ResNet where the models registry has it


def batches(data, steps: int) -> list[torch.Tensor]:
    stream = batch_indices(len(data.train_y), BATCH, torch.Generator().manual_seed(0), data.train_x.device)
    return [next(stream) for _ in range(steps)]


def arms(name: str, data, steps: int, device: str) -> dict:
    torch.manual_seed(0)
    model = models.build(name, data.input_shape, data.num_classes).to(device)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data.train_x, data.train_y
    idx = batches(data, steps)
    xbs = [x.index_select(0, i) for i in idx]
    aug = augmenter("crop_flip", data)
    cfg = {
        a: TrainConfig(steps=steps, batch_size=BATCH, lr=0.01, momentum=0.9, augment=a) for a in ("none", "crop_flip")
    }
    param = Parameterization(model, dictionaries.build({"kind": "canonical"}, model))
    start = param.weights_of(model)
    mask = torch.ones(param.dictionary.size, dtype=torch.bool, device=start.coeffs.device)

    def plain():
        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for i, xb in zip(idx, xbs):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), y.index_select(0, i)).backward()
            opt.step()

    def crop_flip():
        stream = aug.stream(torch.Generator().manual_seed(0))
        for step, xb in enumerate(xbs):
            stream(xb, step)

    def input_path():
        g = torch.Generator().manual_seed(0)
        order, stream = batch_indices(len(y), BATCH, g, x.device), aug.stream(g)
        for step in range(steps):
            i = next(order)
            stream(x.index_select(0, i), step), y.index_select(0, i)

    def glth(a):
        return lambda: train(
            param,
            start,
            mask,
            x,
            y,
            cfg[a],
            torch.Generator().manual_seed(0),
            augment=aug if a == "crop_flip" else None,
        )

    timers = {
        "plain": plain,
        "crop_flip": crop_flip,
        "input": input_path,
        "glth none": glth("none"),
        "glth crop_flip": glth("crop_flip"),
    }
    return {k: synchronized(fn, device) for k, fn in timers.items()}


def main() -> None:
    p = parser(__doc__)
    add_device(p)
    p.add_argument(
        "--models", nargs="*", default=None, help=f"default: those of {', '.join(DEFAULT_MODELS)} that exist"
    )
    p.add_argument("--steps", type=int, default=10, help="batches of 128 each arm runs")
    p.add_argument("--train-images", type=int, default=2560)
    args = p.parse_args()
    clock = "wall" if args.device.startswith("cuda") else args.clock
    threads = set_threads(args.threads, clock)
    repeats = 2 if args.quick else args.repeats
    steps = 4 if args.quick else args.steps
    names = args.models or [m for m in DEFAULT_MODELS if m in models.MODELS][: 1 if args.quick else None]
    data = on_device(cifar_or_digits(args.train_images, 100), args.device)
    print(
        f"# augment: {data_label(data)}, batch {BATCH}, {steps} steps an arm, {threads} thread(s), {clock} clock, "
        f"{args.device}, median of {repeats}",
        flush=True,
    )
    for name in names:
        s = interleaved(arms(name, data, steps, args.device), repeats)
        share = s["crop_flip"] / s["plain"]
        print(
            f"augment {name} crop_flip: {100 * share:.1f}% of a plain step ({1e3 * s['crop_flip'] / steps:.1f} ms vs "
            f"{1e3 * s['plain'] / steps:.1f} ms a batch) {verdict(share, AUGMENT_SHARE)}",
            flush=True,
        )
        fed, eaten = steps * BATCH / s["input"], steps * BATCH / s["plain"]
        print(
            f"augment {name} input path: {fed:,.0f} images/s vs the step's {eaten:,.0f} images/s: {fed / eaten:.1f}x "
            f"{verdict(fed / eaten, INPUT_MARGIN, at_most=False)}",
            flush=True,
        )
        ratio = s["glth crop_flip"] / s["glth none"]
        print(
            f"augment {name} glth step with crop_flip: {ratio:.2f}x without ({s['glth crop_flip']:.2f} s vs "
            f"{s['glth none']:.2f} s) {verdict(ratio, 1 + AUGMENT_SHARE)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
