"""DINet avatars: 416x320 crops around the nose, 5 fixed references, the paste-back rows.

The crop follows MRzzm/DINet ``inference.py`` and ``compute_crop_radius``: for each
frame, a radius from landmarks of the frame and its two neighbours each side
(mouth width 48-54 and nose-to-lowest-point height, times 1.05, halved, the
largest rounded up to a multiple of 4); the crop spans rows
``y29 - r .. y29 + 2r + r/4`` and columns ``x33 - 5r/4 .. x33 + 5r/4`` (13:10,
the 416x320 aspect) and is resized to 320x416. The original pastes back only the
top ``3r`` rows of the resized output (rows 0..383 of 416), replacing the frame's
pixels: ``blend_mask`` is 1 there and 0 below. Landmarks are truncated to
integers as the original does (``astype(np.int)``).

Two deliberate differences: the references are 5 evenly spaced frames (the
original draws them at random, with a random radius scale), so an avatar file is
reproducible; and a frame whose crop would leave the image raises one clear
error instead of the original's ``raise`` of a string.
"""

from __future__ import annotations

import numpy as np

from talkrt.errors import TalkrtError
from talkrt.models.dinet.model import FACE_HEIGHT, FACE_WIDTH, REFERENCE_FRAMES
from talkrt.runtime.avatar_base import resize_crops

CROP_SCALE = 1.05  # inference.py's random_scale for the frames it renders
PASTE_ROWS = FACE_HEIGHT * 12 // 13  # 3r of the 13r/4 crop height: 384 of 416


def crop_radius(landmarks: np.ndarray, scale: float = CROP_SCALE) -> int:
    """DINet's crop radius for a clip of integer landmarks (K,68,2): a multiple of 4."""
    lowest = landmarks[:, :, 1].max(axis=1)
    radius_h = (lowest - landmarks[:, 29, 1]) * scale
    radius_w = (landmarks[:, 54, 0] - landmarks[:, 48, 0]) * scale
    radius = np.maximum(radius_h, radius_w) // 2
    return (int(radius.max() / 4) + 1) * 4


def dinet_boxes(landmarks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(N,4) int32 crop boxes x1,y1,x2,y2 for (N,68,2) landmarks in frames of (height, width)."""
    points = np.asarray(landmarks).astype(np.int64)  # the original truncates to int
    count = len(points)
    height, width = frame_size
    boxes = np.empty((count, 4), dtype=np.int32)
    for i in range(count):
        clip = points[np.clip(np.arange(i - 2, i + 3), 0, count - 1)]  # edge-padded, as the original
        radius = crop_radius(clip)
        quarter = radius // 4
        sizes = np.maximum(clip[:, :, 1].max(1) - clip[:, 29, 1], clip[:, 54, 0] - clip[:, 48, 0]) * CROP_SCALE // 2
        y29, x33 = points[i, 29, 1], points[i, 33, 0]
        box = (x33 - radius - quarter, y29 - radius, x33 + radius + quarter, y29 + 2 * radius + quarter)
        if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
            raise TalkrtError(
                f"frame {i}: DINet's crop {list(box)} leaves the {width}x{height} frame "
                "(the face is too close to the edge or too large): use a wider shot"
            )
        if sizes.max() > sizes.min() * 1.5:
            raise TalkrtError(f"frame {i}: the face size changes by more than 1.5x within 5 frames, which DINet's crop cannot follow")
        boxes[i] = box
    return boxes


def reference_indices(num_frames: int, count: int = REFERENCE_FRAMES) -> np.ndarray:
    """``count`` evenly spaced frames (repeats when the avatar has fewer frames)."""
    return np.rint(np.linspace(0, num_frames - 1, count)).astype(np.int64)


def dinet_blend_mask() -> np.ndarray:
    mask = np.zeros((FACE_HEIGHT, FACE_WIDTH), dtype=np.float32)
    mask[:PASTE_ROWS] = 1.0
    return mask


def prepare_dinet(frames: np.ndarray, landmarks: np.ndarray) -> dict:
    """Avatar fields for DINet from BGR frames (N,H,W,3) and landmarks (N,68,2)."""
    boxes = dinet_boxes(landmarks, frames.shape[1:3])
    return {
        "boxes": boxes,
        "crops": resize_crops(frames, boxes, (FACE_HEIGHT, FACE_WIDTH)),
        "blend_mask": dinet_blend_mask(),
        "face_size": FACE_HEIGHT,
        "renderer": "dinet",
        "extras": {"reference_indices": reference_indices(len(frames)), "landmarks": np.asarray(landmarks, dtype=np.float32)},
    }
