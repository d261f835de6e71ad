"""Random-weight models for tests and the demo, reproducible from a seed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def random_model(factory: Callable[[], M], seed: int = 0) -> M:
    """Build ``factory()`` with seeded default init, then give every norm layer
    non-trivial statistics and affine parameters.

    Fresh BatchNorm layers have mean 0, variance 1, weight 1 and bias 0, which
    would let a wrong BatchNorm fold or a swapped buffer pass every parity test.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = factory()
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._NormBase) and layer.track_running_stats:
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 1.5)
            if isinstance(layer, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) and getattr(layer, "weight", None) is not None:
                layer.weight.data.uniform_(0.8, 1.2)
                layer.bias.data.uniform_(-0.1, 0.1)
    return module.eval()
