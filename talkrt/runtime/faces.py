"""Face boxes and the imaging an avatar is prepared with: boxes from a file or OpenCV's Haar
cascade, Wav2Lip's pads and smoothing, face crops, the paste-back blend mask, and source frames.

Boxes follow Wav2Lip's ``inference.py``: a raw box per frame (from OpenCV's Haar
cascade, which ships inside ``opencv-python-headless``, or from a boxes file the
user gives), then the ``pads`` rule (top, bottom, left, right; clipped to the
frame), then ``get_smoothened_boxes`` over 5 frames, then
``cv2.resize(frame[y1:y2, x1:x2], (96, 96))`` with its default INTER_LINEAR.

It knows nothing of the avatar file: ``runtime/avatar.py`` builds on it, never the reverse.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from talkrt.errors import TalkrtError
from talkrt.runtime.align import as_fps
from talkrt.runtime.avatar_base import one_per_frame, opencv, resize_crops

__all__ = [
    "FACE_PADS",
    "BoxDetector",
    "blend_mask",
    "crop_faces",
    "detect_faces",
    "face_boxes",
    "haar_detector",
    "raw_boxes",
    "read_boxes",
    "read_source",
]

FACE_PADS = (0, 10, 0, 0)  # top, bottom, left, right: Wav2Lip inference.py's --pads default, used for every renderer's face boxes
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Haar runs on a copy no taller than this: detection cost grows with the pixel count,
# and a face worth lip-syncing is far larger than the cascade's 24x24 base window.
HAAR_MAX_HEIGHT = 480

#: A detector maps one BGR frame (H,W,3) uint8 to candidate boxes (K,4) x1,y1,x2,y2, K >= 0.
BoxDetector = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- boxes


def _as_box_array(boxes, what: str) -> np.ndarray:
    array = np.asarray(boxes)
    if array.ndim != 2 or array.shape[1] != 4 or array.shape[0] < 1:
        raise TalkrtError(f"{what}: expected one or more boxes of 4 numbers x1,y1,x2,y2, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise TalkrtError(f"{what}: boxes must be finite numbers")
    return array


def _check_box_order(boxes: np.ndarray, what: str) -> None:
    bad = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if bad.size:
        i = int(bad[0])
        raise TalkrtError(
            f"{what}: box {i} {boxes[i].tolist()} is empty: boxes are x1,y1,x2,y2 with x2 > x1 and y2 > y1"
        )


MAX_COORDINATE = 1 << 16  # pixels; larger box coordinates are typos (and would wrap in int32)


def read_boxes(path: str | os.PathLike, num_frames: int, allow_extra: bool = False) -> np.ndarray:
    """Raw face boxes (num_frames,4) int32 from a file the user wrote.

    JSON: ``[[x1,y1,x2,y2], ...]`` one per frame, or a single ``[x1,y1,x2,y2]`` for
    every frame. Text/CSV: one ``x1 y1 x2 y2`` or ``x1,y1,x2,y2`` line per frame;
    blank lines and lines starting with ``#`` are skipped. A file with exactly one
    box applies it to every frame. Non-integer coordinates are rounded. These are
    raw boxes, like a detector's: Wav2Lip's pads and smoothing are applied after.
    ``allow_extra`` keeps the first ``num_frames`` boxes of a longer file (a video
    read with ``max_frames``).
    """
    path = Path(path)
    what = f"boxes file {path}"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TalkrtError(f"{what} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TalkrtError(f"{what} cannot be read as text: {error}") from None

    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise TalkrtError(f"{what} is not valid JSON: {error.msg} at line {error.lineno}") from None
        if isinstance(data, list) and len(data) == 4 and all(_is_number(v) for v in data):
            data = [data]
        if not (isinstance(data, list) and data and all(
            isinstance(row, list) and len(row) == 4 and all(_is_number(v) for v in row) for row in data
        )):
            raise TalkrtError(f"{what}: expected a JSON list of [x1, y1, x2, y2] boxes or one such box")
        boxes = np.asarray(data, dtype=np.float64)
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.replace(",", " ").split()
            try:
                values = [float(v) for v in fields]
            except ValueError:
                values = []
            if len(values) != 4:
                raise TalkrtError(f"{what} line {lineno}: expected 'x1 y1 x2 y2' or 'x1,y1,x2,y2', got {line!r}")
            rows.append(values)
        if not rows:
            raise TalkrtError(f"{what} holds no boxes")
        boxes = np.asarray(rows, dtype=np.float64)

    boxes = one_per_frame(_as_box_array(boxes, what), num_frames, allow_extra, f"{what} has {{count}} boxes for {num_frames} frames")
    outside = np.abs(boxes) > MAX_COORDINATE  # (non-finite ones are refused above)
    if outside.any():  # before the int32 cast, which would wrap them (and numpy would warn)
        frame = int(np.argwhere(outside)[0][0])
        raise TalkrtError(f"{what}: box {frame} {boxes[frame].tolist()} has coordinates beyond {MAX_COORDINATE} pixels: give x1 y1 x2 y2 in the frame's pixels")
    boxes = np.rint(boxes).astype(np.int32)
    _check_box_order(boxes, what)
    return boxes


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def face_boxes(
    raw_boxes: np.ndarray,
    frame_size: tuple[int, int],
    pads: Sequence[int] = FACE_PADS,
    smooth_window: int = 5,
) -> np.ndarray:
    """Final face boxes from raw detections: pad, clip to the frame, smooth over time (Wav2Lip's face_detect() rule).

    ``frame_size`` is (height, width); ``pads`` is (top, bottom, left, right) in pixels.
    Smoothing reproduces ``get_smoothened_boxes(boxes, T)`` exactly, quirks included:
    it works in place on an integer array, so each mean is truncated to an integer and
    the last T-1 frames, whose window is the last T boxes rather than a shrunk
    ``boxes[i:i+T]``, average over boxes already smoothed. The one change: with fewer
    than T frames the window is all of them (the original's ``boxes[N-T:]`` with a
    negative start silently picks the last T-N boxes). ``smooth_window=1`` is
    ``--nosmooth``. Returns (N,4) int32 x1,y1,x2,y2.
    """
    height, width = int(frame_size[0]), int(frame_size[1])
    pad_top, pad_bottom, pad_left, pad_right = (int(p) for p in pads)
    if smooth_window < 1:
        raise ValueError(f"smooth_window must be >= 1, got {smooth_window}")
    raw = _as_box_array(raw_boxes, "face boxes").astype(np.int64)
    boxes = np.empty_like(raw)
    boxes[:, 0] = np.maximum(0, raw[:, 0] - pad_left)
    boxes[:, 1] = np.maximum(0, raw[:, 1] - pad_top)
    boxes[:, 2] = np.minimum(width, raw[:, 2] + pad_right)
    boxes[:, 3] = np.minimum(height, raw[:, 3] + pad_bottom)

    count = len(boxes)
    for i in range(count):
        if i + smooth_window > count:
            window = boxes[max(0, count - smooth_window):]
        else:
            window = boxes[i : i + smooth_window]
        boxes[i] = np.mean(window, axis=0)  # integer array: truncates, as the original does
    boxes = boxes.astype(np.int32)
    _check_box_order(boxes, f"face boxes inside a {width}x{height} frame")
    return boxes


# --------------------------------------------------------------------------- detection


def haar_detector(min_size_fraction: float = 0.1) -> BoxDetector:
    """OpenCV's bundled frontal-face Haar cascade as a :data:`BoxDetector`.

    The cascade file ships inside the opencv-python-headless wheel, so detection
    works offline with nothing to download. Frames taller than 480 px are
    downscaled for detection and the boxes scaled back.
    """
    cv2 = opencv()
    cascade_path = os.path.join(cv2.data.haarcascades, HAAR_CASCADE)
    cascade = cv2.CascadeClassifier(cascade_path)
    if cascade.empty():
        raise TalkrtError(f"cannot load OpenCV's Haar cascade {cascade_path}: reinstall opencv-python-headless")

    def detect(frame: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        scale = 1.0
        if gray.shape[0] > HAAR_MAX_HEIGHT:
            scale = gray.shape[0] / HAAR_MAX_HEIGHT
            size = (max(1, round(gray.shape[1] / scale)), HAAR_MAX_HEIGHT)
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_side = max(24, int(min(gray.shape) * min_size_fraction))
        found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(found) == 0:
            return np.zeros((0, 4), dtype=np.int32)
        xywh = np.asarray(found, dtype=np.float64) * scale
        return np.rint(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)).astype(np.int32)

    return detect


def detect_faces(frames: np.ndarray | Sequence[np.ndarray], detector: BoxDetector | None = None) -> np.ndarray:
    """One raw face box per frame, (N,4) int32 x1,y1,x2,y2.

    The largest detection of each frame is kept. A frame without a detection takes
    the box of the nearest frame that has one (the earlier on a tie). ``detector``
    defaults to :func:`haar_detector`; any :data:`BoxDetector` can replace it.
    """
    detector = detector or haar_detector()
    count = len(frames)
    boxes = np.zeros((count, 4), dtype=np.int32)
    found = np.zeros(count, dtype=bool)
    for i in range(count):
        candidates = np.asarray(detector(frames[i]), dtype=np.int64).reshape(-1, 4)
        if len(candidates):
            areas = (candidates[:, 2] - candidates[:, 0]) * (candidates[:, 3] - candidates[:, 1])
            boxes[i] = candidates[int(np.argmax(areas))]
            found[i] = True
    hits = np.flatnonzero(found)
    if hits.size == 0:
        raise TalkrtError(
            f"no face found in any of the {count} frames: pass a boxes file (--boxes) with x1,y1,x2,y2 per frame"
        )
    # Nearest detected frame for every frame: compare the hit just before and just after.
    after = np.clip(np.searchsorted(hits, np.arange(count)), 0, hits.size - 1)
    before = np.clip(after - 1, 0, hits.size - 1)
    frame_ids = np.arange(count)
    use_before = np.abs(frame_ids - hits[before]) <= np.abs(hits[after] - frame_ids)
    nearest = np.where(use_before, hits[before], hits[after])
    return boxes[nearest]


# --------------------------------------------------------------------------- crops and mask


def crop_faces(frames: np.ndarray, boxes: np.ndarray, face_size: int = 96) -> np.ndarray:
    """``cv2.resize(frame[y1:y2, x1:x2], (S, S))`` per frame, INTER_LINEAR as in Wav2Lip.

    INTER_LINEAR (cv2's default, what inference.py uses) rather than INTER_AREA keeps the
    crops identical to the ones the released checkpoints were run on, even though area
    averaging would alias less when a large face is shrunk to 96x96.
    """
    return resize_crops(frames, boxes, (face_size, face_size))


def blend_mask(face_size: int = 96) -> np.ndarray:
    """Feathered (S,S) float32 mask in crop coordinates: 1 over mouth and jaw, 0 elsewhere.

    An ellipse centred at 70% of the crop height, spanning x 8%..92% and y 43%..97%
    (the lower ~55% of the crop, where Wav2Lip's generated half lives), with a
    smoothstep fall-off over the outer 35% of its radius. It is exactly 0 on every
    crop border, so pasting back never leaves a seam at the box edge; being
    analytic, it is the same shape at any face_size.
    """
    centres = (np.arange(face_size, dtype=np.float64) + 0.5) / face_size
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    radius = np.hypot((xs - 0.5) / 0.42, (ys - 0.70) / 0.27)
    t = np.clip((1.0 - radius) / 0.35, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


# --------------------------------------------------------------------------- sources


def read_source(
    source: str | os.PathLike, max_frames: int | None = None, fps=25
) -> tuple[np.ndarray, Fraction]:
    """Frames (N,H,W,3) uint8 BGR and their rate from an image or a video.

    An image is one frame at ``fps``. A video gives its own frames and frame rate
    (``fps`` only when the container states none); ``max_frames`` keeps the first
    frames only. Decoding is media.py's (PyAV); rotation metadata is not applied.
    """
    from talkrt.runtime.media import read_image, read_video_frames

    path = Path(source)
    if not path.is_file():
        raise TalkrtError(f"avatar source {path} does not exist")
    if max_frames is not None and max_frames < 1:
        raise TalkrtError(f"max_frames must be at least 1, got {max_frames}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path)[None], as_fps(fps)
    frames, rate = read_video_frames(path, max_frames=max_frames)
    return frames, rate or as_fps(fps)


def raw_boxes(frames: np.ndarray, boxes: str | os.PathLike | None, allow_extra: bool, detector: BoxDetector | None) -> np.ndarray:
    """Raw face boxes (N,4) int32: from the user's boxes file when given (see :func:`read_boxes`), else detected."""
    if boxes is not None:
        return read_boxes(boxes, len(frames), allow_extra=allow_extra)
    return detect_faces(frames, detector)
