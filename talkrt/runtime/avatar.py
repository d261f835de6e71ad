"""Avatars: face boxes, 96x96 crops and a blend mask, prepared once and saved as one file.

An avatar is everything about the face video that does not depend on the speech:
the full frames (BGR, as Wav2Lip's cv2 code reads them), one face box per frame,
the face crop of each frame resized to the model's input size, and a feathered
mask that paste-back uses to blend the generated mouth region into the frame.
Detection, padding and smoothing run once here; the pipeline only loads the file.

Boxes follow Wav2Lip's ``inference.py``: a raw box per frame (from OpenCV's Haar
cascade, which ships inside ``opencv-python-headless``, or from a boxes file the
user gives), then the ``pads`` rule (top, bottom, left, right; clipped to the
frame), then ``get_smoothened_boxes`` over 5 frames, then
``cv2.resize(frame[y1:y2, x1:x2], (96, 96))`` with its default INTER_LINEAR.

File format (one ``.npz``, no pickles; see :meth:`Avatar.save`)::

    format      str      "talkrt-avatar"
    version     int64    AVATAR_VERSION
    frames      (N,H,W,3) uint8    full frames, BGR
    boxes       (N,4)     int32    x1, y1, x2, y2 (final: padded, smoothed, clipped)
    crops       (N,S,S,3) uint8    BGR face crops, S = face_size
    blend_mask  (S,S)     float32  in [0, 1], crop coordinates, shared by every frame
    face_size   int64    S
    fps         str      exact frame rate, e.g. "25" or "30000/1001"
    source      str      the image or video the avatar was prepared from
    renderer    str      the renderer (model family) the crops are for (version 2)
    extra.NAME  arrays   the renderer's own per-avatar inputs (version 2; see the family's avatar.py)

Wav2Lip crops are square (S x S). DINet's and DH_live's crops have their own
size (416x320, 256x256): ``crops`` is then (N,H,W,3), ``blend_mask`` (H,W) and
``face_size`` = H. Version-1 files (before DINet and DH_live) load as wav2lip.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from talkrt.errors import TalkrtError
from talkrt.fileio import atomic_path
from talkrt.models.registry import DEFAULT_RENDERER, get_renderer_family, renderer_names
from talkrt.runtime.align import as_fps
from talkrt.runtime.avatar_base import one_per_frame, opencv, resize_crops

__all__ = [
    "AVATAR_VERSION",
    "FACE_PADS",
    "Avatar",
    "BoxDetector",
    "blend_mask",
    "crop_faces",
    "detect_faces",
    "haar_detector",
    "ping_pong_indices",
    "prepare_avatar",
    "read_boxes",
    "read_source",
    "synthetic_avatar",
    "synthetic_frames",
    "face_boxes",
]

AVATAR_VERSION = 2
READABLE_VERSIONS = (1, 2)
FORMAT_NAME = "talkrt-avatar"
FACE_PADS = (0, 10, 0, 0)  # top, bottom, left, right: Wav2Lip inference.py's --pads default, used for every renderer's face boxes
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Haar runs on a copy no taller than this: detection cost grows with the pixel count,
# and a face worth lip-syncing is far larger than the cascade's 24x24 base window.
HAAR_MAX_HEIGHT = 480

#: A detector maps one BGR frame (H,W,3) uint8 to candidate boxes (K,4) x1,y1,x2,y2, K >= 0.
BoxDetector = Callable[[np.ndarray], np.ndarray]

_KEYS = ("format", "version", "frames", "boxes", "crops", "blend_mask", "face_size", "fps", "source")


# --------------------------------------------------------------------------- indices


def ping_pong_indices(num_frames: int, start: int, count: int, device: "torch.device | None" = None):
    """Frame indices start..start+count-1 walked back and forth over ``num_frames`` frames.

    0,1,...,N-1,N-2,...,1,0,1,... so a video shorter than the speech never jumps from
    its last frame back to its first. N=1 gives 0 always. A numpy array, or with
    ``device`` a torch tensor made there (no host-to-device copy).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if start < 0 or count < 0:
        raise ValueError(f"start and count must be >= 0, got start={start}, count={count}")
    if device is None:
        steps = np.arange(start, start + count, dtype=np.int64)
    else:
        import torch

        steps = torch.arange(start, start + count, dtype=torch.int64, device=device)
    if num_frames == 1:
        return steps * 0
    period = 2 * num_frames - 2
    phase = steps % period
    return phase + (phase >= num_frames) * (period - 2 * phase)


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


# --------------------------------------------------------------------------- the avatar


