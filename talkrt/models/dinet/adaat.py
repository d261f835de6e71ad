"""AdaAT (adaptive affine transformation) from DINet, rewritten without 5-D ops.

The original (MRzzm/DINet ``models/DINet.py``; the DH_live renderer uses the
same operator) warps each channel k of a feature map F (B, D, H, W) by its own
rotation, scale and translation predicted from a parameter vector, and samples
with a **5-D** ``F.grid_sample`` on F[:, None] with the grid [X, Y, z_k],
``z_k = 2k/(D-1) - 1``, trilinear, zeros padding and the default
``align_corners=False``. Because of align_corners=False the depth coordinate of
output channel k is ``p_k = ((z_k + 1) * D - 1) / 2 = k*D/(D-1) - 0.5``, which is
not an integer: every output channel is a fixed blend of two adjacent input
channels (channels 0 and D-1 half-blended with zero padding). Folding channels
into the batch and warping each channel on its own is therefore wrong for the
released weights.

Exact rewrite used here:

1. grid_sample is linear in its input for a fixed grid and z_k does not depend
   on (x, y), so the depth interpolation is a constant D x D banded matrix M
   (two adjacent taps per row: channels k-1, k below D/2 and k, k+1 above)
   applied over channels first. M is a **non-persistent** buffer (the
   state_dict stays identical to the original, strict loading works), applied
   as a 1x1 convolution.
2. The mixed features are reshaped to (B*D, 1, H, W) and the per-channel grid
   to (B*D, H, W, 2); ONE 4-D grid_sample (bilinear, zeros, align_corners=False)
   then reproduces the 5-D result (max error ~4e-5 in fp32 at D=256, 104x80).

The base (x, y) grid depends on H and W, which come from the feature map at run
time: it is built in ``forward`` from ``torch.arange`` in float32 on the input's
device (a handful of nodes that fold to constants when H and W are static, as in
every talkrt export where only the batch is dynamic). M, which only depends on
D, is built once in ``__init__``. Nothing is float64 (ORT CPU has no float64
GridSample kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PI_APPROX = 3.14159  # the original writes pi like this; kept for exactness


def depth_mix_matrix(depth: int) -> torch.Tensor:
    """The (D, D) matrix that performs the depth (channel) interpolation of the
    original 5-D grid_sample: row k blends input channels floor(p_k) and
    floor(p_k)+1 with p_k computed in float32 exactly as grid_sample unnormalises
    z_k = 2k/(D-1) - 1 under align_corners=False; taps outside [0, D-1] are the
    zero padding and are dropped."""
    if depth < 2:
        raise ValueError(f"AdaAT needs at least 2 feature channels, got {depth}")
    k = torch.arange(depth, dtype=torch.float32)
    z = 2 * (k / (depth - 1)) - 1
    p = ((z + 1) * depth - 1) / 2
    low = torch.floor(p)
    frac = (p - low).double()
    low = low.long()
    m = torch.zeros(depth, depth, dtype=torch.float64)
    for row in range(depth):
        for col, weight in ((int(low[row]), 1.0 - float(frac[row])), (int(low[row]) + 1, float(frac[row]))):
            if 0 <= col < depth:
                m[row, col] += weight
    return m.float()


class AdaAT(nn.Module):
    """``AdaAT(para_ch, feature_ch)``: forward(feature_map (B, D, H, W), para_code
    (B, para_ch)) -> (B, D, H, W), D = feature_ch.

    Keys: ``commn_linear.0`` (para->para, ReLU), ``scale.0`` (para->D, sigmoid),
    ``rotation.0`` (para->D, tanh), ``translation.0`` (para->2D, tanh).
    """

    def __init__(self, para_ch: int, feature_ch: int) -> None:
        super().__init__()
        self.para_ch = para_ch
        self.feature_ch = feature_ch
        self.commn_linear = nn.Sequential(nn.Linear(para_ch, para_ch), nn.ReLU())
        self.scale = nn.Sequential(nn.Linear(para_ch, feature_ch), nn.Sigmoid())
        self.rotation = nn.Sequential(nn.Linear(para_ch, feature_ch), nn.Tanh())
        self.translation = nn.Sequential(nn.Linear(para_ch, 2 * feature_ch), nn.Tanh())
        mix = depth_mix_matrix(feature_ch)
        self.register_buffer("depth_mix", mix.view(feature_ch, feature_ch, 1, 1), persistent=False)

    def forward(self, feature_map: torch.Tensor, para_code: torch.Tensor) -> torch.Tensor:
        d = self.feature_ch
        h, w = feature_map.shape[2], feature_map.shape[3]
        p = self.commn_linear(para_code)
        scale = (self.scale(p) * 2).unsqueeze(-1).unsqueeze(-1)  # (B, D, 1, 1)
        angle = (self.rotation(p) * PI_APPROX).unsqueeze(-1).unsqueeze(-1)
        shift = self.translation(p).view(-1, d, 2)
        cos, sin = torch.cos(angle), torch.sin(angle)

        # corner-aligned base grid, float32, as make_coordinate_grid_3d builds it
        xs = torch.arange(w, dtype=torch.float32, device=feature_map.device)
        ys = torch.arange(h, dtype=torch.float32, device=feature_map.device)
        x = (2 * (xs / (w - 1)) - 1).view(1, 1, 1, -1)
        y = (2 * (ys / (h - 1)) - 1).view(1, 1, -1, 1)

        # [X, Y] = (R(theta) [x, y]) * s + t, per channel
        gx = (cos * x - sin * y) * scale + shift[:, :, 0, None, None]
        gy = (sin * x + cos * y) * scale + shift[:, :, 1, None, None]
        # (B*D, H, W, 2), never going through a 5-D tensor
        grid = torch.stack([gx.reshape(-1, h, w), gy.reshape(-1, h, w)], dim=-1)

        mixed = F.conv2d(feature_map, self.depth_mix.to(feature_map.dtype))  # depth interpolation
        warped = F.grid_sample(
            mixed.reshape(-1, 1, h, w), grid.to(feature_map.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return warped.view(-1, d, h, w)


__all__ = ["AdaAT", "depth_mix_matrix", "PI_APPROX"]
