"""`talkrt avatar prepare / run / profile --renderer dinet|dhlive` end to end on the CPU, as a user runs them.

Every command runs in a subprocess. DINet (~1.5 s a frame at 416x320) and DH_live
(~1 s a frame) are slow on two cores, so the speech is 0.2 s: 5 frames at 25 fps.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_cli import talkrt

from talkrt.models.dinet.alignment import DEEPSPEECH
from talkrt.runtime.align import num_video_frames
from talkrt.runtime.avatar import Avatar, synthetic_avatar
from talkrt.runtime.media import probe
from talkrt.runtime.synthetic import synthetic_frames

RATE = 16000
SECONDS = 0.2
SAMPLES = int(SECONDS * RATE)
FRAMES = num_video_frames(SAMPLES, 25)


def one_line_error(result, *fragments: str) -> None:
    """Exit code 2, a single `error:` line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


def check_video(path: Path, frame_size: tuple[int, int]) -> None:
    info = probe(path)
    assert info["num_frames"] == FRAMES
    assert (info["height"], info["width"]) == frame_size
    assert info["audio_codec"] == "aac" and info["audio_rate"] == RATE
    assert abs(info["audio_duration"] - SECONDS) < 1e-3


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """face.png (the drawn face the Haar cascade finds), its template landmarks, 0.2 s of speech."""
    import cv2

    from talkrt.runtime.landmarks import template_landmarks
    from talkrt.runtime.media import write_wav
    from talkrt.runtime.synthetic import synthetic_speech

    work = tmp_path_factory.mktemp("renderers")
    frames, boxes = synthetic_frames(1, (256, 256))
    assert cv2.imwrite(str(work / "face.png"), frames[0])
    np.save(work / "landmarks.npy", template_landmarks(boxes)[0])  # (68, 2) in the drawn face box
    speech = synthetic_speech(SECONDS, seed=3)
    assert len(speech) == SAMPLES
    write_wav(work / "speech.wav", speech, RATE)
    return work


@pytest.fixture(scope="module")
def avatars(work) -> dict[str, subprocess.CompletedProcess]:
    """`talkrt avatar prepare face.png --renderer R` for dinet and dhlive, detection by the Haar cascade."""
    results = {}
    for renderer in ("dinet", "dhlive"):
        results[renderer] = talkrt("avatar", "prepare", "face.png", "--renderer", renderer, "-o", f"{renderer}.npz", cwd=work)
    return results


@pytest.mark.parametrize("renderer, crop_size", [("dhlive", (256, 256)), ("dinet", (416, 320))])
def test_avatar_prepare_detects_the_face(work, avatars, renderer, crop_size) -> None:
    result = avatars[renderer]
    assert result.returncode == 0, result.stderr
    height, width = crop_size
    assert f"{renderer} crops {width}x{height}" in result.stdout
    avatar = Avatar.load(work / f"{renderer}.npz")
    assert avatar.renderer == renderer and avatar.crop_size == crop_size
    assert avatar.num_frames == 1 and avatar.frame_size == (256, 256)
    assert avatar.extras  # the renderer's own per-avatar inputs were saved


def test_avatar_prepare_with_a_landmarks_file(work) -> None:
    """The drawn face's template landmarks from a .npy: the same avatar as synthetic_avatar builds in memory."""
    result = talkrt("avatar", "prepare", "face.png", "--renderer", "dhlive", "--landmarks", "landmarks.npy", "-o", "marked.npz", cwd=work)
    assert result.returncode == 0, result.stderr
    avatar = Avatar.load(work / "marked.npz")
    expected = synthetic_avatar(1, (256, 256), renderer="dhlive")
    assert avatar.renderer == "dhlive" and avatar.crop_size == (256, 256)
    np.testing.assert_array_equal(avatar.boxes, expected.boxes)
    np.testing.assert_array_equal(avatar.crops, expected.crops)

    result = talkrt("avatar", "prepare", "face.png", "--renderer", "wav2lip", "--landmarks", "landmarks.npy", "-o", "w.npz", cwd=work)
    one_line_error(result, "--landmarks is for the dinet and dhlive renderers")
    assert not (work / "w.npz").exists()


def test_run_dhlive_with_onnx_runtime(work, avatars) -> None:
    """The three DH_live graphs exported by the CLI under the names --engines expects, then `run --backend ort`."""
    assert avatars["dhlive"].returncode == 0, avatars["dhlive"].stderr
    models = work / "dhlive-models"
    exports = [
        ("dhlive-render", "--graph", "generator", "-o", str(models / "dhlive-render-generator.onnx")),
        ("dhlive-render", "--graph", "reference", "-o", str(models / "dhlive-render-reference.onnx")),
        ("dhlive-audio", "-o", str(models / "dhlive-audio.onnx")),
    ]
    for args in exports:
        result = talkrt("export", *args, "--random-init", "--no-validate", cwd=work)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in models.iterdir()) == ["dhlive-audio.onnx", "dhlive-render-generator.onnx", "dhlive-render-reference.onnx"]

    command = ["run", "--avatar", "dhlive.npz", "--audio", "speech.wav", "--renderer", "dhlive", "--backend", "ort", "--engines", str(models), "--batch-size", "4"]
    result = talkrt(*command, "-o", "dhlive.mp4", cwd=work)
    assert result.returncode == 0, result.stderr
    assert f"{FRAMES} frames" in result.stdout
    check_video(work / "dhlive.mp4", (256, 256))

    (models / "dhlive-audio.onnx").unlink()
    result = talkrt(*command, "-o", "no-audio.mp4", cwd=work)
    one_line_error(result, "dhlive-audio")
    assert not (work / "no-audio.mp4").exists()


