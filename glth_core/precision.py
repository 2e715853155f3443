"""Where a training forward runs: TensorFloat-32 matmuls, bfloat16 autocast and NHWC inputs on
CUDA (``TrainConfig.precision`` and ``channels_last``); every one a no-op on CPU."""

from __future__ import annotations

import contextlib

import torch

from glth_core.schedule import TrainConfig


def on_cuda(x: torch.Tensor) -> bool:
    return x.device.type == "cuda"


@contextlib.contextmanager
def matmul_precision(cfg: TrainConfig, x: torch.Tensor):
    """TensorFloat-32 matmuls and convolutions for ``precision: tf32`` on CUDA, restored after."""
    if cfg.precision != "tf32" or not on_cuda(x):
        yield
        return
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def forward_precision(cfg: TrainConfig, x: torch.Tensor):
    """The context a training forward runs in: bfloat16 autocast for ``precision: bf16`` on CUDA."""
    if cfg.precision == "bf16" and on_cuda(x):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def input_format(cfg: TrainConfig, x: torch.Tensor) -> torch.memory_format | None:
    """NHWC for ``channels_last`` with image inputs on CUDA; None (leave as is) otherwise."""
    return torch.channels_last if cfg.channels_last and on_cuda(x) and x.dim() == 4 else None
