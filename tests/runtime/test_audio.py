"""The torch audio front-end against its references: librosa + scipy (Wav2Lip) and resample_poly."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from talkrt.runtime.audio import (
    WAV2LIP_MEL_CONFIG,
    mel_num_frames,
    resample,
    resampled_length,
    wav2lip_mel,
)

librosa = pytest.importorskip("librosa")
signal = pytest.importorskip("scipy.signal")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def speech_like(num_samples: int, seed: int = 0, sample_rate: int = 16000) -> np.ndarray:
    """Voiced harmonics with vibrato and a syllable-rate envelope, plus a noise floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    f0 = 110.0 + 15.0 * (seed % 5) + 12.0 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harmonics = sum(np.sin(k * phase + k) / k for k in range(1, 25))
    envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 3.0 * t + seed))
    noise = 0.01 * rng.standard_normal(num_samples)
    return (0.3 * envelope * harmonics + noise).astype(np.float32)


def librosa_wav2lip_mel(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip audio.melspectrogram written out with librosa/scipy and the same parameters."""
    emphasised = signal.lfilter([1.0, -0.97], [1.0], wav)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_fft larger than very short inputs
        spectrum = librosa.stft(
            y=emphasised, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="reflect"
        )
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    mel = np.dot(basis, np.abs(spectrum))
    decibels = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * ((decibels + 100.0) / 100.0) - 4.0, -4.0, 4.0)


# ----------------------------------------------------------------------- mel


@pytest.mark.parametrize("num_samples", [1, 7, 399, 400, 401, 801, 3199, 12345, 16000, 16001, 40007])
def test_mel_matches_librosa(num_samples: int) -> None:
    wav = speech_like(num_samples, seed=num_samples % 7)
    expected = librosa_wav2lip_mel(wav)
    actual = wav2lip_mel(torch.from_numpy(wav)).numpy()
    assert actual.shape == expected.shape == (80, 1 + num_samples // 200)
    assert np.abs(actual - expected).max() < 1e-4


def test_mel_frame_count() -> None:
    for num_samples in [1, 199, 200, 201, 16000, 16199]:
        mel = wav2lip_mel(torch.zeros(num_samples))
        assert mel.shape == (80, mel_num_frames(num_samples)) == (80, 1 + num_samples // 200)


def test_mel_batched_equals_unbatched() -> None:
    batch = torch.from_numpy(np.stack([speech_like(8123, seed=s) for s in range(3)]))
    batched = wav2lip_mel(batch)
    assert batched.shape == (3, 80, 1 + 8123 // 200)
    for row, wav in zip(batched, batch):
        torch.testing.assert_close(row, wav2lip_mel(wav), atol=1e-5, rtol=0)


def test_mel_of_digital_silence_is_finite_floor() -> None:
    mel = wav2lip_mel(torch.zeros(2, 16000))
    assert torch.isfinite(mel).all()
    assert torch.equal(mel, torch.full_like(mel, -WAV2LIP_MEL_CONFIG.max_abs_value))


def test_mel_float64_path_matches_librosa_tightly() -> None:
    wav = speech_like(9001, seed=3).astype(np.float64)
    actual = wav2lip_mel(torch.from_numpy(wav)).numpy()
    assert np.abs(actual - librosa_wav2lip_mel(wav)).max() < 1e-6


def test_mel_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        wav2lip_mel(torch.zeros(1, 2, 100))
    with pytest.raises(TypeError):
        wav2lip_mel(torch.zeros(100, dtype=torch.int16))


def test_audio_module_imports_stay_light() -> None:
    code = "import sys, talkrt.runtime.audio; print('scipy' in sys.modules, 'librosa' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- resampling


def scipy_resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    divisor = math.gcd(orig_sr, target_sr)
    return signal.resample_poly(wav.astype(np.float64), target_sr // divisor, orig_sr // divisor, axis=-1)


@pytest.mark.parametrize("orig_sr", [22050, 44100, 48000, 8000, 24000])
@pytest.mark.parametrize("num_samples", [1, 5, 999, 22051, 48000])
def test_resample_matches_scipy(orig_sr: int, num_samples: int) -> None:
    wav = speech_like(num_samples, seed=1, sample_rate=orig_sr)
    expected = scipy_resample(wav, orig_sr, 16000)
    actual = resample(torch.from_numpy(wav), orig_sr).numpy()
    assert actual.shape == expected.shape
    assert actual.shape[-1] == resampled_length(num_samples, orig_sr, 16000)
    peak = max(np.abs(wav).max(), 1e-12)
    assert np.abs(actual - expected).max() <= 1e-5 * peak


def test_resample_upsampling_matches_scipy() -> None:
    wav = speech_like(7001, seed=2)
    expected = scipy_resample(wav, 16000, 22050)
    actual = resample(torch.from_numpy(wav), 16000, 22050).numpy()
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(wav).max()


def test_resample_float64_is_exact() -> None:
    wav = np.random.default_rng(0).standard_normal(4411)
    actual = resample(torch.from_numpy(wav), 44100).numpy()
    np.testing.assert_allclose(actual, scipy_resample(wav, 44100, 16000), rtol=0, atol=1e-12)


def test_resample_identity_returns_input() -> None:
    wav = torch.randn(1234)
    assert resample(wav, 16000, 16000) is wav


def test_resample_batched_rows_are_independent() -> None:
    batch = torch.from_numpy(np.stack([speech_like(5000, seed=s, sample_rate=22050) for s in range(3)]))
    batched = resample(batch, 22050)
    for row, wav in zip(batched, batch):
        torch.testing.assert_close(row, resample(wav, 22050), atol=1e-6, rtol=0)


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError):
        resample(torch.zeros(10), 0)
    with pytest.raises(TypeError):
        resample(torch.zeros(10, dtype=torch.int16), 44100)


# ----------------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_cuda
def test_mel_and_resample_on_cuda_match_cpu() -> None:
    wav = torch.from_numpy(speech_like(44100, seed=6, sample_rate=44100))
    on_device = resample(wav.cuda(), 44100)
    assert on_device.is_cuda
    torch.testing.assert_close(on_device.cpu(), resample(wav, 44100), atol=1e-5, rtol=0)
    mel = wav2lip_mel(on_device)
    assert mel.is_cuda
    torch.testing.assert_close(mel.cpu(), wav2lip_mel(on_device.cpu()), atol=1e-4, rtol=0)