@dataclass
class Avatar:
    """A prepared avatar: frames, final boxes, face crops and the paste-back mask."""

    frames: np.ndarray  # (N,H,W,3) uint8 BGR
    boxes: np.ndarray  # (N,4) int32 x1,y1,x2,y2
    crops: np.ndarray  # (N,S,S,3) uint8 BGR
    blend_mask: np.ndarray  # (S,S) float32 in [0,1]
    fps: Fraction
    face_size: int = 96
    source: str = ""
    version: int = AVATAR_VERSION
    renderer: str = DEFAULT_RENDERER
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def crop_size(self) -> tuple[int, int]:
        """(height, width) of the face crops."""
        return int(self.crops.shape[1]), int(self.crops.shape[2])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the full frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def frame_index(self, k: int) -> int:
        """The avatar frame shown at output frame k (ping-pong over the video)."""
        return int(ping_pong_indices(self.num_frames, k, 1)[0])

    def frame_indices(self, start: int, count: int, device: "torch.device | None" = None):
        """Avatar frames shown at output frames start..start+count-1, (count,) int64 (numpy, or torch on ``device``)."""
        return ping_pong_indices(self.num_frames, start, count, device)

    def save(self, path: str | os.PathLike, compress: bool = False) -> Path:
        """Write the avatar as one ``.npz`` file, atomically (temporary name, then rename).

        Uncompressed by default: loading is then a plain read, and video frames
        gain little from zlib. ``compress=True`` trades load time for size.
        """
        _validate(self.__dict__, f"avatar for {path}")
        path = Path(path)
        arrays = {
            "format": np.array(FORMAT_NAME),
            "version": np.array(self.version, dtype=np.int64),
            "frames": np.ascontiguousarray(self.frames, dtype=np.uint8),
            "boxes": np.ascontiguousarray(self.boxes, dtype=np.int32),
            "crops": np.ascontiguousarray(self.crops, dtype=np.uint8),
            "blend_mask": np.ascontiguousarray(self.blend_mask, dtype=np.float32),
            "face_size": np.array(self.face_size, dtype=np.int64),
            "fps": np.array(str(as_fps(self.fps))),
            "source": np.array(str(self.source)),
            "renderer": np.array(str(self.renderer)),
            **{f"extra.{name}": np.ascontiguousarray(value) for name, value in self.extras.items()},
        }
        writer = np.savez_compressed if compress else np.savez
        with atomic_path(path) as tmp:
            # A file object, not a name: np.savez would append ".npz" to the temporary name.
            with open(tmp, "wb") as handle:
                writer(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Avatar:
        """Read and check an avatar file; a bad file ends in one TalkrtError line."""
        path = Path(path)
        what = f"avatar file {path}"
        if not path.is_file():
            raise TalkrtError(f"{what} does not exist: prepare one with `talkrt avatar`")
        try:
            with np.load(path, allow_pickle=False) as npz:
                names = set(npz.files)
                if "format" not in names or str(npz["format"]) != FORMAT_NAME:
                    raise TalkrtError(f"{what} is not a talkrt avatar (no '{FORMAT_NAME}' format marker)")
                version = npz["version"]
                if version.shape != () or not np.issubdtype(version.dtype, np.integer):
                    raise TalkrtError(f"{what} has a malformed version field")
                if int(version) not in READABLE_VERSIONS:
                    raise TalkrtError(
                        f"{what} has version {int(version)}, this talkrt reads versions {', '.join(map(str, READABLE_VERSIONS))}: "
                        "prepare the avatar again"
                    )
                missing = [key for key in _KEYS if key not in names]
                if missing:
                    raise TalkrtError(f"{what} lacks {', '.join(missing)}: prepare the avatar again")
                fields = {key: npz[key] for key in _KEYS}
                renderer = str(npz["renderer"]) if "renderer" in names else DEFAULT_RENDERER  # version 1: box crops
                extras = {name[len("extra."):]: npz[name] for name in names if name.startswith("extra.")}
        except TalkrtError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise TalkrtError(f"{what} is unreadable (truncated or not an avatar): {reason}") from None

        for key in ("face_size", "fps", "source"):
            if fields[key].shape != ():
                raise TalkrtError(f"{what}: field {key} must be a scalar")
        if not np.issubdtype(fields["face_size"].dtype, np.integer):
            raise TalkrtError(f"{what}: face_size must be an integer")
        if fields["fps"].dtype.kind != "U" or fields["source"].dtype.kind != "U":
            raise TalkrtError(f"{what}: fps and source must be strings")
        try:
            fps = as_fps(str(fields["fps"]))
        except ValueError as error:
            raise TalkrtError(f"{what}: {error}") from None
        avatar = cls(
            frames=fields["frames"],
            boxes=fields["boxes"],
            crops=fields["crops"],
            blend_mask=fields["blend_mask"],
            fps=fps,
            face_size=int(fields["face_size"]),
            source=str(fields["source"]),
            version=int(fields["version"]),
            renderer=renderer,
            extras=extras,
        )
        _validate(avatar.__dict__, what)
        return avatar


def _validate(fields: dict, what: str) -> None:
    """Dtypes, shapes and box ranges agree with each other; one TalkrtError line if not."""
    frames, boxes, crops, mask = fields["frames"], fields["boxes"], fields["crops"], fields["blend_mask"]
    size = fields["face_size"]
    for name, array, dtype in (("frames", frames, np.uint8), ("boxes", boxes, np.int32),
                               ("crops", crops, np.uint8), ("blend_mask", mask, np.float32)):
        if not isinstance(array, np.ndarray) or array.dtype != dtype:
            got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise TalkrtError(f"{what}: {name} must be a {np.dtype(dtype).name} array, got {got}")
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[3] != 3:
        raise TalkrtError(f"{what}: frames must be (N,H,W,3) with N >= 1, got {frames.shape}")
    count, height, width = frames.shape[:3]
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise TalkrtError(f"{what}: face_size must be a positive integer, got {size!r}")
    if fields.get("renderer", DEFAULT_RENDERER) not in renderer_names():
        raise TalkrtError(f"{what}: unknown renderer {fields.get('renderer')!r}; known: {', '.join(renderer_names())}")
    crop_w = crops.shape[2] if crops.ndim == 4 else size
    expected = {"boxes": (count, 4), "crops": (count, size, crop_w, 3), "blend_mask": (size, crop_w)}
    for name, array in (("boxes", boxes), ("crops", crops), ("blend_mask", mask)):
        if array.shape != expected[name]:
            raise TalkrtError(f"{what}: {name} has shape {array.shape}, expected {expected[name]} for {count} frames")
    inside = (
        (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)
        & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    )
    if not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        raise TalkrtError(f"{what}: box {i} {boxes[i].tolist()} is empty or outside the {width}x{height} frame")
    if not (np.all(np.isfinite(mask)) and mask.min() >= 0.0 and mask.max() <= 1.0):
        raise TalkrtError(f"{what}: blend_mask values must lie in [0, 1]")


# --------------------------------------------------------------------------- preparation


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


def prepare_avatar(
    source: str | os.PathLike,
    boxes: str | os.PathLike | None = None,
    max_frames: int | None = None,
    face_size: int = 96,
    fps=25,
    pads: Sequence[int] = FACE_PADS,
    smooth_window: int = 5,
    detector: BoxDetector | None = None,
    renderer: str = DEFAULT_RENDERER,
    landmarks: str | os.PathLike | None = None,
) -> Avatar:
    """Prepare an avatar for ``renderer`` from an image or a video, once.

    Wav2Lip: raw boxes come from ``boxes`` (see :func:`read_boxes`) or, without
    it, from the detector (OpenCV's Haar cascade by default); then Wav2Lip's pads,
    clipping and 5-frame smoothing (:func:`face_boxes`), INTER_LINEAR crops to
    ``face_size`` and the shared blend mask.

    DINet and DH_live crop around 68-point landmarks: from ``landmarks`` (an
    OpenFace CSV, .npy or .json), else a template placed in the smoothed face
    boxes (see :mod:`talkrt.runtime.landmarks`).
    """
    family = get_renderer_family(renderer)
    frames, rate = read_source(source, max_frames=max_frames, fps=fps)
    if family.avatar is not None:
        points = _landmarks_for(frames, boxes, landmarks, max_frames is not None, detector, smooth_window)
        return landmark_avatar(frames, points, renderer, rate, str(source))
    if landmarks is not None:
        croppers = [f.name for f in map(get_renderer_family, renderer_names()) if f.avatar is not None]
        raise TalkrtError(f"--landmarks is for the {' and '.join(croppers)} renderers; {renderer} crops face boxes")
    final = face_boxes(_raw_boxes(frames, boxes, max_frames is not None, detector), frames.shape[1:3], pads=pads, smooth_window=smooth_window)
    return Avatar(
        frames=frames,
        boxes=final,
        crops=crop_faces(frames, final, face_size),
        blend_mask=blend_mask(face_size),
        fps=rate,
        face_size=int(face_size),
        source=str(source),
    )


def _raw_boxes(frames: np.ndarray, boxes, allow_extra: bool, detector: BoxDetector | None) -> np.ndarray:
    if boxes is not None:
        return read_boxes(boxes, len(frames), allow_extra=allow_extra)
    return detect_faces(frames, detector)


def _landmarks_for(frames, boxes, landmarks, allow_extra: bool, detector, smooth_window: int) -> np.ndarray:
    from talkrt.runtime.landmarks import read_landmarks, template_landmarks

    if landmarks is not None:
        return read_landmarks(landmarks, len(frames), allow_extra=allow_extra)
    raw = _raw_boxes(frames, boxes, allow_extra, detector)
    return template_landmarks(face_boxes(raw, frames.shape[1:3], pads=(0, 0, 0, 0), smooth_window=smooth_window))


def landmark_avatar(frames: np.ndarray, landmarks: np.ndarray, renderer: str, fps, source: str) -> Avatar:
    """An avatar for a renderer that crops around landmarks (its family's preparer), from BGR
    frames and (N,68,2) landmarks."""
    prepare = get_renderer_family(renderer).prepare_avatar()
    if prepare is None:
        raise TalkrtError(f"renderer {renderer!r} does not crop around landmarks")
    return Avatar(frames=frames, fps=as_fps(fps), source=source, **prepare(frames, landmarks))


# --------------------------------------------------------------------------- synthetic


def _draw_face(height: int, width: int, cx: float, cy: float, scale: float, mouth_open: float) -> np.ndarray:
    """A frontal cartoon face (BGR) that OpenCV's Haar cascade recognises as a face."""
    cv2 = opencv()
    aa = cv2.LINE_AA
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = (90, 110, 120)  # grey-brown wall
    # Sub-pixel drawing (shift=4) so small head motion moves the face smoothly.
    shift, one = 4, 16

    def pt(x, y):
        return (int(round(x * one)), int(round(y * one)))

    def ax(a, b):
        return (int(round(a * scale * one)), int(round(b * scale * one)))

    def ellipse(dx, dy, a, b, colour, start=0, end=360):
        cv2.ellipse(img, pt(cx + dx * scale, cy + dy * scale), ax(a, b), 0, start, end, colour, -1, aa, shift)

    ellipse(0, 0, 60, 80, (120, 160, 210))  # skin
    ellipse(0, -50, 64, 40, (30, 40, 50), 180, 360)  # hair
    for side in (-1, 1):
        ellipse(side * 24, -26, 14, 4, (40, 50, 60))  # brow
        ellipse(side * 24, -12, 11, 6, (235, 235, 235))  # eye white
        ellipse(side * 24, -12, 5, 5, (30, 30, 30))  # iris
    ellipse(0, 20, 10, 5, (80, 110, 160), 0, 180)  # nose tip shadow
    ellipse(0, 42, 20, 5 + 6 * mouth_open, (60, 60, 150))  # lips
    if mouth_open > 0.15:
        ellipse(0, 42, 14, 6 * mouth_open, (40, 30, 70))  # open mouth
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def synthetic_frames(
    num_frames: int = 8, size: tuple[int, int] = (256, 256), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Drawn face frames (N,H,W,3) uint8 BGR and their exact raw face boxes (N,4) int32.

    ``size`` is (height, width). The head drifts a few pixels and the mouth opens and
    closes; the box is the skin ellipse's bounding box, rounded to whole pixels.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    height, width = int(size[0]), int(size[1])
    scale = min(height, width) / 256.0
    rng = np.random.default_rng(seed)
    phase_x, phase_y, phase_mouth = rng.uniform(0.0, 2.0 * math.pi, size=3)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    boxes = np.empty((num_frames, 4), dtype=np.int32)
    for k in range(num_frames):
        angle = 2.0 * math.pi * k / max(num_frames, 2)
        cx = width / 2 + 4.0 * scale * math.sin(angle + phase_x)
        cy = height / 2 + 2.0 * scale * math.sin(angle + phase_y)
        mouth = 0.5 + 0.5 * math.sin(3.0 * angle + phase_mouth)
        frames[k] = _draw_face(height, width, cx, cy, scale, mouth)
        boxes[k] = np.rint([cx - 60 * scale, cy - 80 * scale, cx + 60 * scale, cy + 80 * scale])
    return frames, boxes


def synthetic_avatar(
    num_frames: int = 8, size: tuple[int, int] = (256, 256), seed: int = 0, face_size: int = 96, fps=25, renderer: str = DEFAULT_RENDERER
) -> Avatar:
    """An avatar of a drawn face with known boxes, for the demo and tests; no detector.

    Its boxes are the drawn face boxes with Wav2Lip's pads and no smoothing (the
    geometry is exact, so there is no detector jitter to smooth). DINet and
    DH_live avatars place the landmark template in the drawn face boxes.
    """
    frames, raw = synthetic_frames(num_frames, size, seed)
    source = f"synthetic:{num_frames}x{size[0]}x{size[1]}:seed={seed}"
    if get_renderer_family(renderer).avatar is not None:
        from talkrt.runtime.landmarks import template_landmarks

        return landmark_avatar(frames, template_landmarks(raw), renderer, fps, source)
    final = face_boxes(raw, frames.shape[1:3], smooth_window=1)
    return Avatar(
        frames=frames,
        boxes=final,
        crops=crop_faces(frames, final, face_size),
        blend_mask=blend_mask(face_size),
        fps=as_fps(fps),
        face_size=int(face_size),
        source=source,
    )
