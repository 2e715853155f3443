"""A random rotation of the whole cnn_paper scope (d = 28,950): the seeded O(d log d) ``fast``
rotation (version 2, the FFT planes, and version 1, the DCT stages) vs the dense ``haar``
matrix, time per training step's dictionary work (synthesize w = D a, then the backward pass
through it), plus what each holds in memory.

The haar arm uses a dense orthonormal stand-in of the same size (same memory and flops per
step) unless ``--exact-haar``, which draws the real matrix (a d³ QR: ~3·10¹³ flops).

    .venv/bin/python benchmarks/bench_random.py [--quick] [--d 28950] [--exact-haar]
"""

from __future__ import annotations

import torch
from common import dense_orthogonal, interleaved, parser, set_threads, timed

from glth_core.dictionaries.haar import haar
from glth_core.dictionaries.random import FastRotation2
from glth_core.dictionaries.transforms import FastRotation, MatrixRows


def stepper(op, d: int, steps: int):
    a = torch.randn(1, d, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    g = torch.randn(1, d, generator=torch.Generator().manual_seed(1))

    def run():
        for _ in range(steps):
            (op.synthesize(a) * g).sum().backward()
            a.grad = None

    return run


def tensors(value, seen=None):
    """Every tensor an object holds (through attributes, lists, dicts), once each."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        if id(value) not in seen:
            seen.add(id(value))
            yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors(v, seen)
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        yield from tensors(vars(value), seen)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--d", type=int, default=28_950)
    p.add_argument("--exact-haar", action="store_true")
    args = p.parse_args()
    threads = set_threads(args.threads, args.clock)
    repeats = 2 if args.quick else args.repeats
    fast, fast_v1 = FastRotation2(args.d, [0]), FastRotation(args.d, [0])
    build = timed(lambda: None)
    if args.exact_haar:
        holder = []
        build = timed(lambda: holder.append(haar(args.d, 0)))
        q = holder[0]
    else:
        q = dense_orthogonal(args.d)
    dense = MatrixRows(q.unsqueeze(0))
    fast_steps, haar_steps = 50, 2 if args.quick else 4
    seconds = interleaved(
        {
            "fast": stepper(fast, args.d, fast_steps),
            "fast v1": stepper(fast_v1, args.d, fast_steps),
            "haar": stepper(dense, args.d, haar_steps),
        },
        repeats,
    )
    t_fast, t_v1, t_haar = seconds["fast"] / fast_steps, seconds["fast v1"] / fast_steps, seconds["haar"] / haar_steps
    fast_bytes = sum(t.numel() * t.element_size() for t in tensors(fast))
    print(
        f"# random: d = {args.d:,}, {threads} thread(s), {args.clock} clock, median of {repeats}; "
        f"haar matrix {'drawn' if args.exact_haar else 'dense orthonormal stand-in'}",
        flush=True,
    )
    print(
        f"random d={args.d:,} haar vs fast per step (synthesize+backward): {t_haar / t_fast:.0f}x "
        f"(haar {1e3 * t_haar:.1f} ms vs fast {1e3 * t_fast:.2f} ms; memory {q.numel() * 4 / 2**30:.2f} GiB vs "
        f"{fast_bytes / 2**20:.1f} MiB)" + (f"; haar draw {build:.0f} s" if args.exact_haar else ""),
        flush=True,
    )
    print(
        f"random d={args.d:,} fast version 1 vs version 2 per step: {t_v1 / t_fast:.1f}x "
        f"(v1 {1e3 * t_v1:.2f} ms vs v2 {1e3 * t_fast:.2f} ms)",
        flush=True,
    )


if __name__ == "__main__":
    main()
