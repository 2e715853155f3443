"""Forward latency of exported channel tickets of the CIFAR networks against the dense (masked)
network they come from — the number `glth export --bench` prints for one trial, here for a ticket
drawn without training so that it needs no sweep:

    export cifar_resnet_20 channels out, every block's conv1 (9 convs), half the filters: 1.30x faster than dense (… ms vs … ms), 0.52x the parameters, …

The ticket: a composite of ``channels per: out`` parts, one per conv whose filters can leave (a
ResNet block's ``conv1``, whose outputs reach only ``bn1`` and ``conv2``; every other VGG conv), with
half of each part's filters pruned (a seeded draw). ``glth_core.export.export`` removes them (the
BatchNorm after them loses those channels, the next conv those inputs); the exported network is
checked against the masked one (max |difference| / max |output| ≤ 1e-5) before it is timed. Latency: median wall seconds of one
forward pass on a batch of CIFAR-shaped images, the two networks timed interleaved
(``glth_core.export.latency``), eval mode, ``--threads`` torch threads. There is no target: the
speed-up of a channel ticket is what the pruned shapes allow, and this prints it.

    .venv/bin/python benchmarks/bench_export.py [--quick] [--threads 1] [--batch 64] [--device cuda]
"""

from __future__ import annotations

import os

import torch
from common import add_device, parser
from torch import nn

from glth_core import dictionaries, models
from glth_core import export as gexport
from glth_core.ticket import Ticket
from glth_core.train import Parameterization

TOLERANCE = 1e-5
#: model: (the convs whose filters the ticket prunes, in words; which of the model's convs those are).
#: A ResNet block's conv1 (its outputs reach no residual sum); every other VGG conv, since a conv
#: both losing filters and losing inputs to the conv before it is one part's change on a module
#: another part replaces, which export leaves masked-dense (docs/dictionaries.md, composite).
PRUNED = {
    "cifar_resnet_20": (
        "every block's conv1",
        lambda convs: [c for c in convs if c.startswith("blocks.") and c.endswith(".conv1")],
    ),
    "cifar_vgg_16": ("every other conv", lambda convs: convs[0::2]),
}


def channel_ticket(model: nn.Module, pruned, keep: float = 0.5, seed: int = 0):
    """(dictionary, ticket, convs): ``channels per: out`` on the convs ``pruned`` picks from the
    model's, about ``keep`` of their filters kept (a seeded draw)."""
    layers = pruned([n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)])
    d = dictionaries.build(
        {"kind": "composite", "parts": [{"kind": "channels", "layer": n, "per": "out"} for n in layers]}, model
    )
    g = torch.Generator().manual_seed(seed)
    ids = torch.unique(d.groups)
    kept = ids[torch.rand(len(ids), generator=g) < keep]
    mask = torch.isin(d.groups, kept)
    return d, Ticket.of(1, mask, Parameterization(model, d).weights_of(model)), len(layers)


def with_statistics(model: nn.Module, seed: int = 1, batches: int = 3) -> nn.Module:
    """``model`` in eval mode after a few forward passes in training mode on random images, so its
    BatchNorm running statistics are the data's, not their initial 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(32, 3, 32, 32, generator=g))
    return model.eval()


def measure(name: str, batch: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    model = with_statistics(models.build(name, (3, 32, 32), 10))
    d, ticket, n_layers = channel_ticket(model, PRUNED[name][1])
    masked = gexport.masked_model(model, d, ticket).to(device)
    exported = gexport.export(model, d, ticket).module.eval().to(device)
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(device)
    with torch.no_grad():
        want = masked(x)
        diff = float((exported(x) - want).abs().max() / want.abs().max())
        if not diff <= TOLERANCE:
            raise SystemExit(f"export {name}: exported network disagrees with the masked one by {diff:.3g} (relative)")
        dense_s, ours_s = gexport.latency([masked, exported], x, repeats)
    return {
        "layers": n_layers,
        "dense_ms": 1000 * dense_s,
        "ms": 1000 * ours_s,
        "params": gexport.count_parameters(exported) / gexport.count_parameters(masked),
        "diff": diff,
    }


def main() -> None:
    p = parser(__doc__)
    add_device(p)
    p.add_argument("--batch", type=int, default=64, help="images in the timed forward pass")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else max(args.repeats, 10)
    print(
        f"# export: channel tickets (half the filters), batch {args.batch} of 3x32x32, "
        f"{torch.get_num_threads()} thread(s), wall clock, {args.device}, median of {repeats}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for name, (what, _) in PRUNED.items():
        r = measure(name, args.batch, repeats, args.device)
        print(
            f"export {name} channels out, {what} ({r['layers']} convs), half the filters: "
            f"{r['dense_ms'] / r['ms']:.2f}x faster than dense ({r['ms']:.1f} ms vs {r['dense_ms']:.1f} ms), "
            f"{r['params']:.2f}x the parameters, max |exported - masked| / max |masked| = {r['diff']:.1g} (no target)",
            flush=True,
        )
    print(f"# load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
