"""DH_live avatars: 256x256 crops, masked sources, prompt lines, mouth placement, references.

DH_live (kleinlee/DH_live@642192e) renders each frame from three fixed pieces of
the avatar frame and one piece of audio:

* ``crop_face``: a square of 1.2x the lower face (nose bridge to chin, jaw
  corner to jaw corner), resized to 256x256;
* the *source*: that crop with the lower face (jaw line lowered a little,
  closed by the nose base) filled black;
* the *prompt*: the audio's 15x30 PCA mouth image, grey and contrast-stretched,
  written pixel by pixel onto a 100x150 grid that follows the mouth's pose, then
  nose and eye lines drawn on top in green;
* 5 references (crop + a drawing of lips, nose, eyes and jaw), fixed per avatar.

Everything but the mouth image is prepared here, once: the runtime only
scatters the mouth pixels through ``mouth_index`` and resamples them to 256.

DH_live computes its geometry from MediaPipe's 478-point mesh and a 3-D pose;
talkrt takes the 68-point layout (``talkrt.runtime.landmarks``) and uses the
corresponding points (jaw for the face oval, 27-35 for the nose, 36-47 for the
eyes, 48-67 for the lips) and a 2-D similarity pose. The prompts therefore look
like DH_live's but are not pixel-identical to what its render.pth was trained
on; the runtime path from the prepared arrays is exact.
"""

from __future__ import annotations

import numpy as np

from talkrt.models.dhlive.model import IMAGE_SIZE, N_REF
from talkrt.runtime.avatar_base import resize_crops
from talkrt.runtime.landmarks import (
    INNER_LIPS,
    JAW,
    LEFT_EYE,
    NOSE_BASE,
    NOSE_BRIDGE,
    OUTER_LIPS,
    RIGHT_EYE,
    apply_affine,
    invert_affine,
    similarity_to,
)

MOUTH_GRID = (100, 150)  # rows, cols of DH_live's mouth pixel grid
MOUTH_IMAGE = (15, 30)  # the PCA mouth image, rows x cols (x 3 channels)
LINE_COLOR = (0, 255, 0)
LIPS_COLOR = (255, 0, 0)
JAW_COLOR = (0, 0, 255)
JAW_DROP = 10  # pixels (of 256) the masked polygon reaches below the jaw line
STABLE_POINTS = JAW + NOSE_BRIDGE + NOSE_BASE + LEFT_EYE + RIGHT_EYE


