"""The torch Kaldi fbank against kaldi_native_fbank with DH_live's options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from talkrt.runtime.fbank import DHLIVE_FBANK, FbankOptions, KaldiFbank, fbank, num_fbank_frames

knf = pytest.importorskip("kaldi_native_fbank")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LOG_FLOOR = math.log(float(np.finfo(np.float32).eps))  # log(FLT_EPSILON) = -15.94...


def dhlive_options():
    """Exactly DH_live's reference settings; everything else is knf's default."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.frame_length_ms = 50
    opts.frame_opts.frame_shift_ms = 20
    opts.mel_opts.num_bins = 80
    opts.frame_opts.snip_edges = False
    opts.mel_opts.debug_mel = False
    return opts


def knf_frames(wav: np.ndarray, finished: bool = True) -> np.ndarray:
    """(T, 80) knf OnlineFbank features, with or without input_finished()."""
    online = knf.OnlineFbank(dhlive_options())
    online.accept_waveform(16000, wav.tolist())
    if finished:
        online.input_finished()
    frames = [online.get_frame(i) for i in range(online.num_frames_ready)]
    return np.array(frames, dtype=np.float32).reshape(-1, 80)


def speech_like(num_samples: int, seed: int = 0) -> np.ndarray:
    """Harmonics of a wobbling f0 under a syllable-rate envelope plus noise, quantised like int16/32768."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / 16000
    f0 = 120.0 + 20.0 * seed + 10.0 * np.sin(2 * np.pi * 4.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    harmonics = sum(np.sin(k * phase + k) / k for k in range(1, 30))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t + seed)
    wav = 0.3 * envelope * harmonics + 0.01 * rng.standard_normal(num_samples)
    return (np.clip(np.round(wav * 32768), -32768, 32767) / 32768).astype(np.float32)


LENGTHS = [1, 159, 160, 320, 399, 400, 559, 560, 16000, 16000 * 3 + 123]


def test_options_match_dhlive() -> None:
    assert (DHLIVE_FBANK.window_length, DHLIVE_FBANK.hop, DHLIVE_FBANK.fft_size) == (800, 320, 1024)
    with pytest.raises(NotImplementedError):
        KaldiFbank(FbankOptions(snip_edges=True))


@pytest.mark.parametrize("num_samples", LENGTHS)
def test_matches_knf_on_speech(num_samples: int) -> None:
    wav = speech_like(num_samples, seed=num_samples % 3)
    expected = knf_frames(wav)
    actual = fbank(torch.from_numpy(wav)).numpy()
    # knf emits (S + 160) // 320 frames once finished: none at all below 160 samples.
    assert actual.shape == expected.shape == (num_fbank_frames(num_samples), 80)
    assert actual.shape[0] == (num_samples + 160) // 320
    if expected.size:
        assert expected.min() > LOG_FLOOR + 5  # real energies, no floored bins
        # Observed: under 1e-4 (float32 FFT and filterbank rounding on both sides).
        np.testing.assert_allclose(actual, expected, atol=5e-4, rtol=0)


@pytest.mark.parametrize("num_samples", [160, 559, 16000])
def test_matches_knf_on_silence(num_samples: int) -> None:
    wav = np.zeros(num_samples, dtype=np.float32)
    expected = knf_frames(wav)
    actual = fbank(torch.from_numpy(wav)).numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(expected, LOG_FLOOR, atol=1e-6)
    np.testing.assert_allclose(actual, LOG_FLOOR, atol=1e-6)


def test_online_frame_count_matches_knf() -> None:
    wav = speech_like(2000, seed=1)
    for num_samples in list(range(0, 1300, 7)) + [1439, 1440, 1441, 1999]:
        online = knf.OnlineFbank(dhlive_options())
        online.accept_waveform(16000, wav[:num_samples].tolist())
        ready = online.num_frames_ready
        # Ready frames are those whose window [320t - 240, 320t + 560) ends inside the input.
        assert ready == num_fbank_frames(num_samples, flush=False) == max(0, (num_samples - 560) // 320 + 1)
        online.input_finished()
        assert online.num_frames_ready == num_fbank_frames(num_samples, flush=True)


def test_online_frames_are_final_in_knf_and_ours() -> None:
    wav = speech_like(16000 * 2 + 77, seed=2)
    flushed = fbank(torch.from_numpy(wav)).numpy()
    for prefix in [560, 879, 880, 5000, 16000]:
        partial = knf_frames(wav[:prefix], finished=False)
        assert partial.shape[0] == num_fbank_frames(prefix, flush=False) > 0
        np.testing.assert_allclose(flushed[: partial.shape[0]], partial, atol=5e-4, rtol=0)


def test_batched_equals_rows() -> None:
    batch = torch.from_numpy(np.stack([speech_like(8123, seed=s) for s in range(3)]))
    batched = fbank(batch)
    assert batched.shape == (3, num_fbank_frames(8123), 80)
    for row, wav in zip(batched, batch):
        torch.testing.assert_close(row, fbank(wav), atol=1e-5, rtol=0)
    assert fbank(batch[:, :100]).shape == (3, 0, 80)


def test_streaming_prefix_frames_are_final() -> None:
    wav = torch.from_numpy(speech_like(16000 + 321, seed=0))
    full = fbank(wav)
    for prefix in [560, 700, 881, 4000, 9999]:
        ready = num_fbank_frames(prefix, flush=False)
        assert 0 < ready <= num_fbank_frames(prefix, flush=True)
        torch.testing.assert_close(fbank(wav[:prefix])[:ready], full[:ready], atol=1e-5, rtol=0)


def test_dtypes_and_ranks() -> None:
    wav = torch.from_numpy(speech_like(3000, seed=1))
    converted = fbank(wav.double())
    assert converted.dtype == torch.float32
    torch.testing.assert_close(converted, fbank(wav), atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="floating-point"):
        fbank((wav * 32768).to(torch.int16))
    with pytest.raises(ValueError, match=r"\(S,\) or \(B, S\)"):
        fbank(wav.reshape(1, 1, -1))
    with pytest.raises(ValueError, match=r"\(S,\) or \(B, S\)"):
        fbank(torch.tensor(0.5))


@needs_cuda
@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    wav = torch.from_numpy(np.stack([speech_like(16000 + 123, seed=s) for s in range(2)]))
    module = KaldiFbank()
    expected = module(wav)
    actual = module(wav.cuda())
    assert actual.device.type == "cuda"
    torch.testing.assert_close(actual.cpu(), expected, atol=2e-4, rtol=0)
