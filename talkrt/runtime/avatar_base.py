"""What the avatar file and every family's avatar preparer share: OpenCV, loaded on first use,
per-frame crops resized to a model's input size, and one entry per frame from a file.

It sits below ``runtime/avatar.py``, ``runtime/landmarks.py`` and the family preparers
(talkrt.models.<family>.avatar) and imports none of them.
"""

from __future__ import annotations

import numpy as np

from talkrt.errors import MissingDependency, TalkrtError


def opencv():
    """The ``cv2`` module, or one line with its install command."""
    try:
        import cv2
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise MissingDependency(
            "OpenCV is needed to prepare avatars: pip install 'opencv-python-headless>=4.8,<5'"
        ) from error
    return cv2


def resize_crops(frames: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(frame[y1:y2, x1:x2], (W, H))`` per frame (INTER_LINEAR), (N,H,W,3) uint8; ``size`` is (H, W)."""
    cv2 = opencv()
    height, width = size
    crops = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).tolist()):
        crops[i] = cv2.resize(frames[i][y1:y2, x1:x2], (width, height), interpolation=cv2.INTER_LINEAR)
    return crops


def one_per_frame(values: np.ndarray, num_frames: int, allow_extra: bool, mismatch: str) -> np.ndarray:
    """One entry per frame: a single entry is repeated, a longer file cut when ``allow_extra`` (a video read
    with max_frames); otherwise the counts must agree (``mismatch`` is formatted with ``count``)."""
    if len(values) == 1:
        return np.repeat(values, num_frames, axis=0)
    if allow_extra and len(values) > num_frames:
        return values[:num_frames]
    if len(values) != num_frames:
        raise TalkrtError(mismatch.format(count=len(values)) + ": give one per frame or one for all")
    return values
