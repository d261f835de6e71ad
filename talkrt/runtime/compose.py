"""Paste generated faces back into the avatar's frames, on the device, a batch at a time.

Each generated crop is resized into its face box and blended with a feathered
mask (mouth and lower face), so the rest of the frame keeps its own pixels and
colours. Boxes differ per frame; to batch anyway, every frame's work happens in a
region of one fixed size that covers the largest box, placed around each box.
Resizing and placement are one ``grid_sample`` with a per-frame affine map that
matches resizing the crop to the box (half-pixel centres, like cv2.resize).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class Compositor:
    """Holds one avatar's frames, boxes and mask on ``device``; ``compose`` writes finished frames in place."""

    def __init__(self, frames: np.ndarray | torch.Tensor, boxes: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> None:
        device = torch.device(device)
        self.frames = torch.as_tensor(frames, device=device)  # (M, H, W, 3) uint8
        boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32, device=device)  # (M, 4) x1 y1 x2 y2
        mask = torch.as_tensor(np.asarray(mask), dtype=torch.float32, device=device)
        self.mask = mask.reshape(1, 1, *mask.shape[-2:]) if mask.dim() == 2 else mask.reshape(-1, 1, *mask.shape[-2:])
        _, height, width, _ = self.frames.shape
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        # One region size for every frame: the largest box plus a pixel of margin each side.
        self.region_w = int(min(width, int(widths.max().ceil()) + 2))
        self.region_h = int(min(height, int(heights.max().ceil()) + 2))
        origin_x = (boxes[:, 0].floor() - 1).clamp(0, width - self.region_w)
        origin_y = (boxes[:, 1].floor() - 1).clamp(0, height - self.region_h)
        self.origin = torch.stack([origin_x, origin_y], dim=1).long()  # (M, 2)
        # Affine map from region-normalised output coords to crop-normalised coords (align_corners=False):
        # crop = u * R / w + (R - 2 * (x1 - ox)) / w - 1, per axis.
        x1, y1 = boxes[:, 0] - origin_x, boxes[:, 1] - origin_y
        theta = torch.zeros(len(boxes), 2, 3, device=device)
        theta[:, 0, 0] = self.region_w / widths
        theta[:, 0, 2] = (self.region_w - 2 * x1) / widths - 1
        theta[:, 1, 1] = self.region_h / heights
        theta[:, 1, 2] = (self.region_h - 2 * y1) / heights - 1
        self.theta = theta
        self._rows = torch.arange(self.region_h, device=device)
        self._cols = torch.arange(self.region_w, device=device)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.frames.shape[1:])  # type: ignore[return-value]

    def compose(self, frame_indices: torch.Tensor, faces: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Blend ``faces`` (B, 3, S, S) BGR in [0, 1] into avatar frames ``frame_indices`` (B,), writing ``out`` (B, H, W, 3) uint8."""
        batch = len(frame_indices)
        torch.index_select(self.frames, 0, frame_indices, out=out)
        theta = self.theta[frame_indices]
        grid = F.affine_grid(theta, [batch, 3, self.region_h, self.region_w], align_corners=False)
        mask = self.mask.expand(batch, -1, -1, -1) if self.mask.shape[0] == 1 else self.mask[frame_indices]
        # The face repeats its border (as cv2.resize does at the box edge); the mask is 0 outside the box.
        face = F.grid_sample(faces, grid, mode="bilinear", padding_mode="border", align_corners=False).permute(0, 2, 3, 1)
        alpha = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False).permute(0, 2, 3, 1)
        origin = self.origin[frame_indices]
        rows = (origin[:, 1:2] + self._rows)[:, :, None]  # (B, h, 1)
        cols = (origin[:, 0:1] + self._cols)[:, None, :]  # (B, 1, w)
        index = (torch.arange(batch, device=out.device)[:, None, None], rows, cols)
        region = out[index].float()
        blended = region + (face * 255.0 - region) * alpha
        out[index] = blended.round_().clamp_(0, 255).to(torch.uint8)
        return out
