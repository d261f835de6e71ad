"""68-point landmarks and the DINet / DH_live avatar layouts built on them."""

from __future__ import annotations

import numpy as np
import pytest

from talkrt.errors import TalkrtError
from talkrt.models.dhlive.avatar import crop_boxes, face_mask, mouth_index, prepare_dhlive
from talkrt.models.dinet.avatar import PASTE_ROWS, dinet_boxes, prepare_dinet
from talkrt.runtime.avatar import Avatar, synthetic_avatar
from talkrt.runtime.synthetic import synthetic_frames
from talkrt.runtime.landmarks import TEMPLATE, apply_affine, invert_affine, read_landmarks, similarity_to, template_landmarks


def _openface_csv(path, points: np.ndarray) -> None:
    """The header and column order of OpenFace's FeatureExtraction output (names padded with a space)."""
    header = ["frame", " face_id", " timestamp", " confidence", " success"]
    header += [f" x_{i}" for i in range(68)] + [f" y_{i}" for i in range(68)]
    rows = [",".join(header)]
    for k, frame in enumerate(points):
        values = [k + 1, 0, k * 0.04, 0.98, 1, *frame[:, 0], *frame[:, 1]]
        rows.append(", ".join(f"{v:g}" for v in values))
    path.write_text("\n".join(rows) + "\n")


def test_openface_csv_npy_and_json_read_alike(tmp_path):
    points = np.round(template_landmarks(np.array([[40, 50, 160, 210], [42, 51, 161, 212]])), 1)
    _openface_csv(tmp_path / "face.csv", points)
    np.save(tmp_path / "face.npy", points)
    (tmp_path / "face.json").write_text(str(points.tolist()))
    for name in ("face.csv", "face.npy", "face.json"):
        np.testing.assert_allclose(read_landmarks(tmp_path / name, 2), points, atol=1e-9)
    # one frame of landmarks applies to every frame; a longer file is cut only when asked
    np.save(tmp_path / "one.npy", points[0])
    assert read_landmarks(tmp_path / "one.npy", 4).shape == (4, 68, 2)
    assert read_landmarks(tmp_path / "face.npy", 1, allow_extra=True).shape == (1, 68, 2)


@pytest.mark.parametrize(
    "content, name, match",
    [
        ("frame,x,y\n1,2,3\n", "bad.csv", "not an OpenFace landmark CSV"),
        (None, "short.npy", "expected \\(frames, 68, 2\\)"),
        (None, "three.npy", "landmarks for 3 frames, the video has 2"),
        ("{]", "bad.json", "unreadable"),
        ("x", "face.txt", "expected an OpenFace .csv"),
    ],
)
def test_bad_landmark_files_are_one_line_errors(tmp_path, content, name, match):
    path = tmp_path / name
    if name == "short.npy":
        np.save(path, np.zeros((2, 5, 2)))
    elif name == "three.npy":
        np.save(path, np.zeros((3, 68, 2)))
    else:
        path.write_text(content)
    with pytest.raises(TalkrtError, match=match):
        read_landmarks(path, 2)


def test_template_is_a_face_inside_its_box():
    points = template_landmarks(np.array([[100, 200, 300, 460]]))[0]
    assert points[:, 0].min() >= 100 and points[:, 0].max() <= 300 and points[:, 1].min() >= 200 and points[:, 1].max() <= 460
    eyes, nose_tip, mouth, chin = points[36:48, 1].mean(), points[33, 1], points[48:60, 1].mean(), points[8, 1]
    assert eyes < nose_tip < mouth < chin == 460
    assert points[48, 0] < points[54, 0] and points[36, 0] < points[45, 0]  # left before right
    assert TEMPLATE.shape == (68, 2)


def test_similarity_fit_recovers_a_known_pose():
    rng = np.random.default_rng(0)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    truth = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0]]) * scale
    truth[:, 2] = shift
    source = rng.normal(size=(30, 2)) * 50
    fitted = similarity_to(source, apply_affine(truth, source))
    np.testing.assert_allclose(fitted, truth, atol=1e-9)
    np.testing.assert_allclose(apply_affine(invert_affine(fitted), apply_affine(fitted, source)), source, atol=1e-9)


# ----------------------------------------------------------------------------- DINet