def test_run_dinet_with_precomputed_features(work, avatars) -> None:
    """DINet in torch (random weights) driven by a 25 Hz (frames, 29) features file; wrong files are one-line errors."""
    assert avatars["dinet"].returncode == 0, avatars["dinet"].stderr
    count = DEEPSPEECH.num_feature_frames(SAMPLES)
    rng = np.random.default_rng(0)
    np.save(work / "features.npy", rng.standard_normal((count, 29)).astype(np.float32))
    np.save(work / "long.npy", rng.standard_normal((3 * count, 29)).astype(np.float32))

    command = ["run", "--avatar", "dinet.npz", "--audio", "speech.wav", "--renderer", "dinet", "--backend", "torch", "--batch-size", "4"]
    result = talkrt(*command, "--features", "features.npy", "-o", "dinet.mp4", cwd=work)
    assert result.returncode == 0, result.stderr
    check_video(work / "dinet.mp4", (256, 256))

    result = talkrt(*command, "--features", "long.npy", "-o", "long.mp4", cwd=work)
    one_line_error(result, f"the DINet features cover {3 * count / 25:.2f} s", f"the audio is {SECONDS:.2f} s")
    assert not (work / "long.mp4").exists()

    result = talkrt("run", "--avatar", "dhlive.npz", "--audio", "speech.wav", "--renderer", "dhlive", "--backend", "torch", "--features", "features.npy", "-o", "x.mp4", cwd=work)
    one_line_error(result, "--features is for --renderer dinet")


def test_profile_dhlive_in_torch(work, avatars) -> None:
    assert avatars["dhlive"].returncode == 0, avatars["dhlive"].stderr
    result = talkrt("profile", "--avatar", "dhlive.npz", "--audio", "speech.wav", "--renderer", "dhlive", "--backend", "torch", "--batch-size", "4",
                    "--report", "prof", "-o", "prof.mp4", cwd=work)
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "prof.json").read_text())
    assert report["frames"] == FRAMES
    assert {"features", "render"} <= set(report["stages"])
    assert report["stages"]["features"]["frames"] == FRAMES and report["stages"]["render"]["frames"] == FRAMES
    assert (work / "prof.md").is_file() and (work / "prof.png").is_file()
    check_video(work / "prof.mp4", (256, 256))


def test_torch_model_warns_which_roles_stay_random(work, avatars) -> None:
    """DH_live's --model (render.pth) holds the generator and the reference encoder, not the audio LSTM:
    `run --backend torch` says so in one `warning:` line before going on (here to a wrong avatar)."""
    import torch
    from fake_checkpoints import fake_state_dict

    assert avatars["dinet"].returncode == 0, avatars["dinet"].stderr
    torch.save(fake_state_dict("dhlive_dinet_five_ref_6_30"), work / "render.pth")
    result = talkrt("run", "--avatar", "dinet.npz", "--audio", "speech.wav", "--renderer", "dhlive", "--backend", "torch", "--model", "render.pth", "-o", "w.mp4", cwd=work)
    warning, error = result.stderr.strip().splitlines()
    assert warning == "warning: --model loads the generator; audio run with random weights in --backend torch (use exported graphs with ort/trt)"
    assert error.startswith("error: the avatar was prepared for dinet") and result.returncode == 2


def test_profile_dinet_streamed_on_a_chosen_context(work, avatars) -> None:
    """DINet's HuBERT-ASR features streamed (torch, tiny asr, random weights) on the history given by
    --stream-context-ms; the report names the context, and a renderer without one refuses it in one line."""
    assert avatars["dinet"].returncode == 0, avatars["dinet"].stderr
    command = ["profile", "--avatar", "dinet.npz", "--audio", "speech.wav", "--renderer", "dinet", "--backend", "torch", "--batch-size", "4", "--stream-chunk-ms", "40"]
    result = talkrt(*command, "--stream-context-ms", "1000", "--report", "ctx", "-o", "ctx.mp4", cwd=work)
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "ctx.json").read_text())
    assert report["feature_context"] == "sliding context: 1000 ms left, 200 ms steps, 80 ms lookahead"
    assert report["frames"] == FRAMES and "sliding context: 1000 ms left" in (work / "ctx.md").read_text()
    check_video(work / "ctx.mp4", (256, 256))

    result = talkrt("run", "--avatar", "dhlive.npz", "--audio", "speech.wav", "--renderer", "dhlive", "--backend", "torch",
                    "--stream-chunk-ms", "40", "--stream-context-ms", "1000", "-o", "no.mp4", cwd=work)
    one_line_error(result, "--stream-context-ms: the dhlive features", "stream exactly; there is no context to choose")
    assert not (work / "no.mp4").exists()
