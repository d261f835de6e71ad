"""Avatar preparation: boxes (file, Haar, Wav2Lip pads and smoothing), crops, mask, one-file round trip."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from talkrt.errors import TalkrtError
from talkrt.runtime import avatar as avatar_module
from talkrt.runtime.avatar import AVATAR_VERSION, Avatar, ping_pong_indices, prepare_avatar, synthetic_avatar
from talkrt.runtime.faces import blend_mask, detect_faces, face_boxes, haar_detector, read_boxes
from talkrt.runtime.synthetic import synthetic_frames


def assert_one_line(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert message and "\n" not in message


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def write_mp4(path, frames: np.ndarray, fps: Fraction) -> None:
    """H.264 (libx264, yuv420p) mp4 of BGR frames, written with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def expected_crops(frames, boxes, size=96):
    return np.stack(
        [cv2.resize(f[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LINEAR)
         for f, (x1, y1, x2, y2) in zip(frames, boxes.tolist())]
    )


def test_avatar_module_still_exports_the_moved_names():
    """Face helpers live in runtime/faces.py and the drawn face in runtime/synthetic.py; callers keep
    importing them from runtime/avatar.py."""
    from talkrt.runtime import faces, synthetic

    missing = [name for name in avatar_module.__all__ if not hasattr(avatar_module, name)]
    assert not missing, missing
    assert avatar_module.read_boxes is faces.read_boxes and avatar_module.FACE_PADS is faces.FACE_PADS
    assert avatar_module.synthetic_frames is synthetic.synthetic_frames


# --------------------------------------------------------------------------- file round trip


def test_synthetic_avatar_save_load_round_trip_is_exact(tmp_path):
    avatar = synthetic_avatar(num_frames=6, size=(240, 320), seed=3, fps=Fraction(30000, 1001))
    path = avatar.save(tmp_path / "face.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.npz"]  # one file, no temporary left

    loaded = Avatar.load(path)
    for name in ("frames", "boxes", "crops", "blend_mask"):
        original, restored = getattr(avatar, name), getattr(loaded, name)
        assert restored.dtype == original.dtype and restored.shape == original.shape
        np.testing.assert_array_equal(restored, original)
    assert loaded.fps == Fraction(30000, 1001)
    assert (loaded.face_size, loaded.source, loaded.version) == (96, avatar.source, AVATAR_VERSION)
    assert loaded.frames.shape == (6, 240, 320, 3) and loaded.crops.shape == (6, 96, 96, 3)

    # No pickles anywhere: every array loads with allow_pickle=False.
    with np.load(path, allow_pickle=False) as npz:
        assert str(npz["fps"]) == "30000/1001"
        assert sorted(npz.files) == sorted(
            ["format", "version", "frames", "boxes", "crops", "blend_mask", "face_size", "fps", "source", "renderer"]
        )

    compressed = Avatar.load(avatar.save(tmp_path / "small.npz", compress=True))
    np.testing.assert_array_equal(compressed.frames, avatar.frames)


def test_synthetic_avatar_boxes_and_crops_are_the_drawn_face():
    frames, raw = synthetic_frames(5, size=(256, 256), seed=0)
    avatar = synthetic_avatar(5, size=(256, 256), seed=0)
    np.testing.assert_array_equal(avatar.frames, frames)
    # Known boxes: the drawn face box plus Wav2Lip's 10 px bottom pad, no smoothing.
    np.testing.assert_array_equal(avatar.boxes, raw + np.array([0, 0, 0, 10], dtype=np.int32))
    np.testing.assert_array_equal(avatar.crops, expected_crops(frames, avatar.boxes))
    assert len({tuple(b) for b in raw.tolist()}) > 1  # the head moves
    # Skin colour at the box centre, wall colour at the frame corner.
    x1, y1, x2, y2 = raw[0]
    assert frames[0][(y1 + y2) // 2, (x1 + x2) // 2].tolist() == [120, 160, 210]
    assert frames[0][2, 2].tolist() == [90, 110, 120]


def test_blend_mask_is_soft_lower_face_and_zero_on_borders():
    mask = blend_mask(96)
    assert mask.shape == (96, 96) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() == 1.0
    assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0.0
    assert mask[:40].max() == 0.0  # upper part of the face (eyes) is never touched
    assert mask[67, 48] == 1.0  # mouth region fully replaced
    soft = (mask > 0) & (mask < 1)
    assert soft.sum() > mask.size * 0.05  # feathered edge, not a hard cut


@pytest.fixture()
def good_file(tmp_path):
    return synthetic_avatar(num_frames=3, size=(128, 128)).save(tmp_path / "good.npz")


def rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    with open(dst, "wb") as handle:
        np.savez(handle, **arrays)
    return dst


def test_truncated_file_is_one_line_error(good_file, tmp_path):
    data = good_file.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(TalkrtError, match="unreadable") as error:
        Avatar.load(bad)
    assert_one_line(error)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"version": np.array(AVATAR_VERSION + 1, dtype=np.int64)}, f"version {AVATAR_VERSION + 1}"),
        ({"crops": None}, "lacks crops"),
        ({"format": np.array("something-else")}, "not a talkrt avatar"),
        ({"boxes": np.zeros((2, 4), dtype=np.int32)}, "boxes has shape"),
        ({"boxes": np.array([[0, 0, 200, 50]] * 3, dtype=np.int32)}, "outside the 128x128 frame"),
        ({"blend_mask": np.full((96, 96), 2.0, dtype=np.float32)}, r"\[0, 1\]"),
        ({"frames": np.zeros((3, 128, 128, 3), dtype=np.float32)}, "uint8"),
        ({"fps": np.array("fast")}, "invalid fps"),
    ],
)
def test_bad_avatar_files_are_one_line_errors(good_file, tmp_path, changes, match):
    bad = rewrite(good_file, tmp_path / "bad.npz", **changes)
    with pytest.raises(TalkrtError, match=match) as error:
        Avatar.load(bad)
    assert_one_line(error)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(TalkrtError, match="does not exist") as error:
        Avatar.load(tmp_path / "nope.npz")
    assert_one_line(error)
    foreign = tmp_path / "foreign.npz"
    foreign.write_text("not a zip at all")
    with pytest.raises(TalkrtError, match="unreadable") as error:
        Avatar.load(foreign)
    assert_one_line(error)


