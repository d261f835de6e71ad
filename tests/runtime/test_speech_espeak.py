"""A real spoken sentence, made by espeak-ng during the test, through the audio front-end:
resampling, the Wav2Lip mel (PyTorch and its ONNX graph), a tiny HuBERT (PyTorch and
ONNX Runtime) and the alignment of mel windows to 25 fps video frames."""

from __future__ import annotations

import os
import shutil
import subprocess
import wave

import numpy as np
import pytest
import torch

from talkrt.models.hubert.alignment import HUBERT
from talkrt.models.wav2lip.alignment import WAV2LIP_MEL
from talkrt.runtime.align import gather_windows, num_video_frames
from talkrt.runtime.audio import WAV2LIP_MEL_CONFIG, resample, resampled_length, wav2lip_mel

SENTENCE = "The quick brown fox jumps over the lazy dog, then reads the evening news aloud."
ESPEAK_RATE = 22050  # espeak-ng writes 22050 Hz mono PCM16
LEAD_IN = 4000  # 0.25 s of silence at 16 kHz; espeak-ng trims leading silence, recordings rarely do
FPS = 25


def _espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        message = "espeak-ng is not installed (apt-get install espeak-ng); it speaks the test sentence"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI installs it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> dict:
    """The sentence as 22050 Hz samples, and resampled to 16 kHz with a silent lead-in."""
    out = tmp_path_factory.mktemp("espeak") / "sentence.wav"
    subprocess.run([_espeak(), "-w", str(out), SENTENCE], check=True, capture_output=True, timeout=60)
    with wave.open(str(out), "rb") as handle:
        assert (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) == (ESPEAK_RATE, 1, 2)
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    original = torch.from_numpy(pcm.astype(np.float32) / 32768.0)
    speech = resample(original, ESPEAK_RATE, 16000)
    waveform = torch.cat([torch.zeros(LEAD_IN), speech])
    return {"original": original, "speech": speech, "waveform": waveform}


def test_espeak_sentence_resamples_to_16k(spoken) -> None:
    original, speech = spoken["original"], spoken["speech"]
    assert 2.0 < len(original) / ESPEAK_RATE < 15.0  # a sentence, not a click or a hang
    assert len(speech) == resampled_length(len(original), ESPEAK_RATE, 16000)
    assert torch.isfinite(speech).all() and speech.abs().max() <= 1.0
    # Speech energy lies well below 8 kHz, so the anti-aliasing filter keeps the level.
    rms_ratio = speech.pow(2).mean().sqrt() / original.pow(2).mean().sqrt()
    assert 0.97 < rms_ratio < 1.03


def test_wav2lip_mel_of_speech(spoken) -> None:
    waveform = spoken["waveform"]
    num_samples = len(waveform)
    mel = wav2lip_mel(waveform)
    assert mel.shape == (80, 1 + num_samples // 200)
    assert torch.isfinite(mel).all()
    assert mel.min() >= -4.0 and mel.max() <= 4.0

    frame_energy = mel.mean(dim=0)  # mean over the 80 bins, in Wav2Lip's [-4, 4] units (8 units = 100 dB)
    ordered = frame_energy.sort().values
    fifth = len(ordered) // 5
    loud, quiet = ordered[-fifth:].mean(), ordered[:fifth].mean()
    assert loud - quiet > 2.0, f"loudest fifth {loud:.2f} vs quietest fifth {quiet:.2f}"  # > 25 dB apart
    assert loud > -2.0  # voiced speech, well above the floor

    # Frames whose 800-sample window lies inside the lead-in see digital silence: the floor.
    floor = -WAV2LIP_MEL_CONFIG.max_abs_value
    silent_frames = (LEAD_IN - WAV2LIP_MEL_CONFIG.n_fft // 2) // WAV2LIP_MEL_CONFIG.hop_length + 1
    assert torch.all(mel[:, :silent_frames] == floor)
    # espeak-ng ends an utterance with a short pause: the last 50 ms are far below the speech.
    assert frame_energy[-4:].max() < quiet + 0.5 < loud
    # Most of the sentence is sound, not silence.
    speaking = frame_energy[silent_frames:] > floor + 1.0
    assert speaking.float().mean() > 0.6


@pytest.fixture(scope="module")
def mel_session(tmp_path_factory):
    from talkrt.models.registry import get_spec
    from talkrt.export.onnx import export_onnx
    from talkrt.export.validate import onnx_session

    spec = get_spec("mel")
    path = tmp_path_factory.mktemp("mel") / "mel.onnx"
    export_onnx(spec, spec.build_module(None), path)
    return onnx_session(path)


def test_mel_graph_matches_torch_on_speech(spoken, mel_session) -> None:
    waveform = spoken["waveform"]
    (onnx_mel,) = mel_session.run(["mel"], {"waveform": waveform[None].numpy()})
    expected = wav2lip_mel(waveform).numpy()
    assert onnx_mel.shape == (1, *expected.shape)
    np.testing.assert_allclose(onnx_mel[0], expected, atol=1e-4, rtol=0)


def test_tiny_hubert_on_speech_torch_and_onnx(spoken, tmp_path) -> None:
    from talkrt.models.registry import get_spec
    from talkrt.export.onnx import export_onnx
    from talkrt.export.validate import onnx_session

    spec = get_spec("hubert", preset="tiny-hubert")
    module = spec.build_module(None, seed=0)
    path = tmp_path / "tiny-hubert.onnx"
    export_onnx(spec, module, path)

    speech = spoken["speech"][None]  # (1, S)
    num_samples = speech.shape[-1]
    with torch.no_grad():
        expected = module(speech).numpy()
    (actual,) = onnx_session(path).run(["features"], {"input_values": speech.numpy()})
    frames = (num_samples - 400) // 320 + 1
    assert frames == HUBERT.num_feature_frames(num_samples)
    assert expected.shape == actual.shape == (1, frames, 64)
    assert np.isfinite(actual).all()
    np.testing.assert_allclose(actual, expected, atol=spec.tolerance.atol, rtol=spec.tolerance.rtol)
    # Random weights still make features that follow the audio: frames differ over the sentence.
    assert actual[0].std(axis=0).mean() > 1e-3


def test_mel_windows_for_25_fps_video(spoken) -> None:
    waveform = spoken["waveform"]
    num_samples = len(waveform)
    mel = wav2lip_mel(waveform)
    num_frames = num_video_frames(num_samples, FPS)
    assert num_frames == -(-num_samples * FPS // 16000)  # one frame per 40 ms started inside the audio
    indices = WAV2LIP_MEL.window_indices(mel.shape[-1], num_frames, FPS)
    windows = gather_windows(mel, indices)
    assert windows.shape == (num_frames, 80, 16)
    assert WAV2LIP_MEL.num_feature_frames(num_samples) == mel.shape[-1]
    # Wav2Lip's inference loop: frame k starts at mel column int(80 * k / fps), shifted back at the end.
    for k in (0, 1, num_frames // 2, num_frames - 1):
        start = min(int(80 * k / FPS), mel.shape[-1] - 16)
        torch.testing.assert_close(windows[k], mel[:, start : start + 16], atol=0, rtol=0)
    # Windows over the sentence differ; windows inside the lead-in are the floor.
    assert torch.all(windows[0] == -4.0)
    assert windows[num_frames // 2].std() > 0.1
