"""BGR frames to I420 (yuv420p) planes, on the frames' own device.

The encoder takes 4:2:0 YUV. Converting where the frames were made (the GPU)
halves the bytes copied to the host and takes the colour conversion off the
encoding thread, which is the one serial CPU stage left after rendering.

BT.601, limited range (what H.264 players assume for video without colour tags,
and what `VideoWriter` tags its streams with), in the usual 8-bit fixed-point
form: integer arithmetic gives the same planes on every device, within two
levels of libswscale's. Chroma is the mean of each 2x2 block. An odd width or
height is padded by one pixel, repeating the last column / row, since 4:2:0
needs even sizes. On the CPU libswscale is the faster converter.
"""

from __future__ import annotations

import torch

# Rows: Y, Cb, Cr; columns: the weights of R, G, B, scaled by 256.
_WEIGHTS = ((66, 129, 25), (-38, -74, 112), (112, -94, -18))
_PIXELS_PER_STEP = 1 << 22


def i420_shape(height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of one frame's planes stacked as yuv420p: Y, then U, then V."""
    height, width = height + height % 2, width + width % 2
    return height * 3 // 2, width


def bgr_to_i420(frames: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 BGR -> (N, 3*H'/2, W') uint8 planes, H' and W' the even sizes."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 BGR, got {frames.dtype} {tuple(frames.shape)}")
    count, height, width = frames.shape[:3]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        index_h = torch.arange(height + pad_h, device=frames.device).clamp_(max=height - 1)
        index_w = torch.arange(width + pad_w, device=frames.device).clamp_(max=width - 1)
        frames = frames[:, index_h][:, :, index_w]
        height, width = height + pad_h, width + pad_w
    out = torch.empty(count, height * 3 // 2, width, dtype=torch.uint8, device=frames.device)
    step = max(1, _PIXELS_PER_STEP // (height * width))  # bounds the int32 temporaries
    for first in range(0, count, step):
        _convert(frames[first : first + step], out[first : first + step])
    return out


def _convert(frames: torch.Tensor, out: torch.Tensor) -> None:
    count, height, width = frames.shape[:3]
    pixels = frames.to(torch.int32)
    blue, green, red = pixels.unbind(-1)
    (yr, yg, yb), (ur, ug, ub), (vr, vg, vb) = _WEIGHTS
    out[:, :height] = (yr * red + yg * green + yb * blue + 128).bitwise_right_shift_(8).add_(16)
    # 2x2 block sums, so the chroma weights divide by 4 * 256 = 1024.
    sums = pixels.view(count, height // 2, 2, width // 2, 2, 3).sum(dim=(2, 4))
    blue, green, red = sums.unbind(-1)
    chroma = out[:, height:].view(count, 2, height // 2, width // 2)
    chroma[:, 0] = (ur * red + ug * green + ub * blue + 512).bitwise_right_shift_(10).add_(128)
    chroma[:, 1] = (vr * red + vg * green + vb * blue + 512).bitwise_right_shift_(10).add_(128)
