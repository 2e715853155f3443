"""A random rotation of the whole cnn_paper scope (d = 28,950): the seeded O(d log d) ``fast``
rotation vs the dense ``haar`` matrix, time per training step's dictionary work (synthesize
w = D a, then the backward pass through it), plus what each holds in memory.

The haar arm uses a dense orthonormal stand-in of the same size (same memory and flops per
step) unless ``--exact-haar``, which draws the real matrix (a d³ QR: ~3·10¹³ flops).

    .venv/bin/python benchmarks/bench_random.py [--quick] [--d 28950] [--exact-haar]
"""

from __future__ import annotations

import torch

from common import dense_orthogonal, interleaved, parser, set_threads, timed
from glth_core.dictionaries.transforms import FastRotation, MatrixRows, haar


def stepper(op, d: int, steps: int):
    a = torch.randn(1, d, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    g = torch.randn(1, d, generator=torch.Generator().manual_seed(1))

    def run():
        for _ in range(steps):
            (op.synthesize(a) * g).sum().backward()
            a.grad = None

    return run


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--d", type=int, default=28_950)
    p.add_argument("--exact-haar", action="store_true")
    args = p.parse_args()
    threads = set_threads(args.threads, args.clock)
    repeats = 2 if args.quick else args.repeats
    fast = FastRotation(args.d, [0])
    build = timed(lambda: None)
    if args.exact_haar:
        holder = []
        build = timed(lambda: holder.append(haar(args.d, 0)))
        q = holder[0]
    else:
        q = dense_orthogonal(args.d)
    dense = MatrixRows(q.unsqueeze(0))
    fast_steps, haar_steps = 50, 2 if args.quick else 4
    seconds = interleaved({"fast": stepper(fast, args.d, fast_steps), "haar": stepper(dense, args.d, haar_steps)}, repeats)
    t_fast, t_haar = seconds["fast"] / fast_steps, seconds["haar"] / haar_steps
    fast_bytes = sum(t.numel() * t.element_size() for c in (fast.synth, fast.anal) for op in c.ops
                     for t in vars(op).values() if isinstance(t, torch.Tensor))
    print(f"# random: d = {args.d:,}, {threads} thread(s), {args.clock} clock, median of {repeats}; "
          f"haar matrix {'drawn' if args.exact_haar else 'dense orthonormal stand-in'}", flush=True)
    print(f"random d={args.d:,} haar vs fast per step (synthesize+backward): {t_haar / t_fast:.0f}x "
          f"(haar {1e3 * t_haar:.1f} ms vs fast {1e3 * t_fast:.2f} ms; memory {q.numel() * 4 / 2**30:.2f} GiB vs "
          f"{fast_bytes / 2**20:.1f} MiB)" + (f"; haar draw {build:.0f} s" if args.exact_haar else ""), flush=True)


if __name__ == "__main__":
    main()