def crop_boxes(landmarks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """DH_live's ``crop_face`` per frame on 68 points: (N,4) int32 x1,y1,x2,y2."""
    height, width = frame_size
    jaw = landmarks[:, JAW[2:-2]]
    x_min, x_max, y_max = jaw[..., 0].min(1), jaw[..., 0].max(1), jaw[..., 1].max(1)
    y_min = landmarks[:, 28, 1]  # the original starts at the nose bridge
    half = np.maximum(x_max - x_min, y_max - y_min) * 0.6
    cx, cy = ((x_min + x_max) / 2).astype(np.int64), ((y_min + y_max) / 2).astype(np.int64)
    boxes = np.stack([cx - half, cy - half, cx + half, cy + half], 1).astype(np.int64)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes.astype(np.int32)


def to_crop(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Frame coordinates -> 256x256 crop coordinates (``get_image(..., 'mediapipe')``)."""
    size = np.array([box[2] - box[0], box[3] - box[1]], dtype=np.float64)
    return (points - box[:2]) * IMAGE_SIZE / size


def _polyline(image: np.ndarray, points: np.ndarray, color, closed: bool) -> None:
    import cv2

    pts = points.astype(np.int64)  # the original truncates each coordinate
    pairs = len(pts) if closed else len(pts) - 1
    for i in range(pairs):
        a, b = pts[i], pts[(i + 1) % len(pts)]
        cv2.line(image, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), color, 2)


def draw_features(points: np.ndarray, parts: tuple[str, ...], image: np.ndarray | None = None) -> np.ndarray:
    """DH_live's ``draw_face_feature_maps`` for 68 points: nose, eye, mouth, oval_all lines."""
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8) if image is None else image
    if "nose" in parts:
        _polyline(image, points[NOSE_BASE], LINE_COLOR, closed=False)
        _polyline(image, points[NOSE_BRIDGE], LINE_COLOR, closed=False)
    if "eye" in parts:
        _polyline(image, points[LEFT_EYE], LINE_COLOR, closed=True)
        _polyline(image, points[RIGHT_EYE], LINE_COLOR, closed=True)
    if "mouth" in parts:
        _polyline(image, points[OUTER_LIPS], LIPS_COLOR, closed=True)
        _polyline(image, points[INNER_LIPS], LIPS_COLOR, closed=True)
    if "oval_all" in parts:
        _polyline(image, points[JAW], JAW_COLOR, closed=False)
    return image


def masked_source(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The crop with the lower face (lowered jaw line closed by the nose base) filled black."""
    import cv2

    polygon = points[JAW[3:-3]].copy()
    polygon[:, 1] = np.minimum(polygon[:, 1] + JAW_DROP, IMAGE_SIZE - 1)
    polygon = np.concatenate([polygon, points[NOSE_BASE][::-1]]).astype(np.int32).reshape(-1, 1, 2)
    source = crop.copy()
    cv2.fillPoly(source, [polygon], color=(0, 0, 0))
    return source


def face_poses(landmarks: np.ndarray) -> np.ndarray:
    """(N,2,3) similarities frame -> a mean face, fitted on the points that do not move with speech."""
    stable = landmarks[:, STABLE_POINTS]
    reference = stable[0]
    for _ in range(2):  # align to frame 0, then to the mean of the aligned frames
        poses = np.stack([similarity_to(points, reference) for points in stable])
        reference = np.mean([apply_affine(pose, points) for pose, points in zip(poses, stable)], axis=0)
    return poses


def mouth_grid(landmarks: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """The 100x150 mouth grid in the mean face: the outer lips' range over all frames, 0.9x about its centre.

    Rows step by 1/100 and columns by 1/149 of the range, as the original's coords_array does.
    """
    lips = np.concatenate([apply_affine(pose, points[OUTER_LIPS]) for pose, points in zip(poses, landmarks)])
    low, high = lips.min(0), lips.max(0)
    mid, half = (low + high) / 2, (high - low) / 2 * 0.9
    low, span = mid - half, 2 * half
    rows, cols = MOUTH_GRID
    ys, xs = np.meshgrid(np.arange(rows) / rows, np.arange(cols) / (cols - 1), indexing="ij")
    return np.stack([low[0] + xs * span[0], low[1] + ys * span[1]], -1).reshape(-1, 2)


def mouth_index(landmarks: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Where each mouth-grid pixel lands, per frame: flat indices into a (Hc, Wc) canvas holding the crop box.

    The canvas is the largest box; a pixel outside its frame's box, or written
    again later by another grid pixel (the original writes in order, so the last
    one wins), points at the dump slot Hc * Wc. Returns ((N, 15000) int64, (Hc, Wc)).
    """
    poses = face_poses(landmarks)
    grid = mouth_grid(landmarks, poses)
    canvas = (int((boxes[:, 3] - boxes[:, 1]).max()), int((boxes[:, 2] - boxes[:, 0]).max()))
    dump = canvas[0] * canvas[1]
    index = np.full((len(landmarks), len(grid)), dump, dtype=np.int64)
    for i, (pose, box) in enumerate(zip(poses, boxes)):
        pixels = apply_affine(invert_affine(pose), grid).astype(np.int64)  # x, y; truncated like the original
        cols, rows = pixels[:, 0] - box[0], pixels[:, 1] - box[1]
        inside = (rows >= 0) & (rows < box[3] - box[1]) & (cols >= 0) & (cols < box[2] - box[0])
        flat = np.where(inside, rows * canvas[1] + cols, dump)
        # keep only the last write of each target pixel
        _, last_from_end = np.unique(flat[::-1], return_index=True)
        keep = len(flat) - 1 - last_from_end
        index[i, keep] = flat[keep]
    return index, canvas


def reference_indices(landmarks: np.ndarray, count: int = N_REF) -> np.ndarray:
    """``count`` frames spread over the more open-mouthed half (DH_live draws them at random from it)."""
    opening = np.linalg.norm(landmarks[:, 62] - landmarks[:, 66], axis=1)
    candidates = np.argsort(opening, kind="stable")[len(opening) // 2 :]
    picks = np.rint(np.linspace(0, len(candidates) - 1, count)).astype(np.int64)
    return candidates[picks]


def face_mask() -> np.ndarray:
    """DH_live's ``generate_face_mask``: (256,256) float32, a 20-pixel ramp to the border (13 i / 255)."""
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i in range(20):
        edge = 19 - i
        mask[edge, :] = mask[IMAGE_SIZE - 1 - edge, :] = 13 * i
        mask[:, edge] = mask[:, IMAGE_SIZE - 1 - edge] = 13 * i
    return mask.astype(np.float32) / 255.0


def prepare_dhlive(frames: np.ndarray, landmarks: np.ndarray) -> dict:
    """Avatar fields for DH_live from BGR frames (N,H,W,3) and 68-point landmarks (N,68,2)."""
    boxes = crop_boxes(landmarks, frames.shape[1:3])
    crops = resize_crops(frames, boxes, (IMAGE_SIZE, IMAGE_SIZE))
    local = np.stack([to_crop(points, box) for points, box in zip(landmarks, boxes)])
    sources = np.stack([masked_source(crop, points) for crop, points in zip(crops, local)])
    lines = np.stack([draw_features(points, ("nose", "eye")) for points in local])
    picks = reference_indices(landmarks)
    references = np.concatenate(
        [np.concatenate([crops[i], draw_features(local[i], ("mouth", "nose", "eye", "oval_all"))], axis=2) for i in picks], axis=2
    )
    index, canvas = mouth_index(landmarks, boxes)
    return {
        "boxes": boxes,
        "crops": crops,
        "blend_mask": np.ones((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32),
        "face_size": IMAGE_SIZE,
        "renderer": "dhlive",
        "extras": {
            "sources": sources,
            "prompt_lines": lines,
            "references": references,
            "reference_indices": picks,
            "mouth_index": index,
            "mouth_canvas": np.array(canvas, dtype=np.int64),
        },
    }
