"""Two minutes of a live session (perf/soak.py with its stand-in generator): the work and the state of
each step stay bounded, every frame is shown at the time of its own audio, and no frame is lost."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf"))
from soak import make_pipeline, soak  # noqa: E402

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
    bounds = {"resampler_samples": 0, "feature_samples": 800, "feature_columns": 16 + 8, "audio_samples": 16000 // 2, "waiting_frames": 0}
    for key, bound in bounds.items():
        largest = max(state[key] for state in record.state)
        assert largest <= bound, (key, largest)
    tenth = len(record.state) // 10
    for key in bounds:
        assert max(s[key] for s in record.state[-tenth:]) <= max(s[key] for s in record.state[:tenth]), key
