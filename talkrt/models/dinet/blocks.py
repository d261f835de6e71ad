"""Convolution blocks shared by DINet (MRzzm/DINet) and the DH_live renderer.

Module and parameter names (``conv``, ``norm``; ``conv1``, ``conv2``, ``norm1``,
``norm2`` and ``channel_conv`` when the width changes) follow ``models/DINet.py``
so the official state_dicts load strictly. The originals use SyncBatchNorm,
whose state_dict keys equal BatchNorm's; plain BatchNorm is used here.

Layer order (all from the original):

* Same/Down blocks: conv -> BN -> ReLU (Down: stride 2).
* UpBlock2d: nearest x2 ``F.interpolate`` -> conv -> BN -> ReLU.
* ResBlock: BN -> ReLU -> conv1 -> BN -> ReLU -> conv2, plus the input (or a
  1x1 ``channel_conv`` of it when in != out). Both norms have ``in`` channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


class _ConvNormAct(nn.Module):
    """conv -> BatchNorm -> ReLU, in 1-D or 2-D."""

    def __init__(self, dims: int, cin: int, cout: int, kernel_size: int, padding: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = _CONV[dims](cin, cout, kernel_size=kernel_size, padding=padding, stride=stride)
        self.norm = _NORM[dims](cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.conv(x)))


class SameBlock1d(_ConvNormAct):
    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__(1, in_features, out_features, kernel_size, padding)


class SameBlock2d(_ConvNormAct):
    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__(2, in_features, out_features, kernel_size, padding)


class DownBlock1d(_ConvNormAct):
    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__(1, in_features, out_features, kernel_size, padding, stride=2)


class DownBlock2d(_ConvNormAct):
    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1, stride: int = 2) -> None:
        super().__init__(2, in_features, out_features, kernel_size, padding, stride=stride)


class UpBlock2d(_ConvNormAct):
    """Nearest-neighbour x2 upsampling, then conv -> BN -> ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__(2, in_features, out_features, kernel_size, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _ResBlock(nn.Module):
    """Pre-activation residual block: (BN, ReLU, conv) twice, plus a skip."""

    def __init__(self, dims: int, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        conv, norm = _CONV[dims], _NORM[dims]
        self.conv1 = conv(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = conv(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = norm(in_features)
        self.norm2 = norm(in_features)
        self.relu = nn.ReLU()
        self.channel_conv = conv(in_features, out_features, 1) if in_features != out_features else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        skip = x if self.channel_conv is None else self.channel_conv(x)
        return out + skip


class ResBlock1d(_ResBlock):
    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__(1, in_features, out_features, kernel_size, padding)


class ResBlock2d(_ResBlock):
    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__(2, in_features, out_features, kernel_size, padding)


__all__ = ["SameBlock1d", "SameBlock2d", "DownBlock1d", "DownBlock2d", "UpBlock2d", "ResBlock1d", "ResBlock2d"]
