"""Paste-back on the device: equals resizing the crop into its box (cv2), keeps every pixel outside the mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from talkrt.runtime.compose import Compositor


def _avatar(num_frames: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(num_frames, 180, 240, 3), dtype=np.uint8)
    # Boxes of different sizes and positions, one touching the frame's edge.
    boxes = np.array([[40, 30, 152, 150], [60, 50, 156, 146], [0, 0, 130, 120], [110, 58, 240, 180]][:num_frames], dtype=np.int32)
    return frames, boxes


def test_full_mask_equals_cv2_resize_paste() -> None:
    frames, boxes = _avatar()
    faces = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    compositor = Compositor(frames, boxes, np.ones((96, 96), np.float32))
    out = torch.empty(4, 180, 240, 3, dtype=torch.uint8)
    compositor.compose(torch.arange(4), faces, out)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        crop = (faces[i].permute(1, 2, 0).numpy() * 255).astype(np.float32)
        expected = cv2.resize(crop, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        got = out[i, y1:y2, x1:x2].numpy().astype(np.float32)
        # Interior: the same bilinear resize. The 1-pixel rim blends with the frame (the mask fades there).
        assert np.abs(got[1:-1, 1:-1] - expected[1:-1, 1:-1]).max() <= 1.0
        # A hard mask's edge is resampled bilinearly, so it bleeds at most one pixel past the box.
        outside = np.ones(frames.shape[1:3], bool)
        outside[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = False
        assert np.array_equal(out[i].numpy()[outside], frames[i][outside])


def test_feathered_mask_keeps_the_rest_of_the_frame() -> None:
    frames, boxes = _avatar()
    mask = np.zeros((96, 96), np.float32)
    mask[60:90, 20:76] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), 4)
    faces = torch.zeros(2, 3, 96, 96)  # black faces: any change must be a darkening inside the mouth region
    compositor = Compositor(frames, boxes, mask)
    indices = torch.tensor([3, 1])
    out = torch.empty(2, 180, 240, 3, dtype=torch.uint8)
    compositor.compose(indices, faces, out)
    for row, index in enumerate(indices.tolist()):
        before, after = frames[index].astype(int), out[row].numpy().astype(int)
        changed = np.any(before != after, axis=2)
        x1, y1, x2, y2 = boxes[index]
        ys, xs = np.nonzero(changed)
        assert changed.any() and ys.min() >= y1 + (y2 - y1) * 0.45 and (xs.min() >= x1) and (xs.max() < x2)
        assert np.all(after <= before)  # blended towards black, never brighter
        centre = (int(y1 + (y2 - y1) * 0.78), int((x1 + x2) / 2))
        assert after[centre].max() <= 5  # full mask weight at the mouth


def test_frame_indices_repeat_and_buffers_are_reused() -> None:
    frames, boxes = _avatar(2)
    compositor = Compositor(frames, boxes, np.ones((96, 96), np.float32))
    out = torch.empty(3, 180, 240, 3, dtype=torch.uint8)
    pointer = out.data_ptr()
    faces = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    faces[2] = faces[0]
    compositor.compose(torch.tensor([0, 1, 0]), faces, out)
    assert out.data_ptr() == pointer
    assert torch.equal(out[0], out[2])


@pytest.mark.gpu
def test_gpu_matches_cpu() -> None:
    frames, boxes = _avatar()
    faces = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    mask = np.ones((96, 96), np.float32)
    cpu = Compositor(frames, boxes, mask).compose(torch.arange(4), faces, torch.empty(4, 180, 240, 3, dtype=torch.uint8))
    gpu = Compositor(frames, boxes, mask, "cuda").compose(torch.arange(4, device="cuda"), faces.cuda(), torch.empty(4, 180, 240, 3, dtype=torch.uint8, device="cuda"))
    assert (gpu.cpu().int() - cpu.int()).abs().max() <= 1
