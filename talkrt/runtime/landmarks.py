"""68-point facial landmarks (the iBUG / dlib / OpenFace layout) for DINet and DH_live avatars.

DINet crops around OpenFace landmarks, and its users already have OpenFace's
``FeatureExtraction`` CSV for their videos, so that file is read as is. Arrays
(``.npy`` (N,68,2), JSON ``[[[x, y] * 68] * N]``) work too. Without a file, a
fixed mean-face template is placed in each face box (the Haar detector's or a
boxes file's): good enough to drive the random-weight demo and to show the
geometry, not a landmark detector. Indices used here, in the 68-point layout:
jaw 0-16, brows 17-26, nose bridge 27-30, nose base 31-35, eyes 36-41 / 42-47,
outer lips 48-59, inner lips 60-67.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from talkrt.errors import TalkrtError
from talkrt.runtime.avatar_base import one_per_frame

NUM_POINTS = 68
JAW = list(range(0, 17))
NOSE_BRIDGE = [27, 28, 29, 30]
NOSE_BASE = [31, 32, 33, 34, 35]
LEFT_EYE = list(range(36, 42))
RIGHT_EYE = list(range(42, 48))
OUTER_LIPS = list(range(48, 60))
INNER_LIPS = list(range(60, 68))


def _template() -> np.ndarray:
    """A frontal mean face in unit face-box coordinates (x right, y down, box = [0, 1]^2).

    Written from face proportions (eyes a third of the way down, mouth at 80%,
    chin at the box bottom), not fitted to any data set.
    """
    points = np.zeros((NUM_POINTS, 2))
    t = np.linspace(0.0, np.pi, 17)
    points[JAW] = np.stack([0.5 - 0.5 * np.cos(t), 0.25 + 0.75 * np.sin(t)], 1)
    brow = np.linspace(0.0, 1.0, 5)
    points[17:22] = np.stack([0.12 + 0.28 * brow, 0.2 - 0.04 * np.sin(np.pi * brow)], 1)
    points[22:27] = np.stack([0.60 + 0.28 * brow, 0.2 - 0.04 * np.sin(np.pi * brow)], 1)
    points[NOSE_BRIDGE] = np.stack([np.full(4, 0.5), np.linspace(0.34, 0.6, 4)], 1)
    points[NOSE_BASE] = np.stack([np.linspace(0.4, 0.6, 5), 0.66 + 0.02 * np.sin(np.pi * np.linspace(0, 1, 5))], 1)
    for eye, centre in ((LEFT_EYE, 0.3), (RIGHT_EYE, 0.7)):
        a = np.linspace(np.pi, -np.pi, 7)[:-1]  # corner, upper lid, corner, lower lid
        points[eye] = np.stack([centre + 0.09 * np.cos(a), 0.36 - 0.035 * np.sin(a)], 1)
    a = np.linspace(np.pi, -np.pi, 13)[:-1]  # 48 left corner, 51 top, 54 right corner, 57 bottom
    points[OUTER_LIPS] = np.stack([0.5 + 0.17 * np.cos(a), 0.8 - 0.07 * np.sin(a)], 1)
    a = np.linspace(np.pi, -np.pi, 9)[:-1]
    points[INNER_LIPS] = np.stack([0.5 + 0.12 * np.cos(a), 0.8 - 0.025 * np.sin(a)], 1)
    return points


TEMPLATE = _template()


def template_landmarks(boxes: np.ndarray) -> np.ndarray:
    """(N,68,2) float64: the template placed in each face box (N,4) x1,y1,x2,y2."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    origin = boxes[:, None, :2]
    size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    return origin + TEMPLATE[None] * size


def read_landmarks(path: str | os.PathLike, num_frames: int, allow_extra: bool = False) -> np.ndarray:
    """(num_frames,68,2) float64 from an OpenFace CSV, a ``.npy`` or a JSON file.

    OpenFace CSVs are matched by their ``x_0..x_67`` / ``y_0..y_67`` header names
    (OpenFace pads them with spaces). One frame of landmarks applies to every
    frame; ``allow_extra`` keeps the first ``num_frames`` of a longer file.
    """
    path = Path(path)
    what = f"landmarks file {path}"
    if not path.is_file():
        raise TalkrtError(f"{what} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            points = _read_openface_csv(path, what)
        elif suffix == ".npy":
            points = np.load(path, allow_pickle=False)
        elif suffix == ".json":
            points = np.asarray(json.loads(path.read_text()), dtype=np.float64)
        else:
            raise TalkrtError(f"{what}: expected an OpenFace .csv, a .npy or a .json file")
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise TalkrtError(f"{what} is unreadable: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    points = np.asarray(points)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (NUM_POINTS, 2) or not np.issubdtype(points.dtype, np.number):
        raise TalkrtError(f"{what}: expected (frames, 68, 2) landmarks, got shape {points.shape}")
    points = points.astype(np.float64)
    if not np.all(np.isfinite(points)):
        raise TalkrtError(f"{what}: landmarks must be finite numbers")
    return one_per_frame(points, num_frames, allow_extra, f"{what} has landmarks for {{count}} frames, the video has {num_frames}")


def _read_openface_csv(path: Path, what: str) -> np.ndarray:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise TalkrtError(f"{what} is empty")
    header = [name.strip() for name in rows[0]]
    try:
        xs = [header.index(f"x_{i}") for i in range(NUM_POINTS)]
        ys = [header.index(f"y_{i}") for i in range(NUM_POINTS)]
    except ValueError:
        raise TalkrtError(f"{what}: not an OpenFace landmark CSV (no x_0..x_67 / y_0..y_67 columns)") from None
    body = [row for row in rows[1:] if row]
    if not body:
        raise TalkrtError(f"{what} holds no frames")
    values = np.asarray([[float(row[i]) for i in xs + ys] for row in body])
    return np.stack([values[:, :NUM_POINTS], values[:, NUM_POINTS:]], axis=2)


def similarity_to(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) that best maps ``source`` points onto ``target`` (Umeyama)."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    a, b = source - source_mean, target - target_mean
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, d]) @ vt
    scale = (s * [1.0, d]).sum() / (a**2).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - matrix[:, :2] @ source_mean
    return matrix


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    inverse = np.zeros((2, 3))
    inverse[:, :2] = np.linalg.inv(matrix[:, :2])
    inverse[:, 2] = -inverse[:, :2] @ matrix[:, 2]
    return inverse
