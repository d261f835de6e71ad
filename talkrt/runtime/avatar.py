"""Avatars: face boxes, 96x96 crops and a blend mask, prepared once and saved as one file.

An avatar is everything about the face video that does not depend on the speech:
the full frames (BGR, as Wav2Lip's cv2 code reads them), one face box per frame,
the face crop of each frame resized to the model's input size, and a feathered
mask that paste-back uses to blend the generated mouth region into the frame.
Detection, padding and smoothing run once, at preparation; the pipeline only loads the file.

This module holds the file format, the :class:`Avatar` and the preparation that
builds one. The boxes, crops and mask come from ``runtime/faces.py`` (Wav2Lip's
box rule), the drawn face of :func:`synthetic_avatar` from ``runtime/synthetic.py``;
their names are re-exported here, where callers have always imported them.

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

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from talkrt.errors import TalkrtError
from talkrt.fileio import atomic_path
from talkrt.models.registry import DEFAULT_RENDERER, get_renderer_family, renderer_names
from talkrt.runtime.align import as_fps
from talkrt.runtime.faces import (
    FACE_PADS,
    BoxDetector,
    blend_mask,
    crop_faces,
    detect_faces,
    face_boxes,
    haar_detector,
    raw_boxes,
    read_boxes,
    read_source,
)
from talkrt.runtime.synthetic import synthetic_frames

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

    def summary(self) -> str:
        (height, width), (crop_h, crop_w) = self.frame_size, self.crop_size
        return f"{self.num_frames} frames of {width}x{height} at {self.fps} fps, {self.renderer} crops {crop_w}x{crop_h}"

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
    final = face_boxes(raw_boxes(frames, boxes, max_frames is not None, detector), frames.shape[1:3], pads=pads, smooth_window=smooth_window)
    return Avatar(
        frames=frames,
        boxes=final,
        crops=crop_faces(frames, final, face_size),
        blend_mask=blend_mask(face_size),
        fps=rate,
        face_size=int(face_size),
        source=str(source),
    )


def prepare_avatar_file(source: str | os.PathLike, out: str | os.PathLike, **options) -> str:
    """`talkrt avatar prepare`: every path checked first, then :func:`prepare_avatar` (``options``)
    saved to ``out``; returns what was written."""
    from talkrt.outputs import check_outputs

    check_outputs({"--out": Path(out)}, {"SOURCE": source, "--boxes": options.get("boxes"), "--landmarks": options.get("landmarks")})
    avatar = prepare_avatar(source, **options)
    avatar.save(out)
    return f"{out}: {avatar.summary()}"



def _landmarks_for(frames, boxes, landmarks, allow_extra: bool, detector, smooth_window: int) -> np.ndarray:
    from talkrt.runtime.landmarks import read_landmarks, template_landmarks

    if landmarks is not None:
        return read_landmarks(landmarks, len(frames), allow_extra=allow_extra)
    raw = raw_boxes(frames, boxes, allow_extra, detector)
    return template_landmarks(face_boxes(raw, frames.shape[1:3], pads=(0, 0, 0, 0), smooth_window=smooth_window))


def landmark_avatar(frames: np.ndarray, landmarks: np.ndarray, renderer: str, fps, source: str) -> Avatar:
    """An avatar for a renderer that crops around landmarks (its family's preparer), from BGR
    frames and (N,68,2) landmarks."""
    prepare = get_renderer_family(renderer).prepare_avatar()
    if prepare is None:
        raise TalkrtError(f"renderer {renderer!r} does not crop around landmarks")
    return Avatar(frames=frames, fps=as_fps(fps), source=source, **prepare(frames, landmarks))


# --------------------------------------------------------------------------- synthetic
# The drawn face is runtime/synthetic.py's; the Avatar is built here, since synthetic.py cannot import
# this module (which re-exports synthetic_frames) without an import cycle.


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
