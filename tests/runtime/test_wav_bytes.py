"""WAV bytes in memory: a correct RIFF header, read back by the wave module and soundfile; data URLs."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
import soundfile
import torch

from talkrt.runtime.audio import resample, to_16k, wav_bytes, wav_data_url
from talkrt.runtime.media import read_audio, write_wav


def _tone(rate: int, seconds: float = 0.31) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.6 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 8000])
def test_pcm16_reads_back_with_wave_and_soundfile(rate) -> None:
    audio = _tone(rate)
    data = wav_bytes(audio, rate)
    with wave.open(io.BytesIO(data)) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate(), handle.getnframes()) == (1, 2, rate, len(audio))
        pcm = np.frombuffer(handle.readframes(len(audio)), "<i2")
    assert np.abs(pcm / 32767.0 - audio).max() <= 0.5 / 32767 + 1e-7
    decoded, sr = soundfile.read(io.BytesIO(data), dtype="float32")
    assert sr == rate and np.abs(decoded - audio).max() < 1e-4
    assert int.from_bytes(data[4:8], "little") == len(data) - 8  # RIFF size


def test_float32_is_exact_with_soundfile() -> None:
    audio = np.concatenate([_tone(24000), np.array([1.5, -2.0, 1e-9], np.float32)])  # beyond [-1, 1] is kept
    data = wav_bytes(torch.from_numpy(audio), 24000, "float32")
    decoded, sr = soundfile.read(io.BytesIO(data), dtype="float32")
    assert sr == 24000 and np.array_equal(decoded, audio)
    info = soundfile.info(io.BytesIO(data))
    assert info.subtype == "FLOAT" and info.frames == len(audio)
    # The standard library's wave module reads PCM only; it must recognise the file and say why it stops.
    with pytest.raises(wave.Error, match="unknown format: 3"):
        wave.open(io.BytesIO(data))


def test_data_url_round_trip() -> None:
    audio = _tone(16000)
    url = wav_data_url(audio, 16000)
    assert url.startswith("data:audio/wav;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == wav_bytes(audio, 16000)


def test_bad_requests() -> None:
    with pytest.raises(ValueError, match="sample format"):
        wav_bytes(np.zeros(4, np.float32), 16000, "mulaw")
    with pytest.raises(ValueError, match="mono"):
        wav_bytes(np.zeros((2, 4), np.float32), 16000)


def test_to_16k_and_files(tmp_path) -> None:
    audio = _tone(22050)
    on_device = to_16k(audio, 22050)
    assert torch.equal(on_device, resample(torch.from_numpy(audio), 22050, 16000))
    write_wav(tmp_path / "a.wav", audio, 22050, "float32")
    back, rate = read_audio(tmp_path / "a.wav")
    assert rate == 22050 and np.abs(back - audio).max() < 1e-6