# --------------------------------------------------------------------------- frame cycling


@pytest.mark.parametrize(
    "num_frames, one_cycle",
    [
        (1, [0]),
        (2, [0, 1]),
        (5, [0, 1, 2, 3, 4, 3, 2, 1]),
    ],
)
def test_ping_pong_over_three_cycles(num_frames, one_cycle):
    expected = one_cycle * 3 + [0]
    count = len(expected)
    got = ping_pong_indices(num_frames, 0, count)
    assert got.tolist() == expected
    avatar = synthetic_avatar(num_frames=num_frames, size=(64, 64))
    assert [avatar.frame_index(k) for k in range(count)] == expected
    assert avatar.frame_indices(0, count).tolist() == expected
    # A window starting mid-stream is the same slice of the sequence.
    assert avatar.frame_indices(3, count - 3).tolist() == expected[3:]


def test_single_image_always_frame_zero():
    assert ping_pong_indices(1, 12345, 4).tolist() == [0, 0, 0, 0]


# --------------------------------------------------------------------------- Wav2Lip box rules


def test_wav2lip_pads_and_clipping():
    raw = np.array([[10, 5, 110, 95]])
    # frame 100 high, 120 wide; pads top 3, bottom 10, left 4, right 15
    # x1 = 10-4 = 6, y1 = 5-3 = 2, x2 = min(120, 110+15) = 120, y2 = min(100, 95+10) = 100
    assert face_boxes(raw, (100, 120), pads=(3, 10, 4, 15), smooth_window=1).tolist() == [[6, 2, 120, 100]]
    # Wav2Lip's default pads (0, 10, 0, 0) only lower the bottom edge, clipped at the frame
    assert face_boxes(raw, (100, 120)).tolist() == [[10, 5, 110, 100]]
    assert face_boxes(np.array([[10, 5, 110, 60]]), (100, 120)).tolist() == [[10, 5, 110, 70]]
    assert face_boxes(raw, (100, 120)).dtype == np.int32
    with pytest.raises(TalkrtError, match="empty") as error:
        face_boxes(np.array([[130, 5, 150, 60]]), (100, 120))  # entirely right of the frame
    assert_one_line(error)


def test_wav2lip_smoothing_matches_get_smoothened_boxes():
    # Only x1 varies; pads (0,10,0,0) leave x1 alone. get_smoothened_boxes(boxes, T=5)
    # works in place on an int array: means are truncated, and from i = N-T+1 on the
    # window is the LAST 5 boxes, some of them already smoothed.
    x1 = [0, 10, 20, 30, 40, 50, 61]
    raw = np.array([[x, 5, 100, 80] for x in x1])
    # i=0: (0+10+20+30+40)/5   = 20
    # i=1: (10+20+30+40+50)/5  = 30
    # i=2: (20+30+40+50+61)/5  = 40.2 -> 40
    # i=3: window boxes[2:7] = 40,30,40,50,61 -> 44.2 -> 44
    # i=4: window boxes[2:7] = 40,44,40,50,61 -> 47
    # i=5: window boxes[2:7] = 40,44,47,50,61 -> 48.4 -> 48
    # i=6: window boxes[2:7] = 40,44,47,48,61 -> 48
    smoothed = face_boxes(raw, (200, 200))
    assert smoothed[:, 0].tolist() == [20, 30, 40, 44, 47, 48, 48]
    assert smoothed[:, 1:].tolist() == [[5, 100, 90]] * 7  # constants stay, bottom padded by 10

    # Fewer frames than the window: the window is all frames (still in place).
    # i=0: (0+10+50)/3 = 20;  i=1: (20+10+50)/3 = 26.7 -> 26;  i=2: (20+26+50)/3 = 32
    short = face_boxes(np.array([[x, 5, 100, 80] for x in (0, 10, 50)]), (200, 200))
    assert short[:, 0].tolist() == [20, 26, 32]
    # smooth_window=1 is --nosmooth
    assert face_boxes(raw, (200, 200), smooth_window=1)[:, 0].tolist() == x1


