"""The session API: frames with integer presentation times and exactly their audio, utterance after
utterance, equal to offline runs; interruption; frames that wait for their audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkrt.runtime.align import frame_start_sample, num_video_frames
from talkrt.runtime.avatar import synthetic_avatar
from talkrt.runtime.pipeline import PipelineOptions, pipeline_from_files
from talkrt.runtime.session import Session
from talkrt.runtime.synthetic import synthetic_speech

RATE = 22050


@pytest.fixture(scope="module")
def pipeline(wav2lip_onnx):
    # One avatar frame: every utterance shows the same face whatever frame it starts on.
    return pipeline_from_files(synthetic_avatar(num_frames=1), "wav2lip", "ort", wav2lip_onnx, "cpu", PipelineOptions(batch_size=4))


def speech(seconds: float, seed: int) -> np.ndarray:
    from talkrt.runtime.audio import resample

    return resample(torch.from_numpy(synthetic_speech(seconds, seed=seed)), 16000, RATE).numpy()


def push_all(session: Session, audio: np.ndarray, chunk: int) -> list:
    out = []
    for start in range(0, len(audio), chunk):
        out += session.push(audio[start : start + chunk])
    return out


def collect(frames: list) -> tuple[torch.Tensor, np.ndarray, np.ndarray, list[int]]:
    images = torch.cat([f.images.clone() for f in frames])
    return images, np.concatenate([f.pts for f in frames]), np.concatenate([f.audio for f in frames]), [f.first for f in frames]


def check_clock(frames: list, start: int = 0) -> int:
    """A/V offset 0: each batch's audio starts at its first frame's time and runs to the next batch's."""
    clock = start
    for batch in frames:
        assert batch.pts[0] == clock
        assert batch.pts.dtype == np.int64 and np.all(np.diff(batch.pts) > 0)
        clock += len(batch.audio)
    return clock


def test_utterances_equal_offline_on_one_clock(pipeline) -> None:
    first, second = speech(0.9, seed=1), speech(0.5, seed=2)
    session = Session(pipeline, RATE)
    frames = push_all(session, first, chunk=RATE * 40 // 1000) + session.flush()
    frames += push_all(session, second, chunk=RATE * 20 // 1000) + session.flush()

    images, pts, audio, firsts = collect(frames)
    n1, n2 = num_video_frames(len(first), 25, RATE), num_video_frames(len(second), 25, RATE)
    assert len(images) == n1 + n2 and firsts == sorted(firsts) and firsts[0] == 0
    offline = torch.cat([pipeline.frames(first, RATE), pipeline.frames(second, RATE)])
    difference = (images.int() - offline.int()).abs()
    assert difference.max() <= 1 and (difference == 0).float().mean() > 0.999

    # The second utterance starts on the frame boundary after the first one's last frame.
    boundary = frame_start_sample(n1, 25, RATE)
    assert pts[n1] == boundary == session.utterance_start - frame_start_sample(n2, 25, RATE)
    expected = [frame_start_sample(k, 25, RATE) for k in range(n1)] + [boundary + frame_start_sample(k, 25, RATE) for k in range(n2)]
    assert pts.tolist() == expected
    # Exactly the input audio, each utterance padded with silence to its last frame's end.
    pad1, pad2 = boundary - len(first), frame_start_sample(n2, 25, RATE) - len(second)
    assert 0 <= pad1 < RATE / 25 and 0 <= pad2 < RATE / 25
    np.testing.assert_array_equal(audio, np.concatenate([first, np.zeros(pad1, np.float32), second, np.zeros(pad2, np.float32)]))
    assert check_clock(frames) == session.clock == len(audio)


def test_interruption_drops_the_utterance_and_the_clock_goes_on(pipeline) -> None:
    session = Session(pipeline, RATE)
    shown = push_all(session, speech(0.8, seed=3), chunk=RATE // 25)
    assert shown, "frames come out before the end of the utterance"
    session.reset()
    clock = session.clock
    assert clock == sum(len(f.audio) for f in shown)
    answer = speech(0.4, seed=4)
    frames = push_all(session, answer, chunk=RATE // 50) + session.flush()
    images, pts, audio, _ = collect(frames)
    assert pts[0] == clock and frames[0].first == sum(len(f.pts) for f in shown)
    difference = (images.int() - pipeline.frames(answer, RATE).int()).abs()
    assert difference.max() <= 1 and (difference == 0).float().mean() > 0.999
    np.testing.assert_array_equal(audio[: len(answer)], answer)


def test_frames_wait_for_their_own_audio(wav2lip_onnx) -> None:
    """At 4 fps a frame (250 ms) lasts longer than the mel lookahead (212 ms): it is ready before its
    audio has all arrived, and waits (copied) until it has."""
    pipeline = pipeline_from_files(synthetic_avatar(num_frames=1), "wav2lip", "ort", wav2lip_onnx, "cpu", PipelineOptions(fps=4, batch_size=2))
    audio = speech(1.6, seed=5)
    session = Session(pipeline, RATE)
    received, frames, waited = 0, [], False
    for start in range(0, len(audio), RATE // 100):
        chunk = audio[start : start + RATE // 100]
        received += len(chunk)
        for batch in session.push(chunk):
            assert batch.pts[0] + len(batch.audio) <= received  # its audio had all arrived
            frames.append(batch)
        waited |= bool(session._pending)
    assert waited, "no frame was ever ready before its audio: the case under test did not happen"
    frames += session.flush()
    images, pts, joined, _ = collect(frames)
    offline = pipeline.frames(audio, RATE)
    assert (images.int() - offline.int()).abs().max() <= 1
    check_clock(frames)
    np.testing.assert_array_equal(joined[: len(audio)], audio)
