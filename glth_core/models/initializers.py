"""open_lth's initializers, applied with ``model.apply``: ``kaiming_normal`` for the weight of every
nn.Linear and nn.Conv2d (biases keep PyTorch's default), ``batchnorm_uniform`` for BatchNorm (weights
uniform in [0, 1), biases 0). The zoo's builders use both, open_lth's defaults for these networks."""

from __future__ import annotations

import torch
from torch import nn


def kaiming_normal(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(module.weight)


def batchnorm_uniform(module: nn.Module) -> None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.reset_parameters()
        with torch.no_grad():
            module.weight.copy_(torch.rand(module.weight.shape))


def open_lth_init(model: nn.Module) -> nn.Module:
    """``model`` initialized as open_lth initializes its CIFAR networks (the caller seeds torch)."""
    model.apply(kaiming_normal)
    model.apply(batchnorm_uniform)
    return model