# --------------------------------------------------------------------------- boxes files


def test_boxes_files_json_text_csv(tmp_path):
    boxes = [[10, 20, 110, 140], [12, 21, 111, 141], [14, 22, 112, 142]]
    (tmp_path / "b.json").write_text(json.dumps(boxes))
    (tmp_path / "one.json").write_text(json.dumps([5, 6, 50, 60]))
    (tmp_path / "b.txt").write_text("# x1 y1 x2 y2\n" + "\n".join(" ".join(map(str, b)) for b in boxes) + "\n\n")
    (tmp_path / "b.csv").write_text("\n".join(",".join(map(str, b)) for b in boxes))
    (tmp_path / "float.txt").write_text("10.4 20.6 110 140\n")

    for name in ("b.json", "b.txt", "b.csv"):
        got = read_boxes(tmp_path / name, 3)
        assert got.dtype == np.int32 and got.tolist() == boxes, name
    assert read_boxes(tmp_path / "one.json", 4).tolist() == [[5, 6, 50, 60]] * 4
    assert read_boxes(tmp_path / "float.txt", 2).tolist() == [[10, 21, 110, 140]] * 2
    # a longer file is an error unless the video was cut short with max_frames
    assert read_boxes(tmp_path / "b.txt", 2, allow_extra=True).tolist() == boxes[:2]
    with pytest.raises(TalkrtError, match="3 boxes for 2 frames"):
        read_boxes(tmp_path / "b.txt", 2)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("count.json", "[[1,2,3,4],[1,2,3,4]]", "2 boxes for 3 frames"),
        ("count.txt", "1 2 3 4\n1 2 3 4\n1 2 3 4\n1 2 3 4\n", "4 boxes for 3 frames"),
        ("short.csv", "1,2,3,4\n1,2,3\n1,2,3,4\n", "line 2"),
        ("words.txt", "a b c d\n", "line 1"),
        ("broken.json", "[[1,2,3,4],", "not valid JSON"),
        ("shape.json", '{"boxes": [1,2,3,4]}', "expected a JSON list"),
        ("empty.txt", "# nothing\n", "no boxes"),
        ("flipped.txt", "50 50 10 60\n", "empty"),
        ("huge.txt", "0 0 1e12 1e12\n", r"box 0 \[0.0, 0.0, 1000000000000.0, 1000000000000.0\] has coordinates beyond 65536"),
        ("nan.json", "[[0, 0, NaN, 10]]", "boxes must be finite numbers"),
    ],
)
def test_bad_boxes_files_are_one_line_errors(tmp_path, name, content, match):
    import warnings

    path = tmp_path / name
    path.write_text(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's cast warnings must not leak past the one line
        with pytest.raises(TalkrtError, match=match) as error:
            read_boxes(path, 1 if name in ("huge.txt", "nan.json") else 3)
    assert_one_line(error)


def test_missing_boxes_file(tmp_path):
    with pytest.raises(TalkrtError, match="does not exist") as error:
        read_boxes(tmp_path / "nope.txt", 3)
    assert_one_line(error)


# --------------------------------------------------------------------------- detection


def test_haar_finds_the_synthetic_face():
    frames, raw = synthetic_frames(6, size=(240, 320), seed=2)
    found = detect_faces(frames)
    assert found.shape == (6, 4) and found.dtype == np.int32
    for box, truth in zip(found.tolist(), raw.tolist()):
        assert iou(box, truth) > 0.5, (box, truth)


def test_haar_downscales_large_frames():
    frames, raw = synthetic_frames(1, size=(720, 960), seed=0)
    (box,) = detect_faces(frames).tolist()
    assert iou(box, raw[0].tolist()) > 0.5


def test_no_face_anywhere_asks_for_a_boxes_file():
    blank = np.full((3, 120, 160, 3), 127, dtype=np.uint8)
    assert haar_detector()(blank[0]).shape == (0, 4)
    with pytest.raises(TalkrtError, match="boxes file") as error:
        detect_faces(blank)  # the real Haar cascade on frames with no face
    assert_one_line(error)


def green_marker_detector(frame: np.ndarray) -> np.ndarray:
    """A real detector: every blob of pure green (BGR 0,255,0) pixels is a 'face'."""
    mask = np.all(frame == (0, 255, 0), axis=-1).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    x, y, w, h = (stats[1:, i] for i in range(4))
    return np.stack([x, y, x + w, y + h], axis=1)


def test_missing_detections_take_the_nearest_detected_box():
    frames = np.zeros((7, 80, 100, 3), dtype=np.uint8)
    frames[1, 10:30, 10:40] = (0, 255, 0)  # frame 1: box [10, 10, 40, 30]
    frames[5, 40:70, 50:90] = (0, 255, 0)  # frame 5: big box [50, 40, 90, 70] ...
    frames[5, 2:6, 2:6] = (0, 255, 0)  # ... and a small one that must lose
    boxes = detect_faces(frames, detector=green_marker_detector)
    first, second = [10, 10, 40, 30], [50, 40, 90, 70]
    # frame 3 is 2 from both: the earlier detection wins the tie
    assert boxes.tolist() == [first, first, first, first, second, second, second]

    with pytest.raises(TalkrtError, match="boxes file") as error:
        detect_faces(np.zeros((4, 80, 100, 3), dtype=np.uint8), detector=green_marker_detector)
    assert_one_line(error)


# --------------------------------------------------------------------------- preparation


def test_prepare_avatar_from_h264_video_with_boxes_file(tmp_path):
    frames, raw = synthetic_frames(9, size=(240, 320), seed=5)
    video = tmp_path / "face.mp4"
    write_mp4(video, frames, Fraction(30000, 1001))
    boxes_file = tmp_path / "boxes.csv"
    boxes_file.write_text("\n".join(",".join(map(str, b)) for b in raw.tolist()))

    avatar = prepare_avatar(video, boxes=boxes_file)
    assert avatar.frames.shape == (9, 240, 320, 3) and avatar.frames.dtype == np.uint8
    assert avatar.fps == Fraction(30000, 1001)
    assert avatar.source == str(video)
    # Decoded H.264 stays close to what was drawn, and BGR order survives the round trip.
    assert np.abs(avatar.frames.astype(int) - frames.astype(int)).mean() < 3.0
    np.testing.assert_array_equal(avatar.boxes, face_boxes(raw, (240, 320), pads=(0, 10, 0, 0), smooth_window=5))
    np.testing.assert_array_equal(avatar.crops, expected_crops(avatar.frames, avatar.boxes))
    assert avatar.blend_mask.shape == (96, 96)

    reloaded = Avatar.load(avatar.save(tmp_path / "face.npz"))
    np.testing.assert_array_equal(reloaded.crops, avatar.crops)

    first = prepare_avatar(video, boxes=boxes_file, max_frames=4, face_size=48)
    assert first.frames.shape[0] == 4 and first.crops.shape == (4, 48, 48, 3)
    np.testing.assert_array_equal(first.frames, avatar.frames[:4])

    detected = prepare_avatar(video)  # no boxes file: the Haar cascade
    for box, truth in zip(detected.boxes.tolist(), avatar.boxes.tolist()):
        assert iou(box, truth) > 0.5


def test_prepare_avatar_from_image(tmp_path):
    frames, raw = synthetic_frames(1, size=(256, 256), seed=0)
    image = tmp_path / "face.png"
    assert cv2.imwrite(str(image), frames[0])
    avatar = prepare_avatar(image, fps=30)
    assert avatar.num_frames == 1 and avatar.fps == 30
    np.testing.assert_array_equal(avatar.frames[0], frames[0])
    assert iou(avatar.boxes[0].tolist(), raw[0].tolist()) > 0.5
    np.testing.assert_array_equal(avatar.crops, expected_crops(avatar.frames, avatar.boxes))
    assert avatar.frame_indices(0, 5).tolist() == [0] * 5

    one_box = tmp_path / "box.json"
    one_box.write_text(json.dumps(raw[0].tolist()))
    given = prepare_avatar(image, boxes=one_box)
    assert given.boxes.tolist() == [(raw[0] + [0, 0, 0, 10]).tolist()]


def test_prepare_avatar_bad_sources(tmp_path):
    with pytest.raises(TalkrtError, match="does not exist") as error:
        prepare_avatar(tmp_path / "missing.mp4")
    assert_one_line(error)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 1000)
    with pytest.raises(TalkrtError, match="cannot decode") as error:
        prepare_avatar(garbage)
    assert_one_line(error)
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"not a png")
    with pytest.raises(TalkrtError, match="cannot decode") as error:
        prepare_avatar(broken_png)
    assert_one_line(error)
