"""Alignment contract: integer frame anchors, window rules of the original repos, streaming readiness."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from talkrt.models.dhlive.alignment import DHLIVE_LSTM, FBANK
from talkrt.models.dinet.alignment import CTC_25HZ, DEEPSPEECH
from talkrt.models.hubert.alignment import HUBERT, WAV2VEC2
from talkrt.models.wav2lip.alignment import WAV2LIP_MEL
from talkrt.runtime.align import (
    as_fps,
    frame_start_sample,
    frame_start_samples,
    gather_windows,
    num_video_frames,
)
from talkrt.runtime.audio import wav2lip_mel

ALIGNMENTS = {preset.name: preset for preset in (WAV2LIP_MEL, HUBERT, WAV2VEC2, DEEPSPEECH, FBANK, CTC_25HZ, DHLIVE_LSTM)}
SR = 16000
FPS_VALUES = [
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(60),
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(50),
    Fraction(60000, 1001),
]
fps_values = st.sampled_from(FPS_VALUES)
presets = st.sampled_from(list(ALIGNMENTS.values()))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------ fps and frame clock


@pytest.mark.parametrize(
    ("given_fps", "expected"),
    [
        (25, Fraction(25)),
        (25.0, Fraction(25)),
        ("25", Fraction(25)),
        (12.5, Fraction(25, 2)),
        ("30000/1001", Fraction(30000, 1001)),
        (29.97, Fraction(30000, 1001)),
        ("29.97", Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (Fraction(30000, 1001), Fraction(30000, 1001)),
    ],
)
def test_fps_is_parsed_to_an_exact_fraction(given_fps, expected: Fraction) -> None:
    assert as_fps(given_fps) == expected


@pytest.mark.parametrize("bad", [0, -25, "abc", "1/0", True, None])
def test_invalid_fps_is_refused(bad) -> None:
    with pytest.raises(ValueError):
        as_fps(bad)


@settings(max_examples=60, deadline=None)
@given(num_samples=st.integers(0, 50_000), fps=fps_values)
def test_frame_count_is_number_of_frame_starts_inside_the_audio(num_samples: int, fps: Fraction) -> None:
    count = num_video_frames(num_samples, fps)
    if count:
        assert frame_start_sample(count - 1, fps) < num_samples
    assert frame_start_sample(count, fps) >= num_samples


@pytest.mark.parametrize("fps", [25, 29.97, 30, 60])
def test_no_drift_over_an_hour(fps) -> None:
    exact_fps = as_fps(fps)
    hour = 3600 * SR
    count = num_video_frames(hour, fps)
    assert count == math.ceil(3600 * exact_fps)
    starts = frame_start_samples(count, fps)
    checked = list(range(0, count, 997)) + list(range(count - 50, count))
    for frame in checked:
        assert int(starts[frame]) == math.floor(Fraction(frame * SR) / exact_fps)
    assert int(starts[-1]) < hour <= frame_start_sample(count, fps)
    assert torch.all(starts[1:] > starts[:-1])


# -------------------------------------------------------------------- window properties


@settings(max_examples=80, deadline=None)
@given(preset=presets, fps=fps_values, num_samples=st.integers(1, 10 * SR))
def test_windows_are_monotone_and_inside_the_features(preset, fps, num_samples: int) -> None:
    num_features = preset.num_feature_frames(num_samples)
    num_frames = num_video_frames(num_samples, fps)
    if num_features == 0:
        return
    starts = preset.window_starts(num_features, num_frames, fps)
    indices = preset.window_indices(num_features, num_frames, fps)
    assert starts.dtype == indices.dtype == torch.int64
    assert indices.shape == (num_frames, preset.window)
    assert torch.all(starts[1:] >= starts[:-1])
    assert int(indices.min()) >= 0 and int(indices.max()) < num_features
    assert torch.all(indices[1:, -1] >= indices[:-1, -1])


@settings(max_examples=60, deadline=None)
@given(fps=fps_values, num_samples=st.integers(16 * 200, 20 * SR))
def test_wav2lip_windows_cover_the_audio(fps: Fraction, num_samples: int) -> None:
    num_features = WAV2LIP_MEL.num_feature_frames(num_samples)
    indices = WAV2LIP_MEL.window_indices(num_features, num_video_frames(num_samples, fps), fps)
    assert int(indices[0, 0]) == 0
    assert int(indices[-1, -1]) == num_features - 1
    assert torch.equal(torch.unique(indices), torch.arange(num_features))
    assert torch.all(indices[:, 1:] - indices[:, :-1] == 1)  # "shift" windows are never padded


def wav2lip_inference_loop(num_mel_frames: int, fps: float) -> list[int]:
    """Rudrabha/Wav2Lip inference.py's mel chunking, returning each chunk's first column."""
    mel_step_size = 16
    mel_idx_multiplier = 80.0 / fps
    chunk_starts = []
    i = 0
    while True:
        start_idx = int(i * mel_idx_multiplier)
        if start_idx + mel_step_size > num_mel_frames:
            chunk_starts.append(num_mel_frames - mel_step_size)
            break
        chunk_starts.append(start_idx)
        i += 1
    return chunk_starts


@settings(max_examples=80, deadline=None)
@given(num_samples=st.integers(16 * 200, 60 * SR))
def test_wav2lip_rule_reproduces_the_original_loop_at_25fps(num_samples: int) -> None:
    num_mel = 1 + num_samples // 200
    original = wav2lip_inference_loop(num_mel, 25.0)
    ours = WAV2LIP_MEL.window_starts(num_mel, len(original), 25).tolist()
    assert ours == original
    # The offline count keeps every frame that starts inside the audio; the
    # frames after the loop's last one reuse its (clamped) last window.
    offline = WAV2LIP_MEL.window_starts(num_mel, num_video_frames(num_samples, 25), 25).tolist()
    assert len(offline) >= len(original)
    assert offline[: len(original)] == original
    assert set(offline[len(original) - 1 :]) == {num_mel - 16}


def test_deepspeech_windows_are_dinet_edge_padding() -> None:
    num_frames = 37
    logits = torch.randn(29, num_frames)  # 25 Hz DeepSpeech features, (C, T)
    padded = np.pad(logits.numpy().T, ((2, 2), (0, 0)), mode="edge")
    expected = np.stack([padded[t : t + 5].T for t in range(num_frames)])  # (T, 29, 5)
    indices = DEEPSPEECH.window_indices(num_frames, num_frames, 25)
    np.testing.assert_array_equal(gather_windows(logits, indices).numpy(), expected)


@pytest.mark.parametrize("num_samples", [1, 100, 400, 401, 559, 560, 1000, 16000, 16001, 123457])
def test_feature_counts_match_the_original_front_ends(num_samples: int) -> None:
    assert WAV2LIP_MEL.num_feature_frames(num_samples) == 1 + num_samples // 200
    # HuBERT/Wav2Vec2 conv stack, as transformers' _get_feat_extract_output_lengths.
    length = num_samples
    for kernel, stride in zip([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]):
        length = max(0, (length - kernel) // stride + 1)
    assert HUBERT.num_feature_frames(num_samples) == WAV2VEC2.num_feature_frames(num_samples) == length
    # DINet: python_speech_features frames, then features[::2] and logits[::2].
    mfcc_frames = 1 if num_samples <= 400 else 1 + math.ceil((num_samples - 400) / 160)
    assert DEEPSPEECH.num_feature_frames(num_samples) == len(range(0, len(range(0, mfcc_frames, 2)), 2))
    # Kaldi fbank with snip_edges=False.
    assert FBANK.num_feature_frames(num_samples) == (num_samples + 160) // 320


def test_feature_rates_and_lookahead() -> None:
    assert HUBERT.feature_rate == 50 and WAV2LIP_MEL.feature_rate == 80 and DEEPSPEECH.feature_rate == 25
    # 2 frames (320 + 400 samples), then the rest of a 10-frame step and 80 ms: 4880 samples
    assert HUBERT.lookahead_ms(25) == pytest.approx(305.0)
    assert WAV2LIP_MEL.lookahead_ms(25) == pytest.approx(212.5)  # column 15 ends 3400 samples in


# ---------------------------------------------------------------------------- gather


@pytest.mark.parametrize("preset", list(ALIGNMENTS.values()), ids=list(ALIGNMENTS))
def test_gather_windows_equals_per_frame_slicing(preset) -> None:
    num_samples = 3 * SR + 123
    num_features = preset.num_feature_frames(num_samples)
    num_frames = num_video_frames(num_samples, Fraction(30000, 1001))
    indices = preset.window_indices(num_features, num_frames, "30000/1001")
    features = torch.randn(2, 7, num_features)

    batched = gather_windows(features, indices)
    assert batched.shape == (2, num_frames, 7, preset.window) and batched.is_contiguous()
    for frame in range(num_frames):
        start = int(preset.window_starts(num_features, num_frames, "30000/1001")[frame])
        positions = [min(max(start + step, 0), num_features - 1) for step in range(preset.window)]
        expected = features[:, :, positions]
        assert torch.equal(batched[:, frame], expected)
        assert torch.equal(gather_windows(features[1], indices)[frame], expected[1])

    buffer = torch.empty(num_frames, 7, preset.window)
    result = gather_windows(features[0], indices, out=buffer)
    assert result.data_ptr() == buffer.data_ptr() and torch.equal(buffer, batched[0])


# ------------------------------------------------------------------------- streaming


@settings(max_examples=150, deadline=None)
@given(
    preset=presets,
    fps=fps_values,
    total=st.integers(1, 8 * SR),
    fractions=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_frames_ready_is_monotone_bounded_and_consistent(preset, fps, total: int, fractions) -> None:
    earlier, later = sorted(int(f * total) for f in fractions)
    offline = num_video_frames(total, fps)
    for known_total in (None, total):
        ready_earlier = preset.frames_ready(earlier, fps, known_total)
        ready_later = preset.frames_ready(later, fps, known_total)
        assert 0 <= ready_earlier <= ready_later <= offline
    assert preset.frames_ready(later, fps) <= preset.frames_ready(later, fps, total)
    has_features = preset.num_feature_frames(total) > 0
    assert preset.frames_ready(total, fps, total) == (offline if has_features else 0)

    # Every ready frame's offline window only reads features already final.
    ready = preset.frames_ready(later, fps, total)
    num_features = preset.num_feature_frames(total)
    if ready and num_features:
        windows = preset.window_indices(num_features, offline, fps)[:ready]
        assert int(windows.max()) < preset.computable_feature_frames(later, total)


@pytest.mark.parametrize("fps", [25, 29.97, 60])
@pytest.mark.parametrize("preset", [WAV2LIP_MEL, HUBERT, FBANK], ids=["mel", "hubert", "fbank"])
def test_a_frame_is_ready_once_its_lookahead_has_arrived(preset, fps) -> None:
    lookahead_samples = math.ceil(preset.lookahead_ms(fps) * SR / 1000)
    for frame in range(0, 200, 7):
        start = frame_start_sample(frame, fps)
        assert preset.frames_ready(start + lookahead_samples, fps) >= frame + 1
        if frame == 0 and preset.context is None:  # a sliding context's worst frame is not always frame 0
            assert preset.frames_ready(lookahead_samples - 1, fps) == 0


def test_deepspeech_waits_for_the_whole_utterance() -> None:
    assert DEEPSPEECH.frames_ready(10 * SR, 25) == 0
    assert DEEPSPEECH.frames_ready(10 * SR, 25, total_samples=12 * SR) == 0
    assert DEEPSPEECH.frames_ready(12 * SR, 25, total_samples=12 * SR) == 300


def test_streamed_mel_columns_equal_offline_columns() -> None:
    """The receptive field behind frames_ready is real: final columns do not change later."""
    generator = torch.Generator().manual_seed(0)
    wav = torch.randn(2 * SR + 77, generator=generator) * 0.1
    offline = wav2lip_mel(wav)
    for available in [401, 1000, 4321, SR, SR + 199]:
        final_columns = WAV2LIP_MEL.computable_feature_frames(available)
        assert final_columns > 0
        streamed = wav2lip_mel(wav[:available])
        torch.testing.assert_close(streamed[:, :final_columns], offline[:, :final_columns], atol=1e-5, rtol=0)
        ready = WAV2LIP_MEL.frames_ready(available, 25)
        if ready:
            windows = WAV2LIP_MEL.window_indices(offline.shape[-1], ready, 25)
            assert int(windows.max()) < final_columns
            torch.testing.assert_close(
                gather_windows(streamed, windows), gather_windows(offline, windows), atol=1e-5, rtol=0
            )


# ------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_cuda
def test_windows_and_gather_on_cuda() -> None:
    device = torch.device("cuda")
    features = torch.randn(80, 401, device=device)
    indices = WAV2LIP_MEL.window_indices(401, 125, 25, device=device)
    assert indices.is_cuda
    windows = gather_windows(features, indices)
    assert windows.is_cuda
    cpu_windows = gather_windows(features.cpu(), WAV2LIP_MEL.window_indices(401, 125, 25))
    assert torch.equal(windows.cpu(), cpu_windows)
