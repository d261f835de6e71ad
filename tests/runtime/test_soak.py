"""Two minutes of a live session (perf/soak.py with its stand-in generator): the work and the state of
each step stay bounded, every frame is shown at the time of its own audio, and no frame is lost."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf"))
from soak import make_pipeline, soak  # noqa: E402  (perf/soak.py, the soak itself)

from talkrt.models.wav2lip.alignment import WAV2LIP_MEL  # noqa: E402
from talkrt.runtime.align import num_video_frames  # noqa: E402
from talkrt.runtime.synthetic import synthetic_speech  # noqa: E402


@pytest.fixture(scope="module")
def record():
    return soak(make_pipeline("stand-in"), seconds=120, chunk_ms=40, utterance_s=30)


def test_no_frame_lost_and_no_drift(record) -> None:
    per_utterance = num_video_frames(len(synthetic_speech(30, seed=1)), 25)
    assert record.utterances == 4 and record.frames == 4 * per_utterance
    assert record.max_offset == 0
    # Every pushed sample came back with the frames, plus only the silence up to each utterance's last frame end.
    assert 0 <= record.audio_samples - record.pushed_samples < record.utterances * 640


def test_state_is_bounded_and_flat(record) -> None:
    """Resampler history, feature-stream history, feature columns, waiting audio: a few frames' worth
    at every step, and no more at the end of the session than at its start."""
    chunk, mel = 640, WAV2LIP_MEL
    bounds = {
        "resampler_samples": 0,  # 16 kHz in: nothing to keep
        "feature_samples": mel.receptive_field,  # less than one STFT frame of history
        "feature_columns": mel.window + chunk // mel.hop,  # one window, and the columns of a chunk
        "audio_samples": round(mel.lookahead_ms(25) * 16) + 2 * chunk,  # the lookahead, a chunk and a frame
        "waiting_frames": 0,  # at 25 fps every frame's audio is in before its window is complete
    }
    tenth = record.pushes // 10
    for key, bound in bounds.items():
        assert 0 <= record.largest(key) <= bound, (key, record.largest(key))
        assert record.largest(key, slice(-tenth, None)) <= record.largest(key, slice(0, tenth)), key
