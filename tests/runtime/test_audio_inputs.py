"""read_audio on inputs that used to give silently wrong results: non-finite float
samples, stereo that cancels when averaged, and Opus end padding. Real files only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from talkrt.cli import app
from talkrt.errors import TalkrtError, TalkrtWarning
from talkrt.runtime.align import num_video_frames
from talkrt.runtime.media import read_audio

RATE = 16000


def sine(num_samples: int, rate: int = RATE, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(num_samples) / rate)).astype(np.float32)


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Samples as int16, written to a PCM16 WAV as they are (exact antiphase stays exact)."""
    return np.round(samples * 32767).astype(np.int16)


def decoded(samples: np.ndarray) -> np.ndarray:
    """What read_audio gives for int16 samples."""
    return (samples / 32768).astype(np.float32)


def antiphase_wav(path) -> np.ndarray:
    left = pcm16(sine(RATE // 2))
    soundfile.write(path, np.stack([left, -left], axis=1), RATE, subtype="PCM_16")
    return left


# ------------------------------------------------------------------- non-finite samples


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("channels", [1, 2])
def test_non_finite_float_samples_are_refused(tmp_path, bad, channels):
    audio = np.repeat(sine(RATE // 2)[:, None], channels, axis=1)
    audio[1234, channels - 1] = bad
    path = tmp_path / "speech.wav"
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    with pytest.raises(TalkrtError) as raised:
        read_audio(path, target_rate=8000)
    message = str(raised.value)
    assert "\n" not in message and "speech.wav" in message and "NaN or infinite" in message


def test_a_clean_channel_of_a_broken_file_can_be_used(tmp_path):
    left = sine(RATE // 2)
    right = left.copy()
    right[100] = np.inf
    path = tmp_path / "speech.wav"
    soundfile.write(path, np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    samples, _ = read_audio(path, channel=0)
    np.testing.assert_array_equal(samples, left)
    with pytest.raises(TalkrtError, match="NaN or infinite"):
        read_audio(path, channel=1)


# ------------------------------------------------------------------- channels


def test_antiphase_stereo_warns_when_averaged(tmp_path):
    path = tmp_path / "antiphase.wav"
    antiphase_wav(path)
    with pytest.warns(TalkrtWarning) as record:
        samples, _ = read_audio(path)
    assert not samples.any()  # the average really is digital silence
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "antiphase.wav" in message and "--channel 0" in message


def test_channel_picks_one_channel_without_warning(tmp_path):
    path = tmp_path / "antiphase.wav"
    left = antiphase_wav(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, rate = read_audio(path, channel=0)
        second, _ = read_audio(path, channel=1)
    assert rate == RATE
    np.testing.assert_array_equal(first, decoded(left))
    np.testing.assert_array_equal(second, decoded(-left))


@pytest.mark.parametrize("channel", [2, -1])
def test_channel_out_of_range_names_the_channel_count(tmp_path, channel):
    path = tmp_path / "antiphase.wav"
    antiphase_wav(path)
    with pytest.raises(TalkrtError) as raised:
        read_audio(path, channel=channel)
    message = str(raised.value)
    assert "\n" not in message and "antiphase.wav" in message and "2 audio channels" in message


def test_channel_of_a_mono_file(tmp_path):
    path = tmp_path / "mono.wav"
    mono = pcm16(sine(RATE // 4))
    soundfile.write(path, mono, RATE, subtype="PCM_16")
    samples, _ = read_audio(path, channel=0)
    np.testing.assert_array_equal(samples, decoded(mono))
    with pytest.raises(TalkrtError, match="1 audio channel "):
        read_audio(path, channel=1)


@pytest.mark.parametrize("right", ["other tone", "silent", "both silent", "quiet copy"])
def test_ordinary_stereo_does_not_warn(tmp_path, right):
    left = sine(RATE // 2)
    other = {
        "other tone": sine(RATE // 2, freq=1000.0, amplitude=0.3),
        "silent": np.zeros_like(left),
        "both silent": np.zeros_like(left),
        "quiet copy": 0.01 * left,
    }[right]
    if right == "both silent":
        left = np.zeros_like(left)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, other], axis=1), RATE, subtype="PCM_16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_audio(path)


def test_cli_prints_the_warning_as_one_line_and_takes_channel(tmp_path):
    path = tmp_path / "antiphase.wav"
    antiphase_wav(path)
    # --backend torch needs no model files, so the audio is read before the missing avatar stops the run.
    common = ["run", "--avatar", str(tmp_path / "missing.npz"), "--audio", str(path), "--backend", "torch", "--out", str(tmp_path / "out.mp4")]
    runner = CliRunner()

    averaged = runner.invoke(app, common)
    lines = averaged.stderr.strip().splitlines()
    warning_lines = [line for line in lines if line.startswith("warning:")]
    assert len(warning_lines) == 1, averaged.stderr
    assert "antiphase.wav" in warning_lines[0] and "--channel 0" in warning_lines[0]
    assert averaged.exit_code == 2 and lines[-1].startswith("error:")  # the missing avatar

    picked = runner.invoke(app, [*common, "--channel", "1"])
    assert "warning:" not in picked.stderr and picked.exit_code == 2

    for command in (common, ["profile", *common[1:]]):
        wrong = runner.invoke(app, [*command, "--channel", "5"])
        assert wrong.exit_code == 2, wrong.output
        assert wrong.stderr.strip().startswith("error:") and "2 audio channels" in wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------- Opus


def _encode_opus(path, samples: np.ndarray, rate: int = 48000) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libopus", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.mark.parametrize("suffix", [".opus", ".webm"])
@pytest.mark.parametrize(("seconds", "frames"), [(1.0, 25), (0.73, 19)])
def test_opus_decodes_to_its_exact_length(tmp_path, suffix, seconds, frames):
    """Pre-skip and end padding (Ogg granule position, WebM DiscardPadding) are removed."""
    original = sine(round(seconds * 48000), rate=48000)
    path = tmp_path / f"speech{suffix}"
    _encode_opus(path, original)
    samples, rate = read_audio(path)
    assert rate == 48000 and len(samples) == len(original)
    assert num_video_frames(len(samples), 25, rate) == frames
    # Aligned, not just the right length: a shift of a few samples would be far off.
    assert np.abs(samples - original).max() < 0.05