def _dinet_reference_box(points: np.ndarray, i: int) -> list[int]:
    """MRzzm/DINet inference.py's crop for frame i, written from its description: radius over the
    edge-padded 5-frame clip around i, scale 1.05, rows y29-r .. y29+2r+r/4, cols x33-5r/4 .. x33+5r/4."""
    padded = np.pad(points.astype(int), ((2, 2), (0, 0), (0, 0)), mode="edge")
    clip = padded[i : i + 5]
    radius_h = (clip[:, :, 1].max(axis=1) - clip[:, 29, 1]) * 1.05
    radius_w = (clip[:, 54, 0] - clip[:, 48, 0]) * 1.05
    r = int(np.max(np.max(np.stack([radius_h, radius_w], 1), 1) // 2) / 4)
    r = (r + 1) * 4
    y29, x33 = padded[i + 2, 29, 1], padded[i + 2, 33, 0]
    return [x33 - r - r // 4, y29 - r, x33 + r + r // 4, y29 + 2 * r + r // 4]


def test_dinet_boxes_follow_the_original_crop():
    frames, raw = synthetic_frames(7, (300, 280), seed=2)
    points = template_landmarks(raw) + np.random.default_rng(1).normal(0, 1.5, size=(7, 68, 2))
    boxes = dinet_boxes(points, frames.shape[1:3])
    for i in range(7):
        assert boxes[i].tolist() == _dinet_reference_box(points, i)
        width, height = boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]
        assert height * 10 == width * 13  # 416:320
    fields = prepare_dinet(frames, points)
    assert fields["crops"].shape == (7, 416, 320, 3)
    assert fields["blend_mask"][:PASTE_ROWS].min() == 1 and fields["blend_mask"][PASTE_ROWS:].max() == 0
    assert PASTE_ROWS == 384  # the original pastes back the top 3r of 13r/4 rows
    assert len(set(fields["extras"]["reference_indices"].tolist())) == 5


def test_dinet_crop_errors():
    frames, raw = synthetic_frames(3, (256, 256))
    near_edge = template_landmarks(raw) - [raw[0, 0] + 40, 0]  # the face half out of the frame on the left
    with pytest.raises(TalkrtError, match="leaves the 256x256 frame"):
        dinet_boxes(near_edge, (256, 256))
    growing = template_landmarks(np.array([[100, 60, 140, 110], [100, 60, 140, 110], [60, 20, 200, 220]]))
    with pytest.raises(TalkrtError, match="changes by more than 1.5x"):
        dinet_boxes(growing, (400, 400))


# ----------------------------------------------------------------------------- DH_live


def test_dhlive_layout():
    frames, raw = synthetic_frames(6, (256, 256), seed=4)
    points = template_landmarks(raw)
    fields = prepare_dhlive(frames, points)
    boxes, extras = fields["boxes"], fields["extras"]
    assert np.all(boxes[:, 2] - boxes[:, 0] == boxes[:, 3] - boxes[:, 1])  # square crops
    np.testing.assert_array_equal(boxes, crop_boxes(points, (256, 256)))
    sources, crops = extras["sources"], fields["crops"]
    black = (sources == 0).all(-1) & (crops != 0).any(-1)
    from talkrt.models.dhlive.avatar import to_crop

    local = to_crop(points[0], boxes[0])
    rows, cols = np.nonzero(black[0])
    nose_base = local[31:36, 1].min()
    assert rows.min() >= int(nose_base) - 1 and black[0].mean() > 0.1  # the lower face, from the nose down, is blacked out
    eyes = int(local[36:48, 1].max()) + 2
    assert (sources[:, :eyes] == crops[:, :eyes]).all()  # the eyes are kept
    lines = extras["prompt_lines"]
    assert np.unique(lines.reshape(-1, 3), axis=0).tolist() == [[0, 0, 0], [0, 255, 0]]
    assert extras["references"].shape == (256, 256, 30)
    index, canvas = extras["mouth_index"], tuple(extras["mouth_canvas"])
    dump = canvas[0] * canvas[1]
    for row in index:
        written = row[row != dump]
        assert len(written) == len(np.unique(written)) > 300  # last write wins: each covered pixel once
        assert written.min() >= 0 and written.max() < dump
    mask = face_mask()
    assert mask[20:-20, 20:-20].max() == 0 and mask[0, 128] == pytest.approx(247 / 255) and mask[19, 128] == 0


def test_mouth_index_keeps_the_last_write():
    points = template_landmarks(np.array([[10, 10, 60, 60]] * 2, dtype=float))
    boxes = np.array([[0, 0, 70, 70]] * 2, dtype=np.int32)
    index, canvas = mouth_index(points, boxes)
    # 15000 grid pixels land on a mouth only ~15x6 pixels large: most are overwritten
    written = index[0][index[0] != canvas[0] * canvas[1]]
    assert len(written) < 200
    last = {}
    from talkrt.models.dhlive.avatar import face_poses, mouth_grid

    poses = face_poses(points)
    pixels = apply_affine(invert_affine(poses[0]), mouth_grid(points, poses)).astype(np.int64)
    for k, (x, y) in enumerate(pixels):
        last[y * canvas[1] + x] = k
    assert {int(index[0][k]) for k in last.values()} == set(last)
    assert sorted(np.flatnonzero(index[0] != canvas[0] * canvas[1]).tolist()) == sorted(last.values())


@pytest.mark.parametrize("renderer", ["dinet", "dhlive"])
def test_landmark_avatars_round_trip(tmp_path, renderer):
    avatar = synthetic_avatar(4, renderer=renderer)
    path = avatar.save(tmp_path / f"{renderer}.npz")
    loaded = Avatar.load(path)
    assert loaded.renderer == renderer and loaded.crop_size == avatar.crop_size
    assert set(loaded.extras) == set(avatar.extras)
    for name, value in avatar.extras.items():
        np.testing.assert_array_equal(loaded.extras[name], value)
