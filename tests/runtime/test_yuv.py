"""BGR to yuv420p on the frames' device: BT.601 limited range within rounding, and within libswscale's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkrt.runtime.yuv import bgr_to_i420, i420_shape

av = pytest.importorskip("av")


def swscale_i420(frames: np.ndarray) -> np.ndarray:
    """The reference: PyAV's bgr24 -> yuv420p (libswscale, BT.601 limited range), odd sizes edge-padded."""
    pad = ((0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    return np.stack([av.VideoFrame.from_ndarray(np.pad(f, pad, mode="edge"), format="bgr24").reformat(format="yuv420p").to_ndarray() for f in frames])


def exact_i420(frames: np.ndarray) -> np.ndarray:
    """BT.601 limited range in floating point (the recommendation's coefficients), chroma of 2x2 means."""
    pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    blue, green, red = np.moveaxis(np.pad(frames, pad, mode="edge").astype(np.float64), -1, 0)
    luma = 16 + (65.481 * red + 128.553 * green + 24.966 * blue) / 255
    cb = 128 + (-37.797 * red - 74.203 * green + 112.0 * blue) / 255
    cr = 128 + (112.0 * red - 93.786 * green - 18.214 * blue) / 255
    count, height, width = luma.shape
    quarter = lambda plane: plane.reshape(count, height // 2, 2, width // 2, 2).mean(axis=(2, 4)).reshape(count, -1)
    return np.concatenate([luma.reshape(count, -1), quarter(cb), quarter(cr)], axis=1).reshape(count, -1, width)


@pytest.mark.parametrize("size", [(6, 8), (5, 7), (64, 96)], ids=["even", "odd", "larger"])
def test_planes_are_bt601_and_match_libswscale(size) -> None:
    frames = np.random.default_rng(sum(size)).integers(0, 256, (3, *size, 3), dtype=np.uint8)
    planes = bgr_to_i420(torch.from_numpy(frames))
    assert tuple(planes.shape) == (3, *i420_shape(*size)) and planes.dtype == torch.uint8
    error = np.abs(planes.numpy() - exact_i420(frames))
    assert error.max() <= 1.0 and error.mean() < 0.3  # the 8-bit fixed-point weights, rounded
    # libswscale truncates (half a level low on average): within two levels of it.
    assert np.abs(planes.numpy().astype(int) - swscale_i420(frames)).max() <= 2


def test_known_colours_land_on_the_bt601_limited_range() -> None:
    black, white, red = [0, 0, 0], [255, 255, 255], [0, 0, 255]  # BGR
    frames = torch.tensor([[[c] * 2] * 2 for c in (black, white, red)], dtype=torch.uint8)
    planes = bgr_to_i420(frames)
    luma, cb, cr = planes[:, :2].reshape(3, -1)[:, 0], planes[:, 2, 0], planes[:, 2, 1]
    assert luma.tolist() == [16, 235, 82]
    assert cb.tolist() == [128, 128, 90] and cr.tolist() == [128, 128, 240]


def test_odd_sizes_repeat_the_last_row_and_column() -> None:
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8))
    padded = torch.cat([frames, frames[:, -1:]], 1)
    padded = torch.cat([padded, padded[:, :, -1:]], 2)
    assert torch.equal(bgr_to_i420(frames), bgr_to_i420(padded))


def test_large_batches_convert_in_steps_to_the_same_planes() -> None:
    frames = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (5, 1024, 1024, 3), dtype=np.uint8))
    together = bgr_to_i420(frames)  # more pixels than one step: converted a few frames at a time
    assert torch.equal(together[3:4], bgr_to_i420(frames[3:4]))


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="uint8 BGR"):
        bgr_to_i420(torch.zeros(1, 4, 4, 3))
    with pytest.raises(ValueError, match="uint8 BGR"):
        bgr_to_i420(torch.zeros(4, 4, 3, dtype=torch.uint8))


@pytest.mark.gpu
def test_the_gpu_makes_the_same_planes() -> None:
    frames = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (4, 33, 47, 3), dtype=np.uint8))
    assert torch.equal(bgr_to_i420(frames.cuda()).cpu(), bgr_to_i420(frames))
