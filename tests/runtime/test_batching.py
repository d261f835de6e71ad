"""Sessions batched on one pipeline: each gets exactly what it gets alone, the batches fill up, and one
session's bad chunk does not stop the others. The generator is the stand-in (frames follow the audio)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_session import RATE, push_all, same_frames, speech, stand_in

from talkrt.errors import TalkrtError
from talkrt.runtime.audio import resample
from talkrt.runtime.batching import SessionBatcher
from talkrt.runtime.session import Session
from talkrt.runtime.synthetic import synthetic_speech


def joined(frames: list) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    return torch.cat([f.images for f in frames]), np.concatenate([f.pts for f in frames]), np.concatenate([f.audio for f in frames])


def alone(audio: np.ndarray, chunk: int, device: str = "cpu", rate: int = RATE) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    session = Session(stand_in(device=device), rate)
    return joined(push_all(session, audio, chunk) + session.flush())


def in_turns(batcher: SessionBatcher, sessions: list[Session], clips: list[tuple[np.ndarray, int]]) -> list[list]:
    """Each session's frames, its clip pushed a chunk per turn, then flushed, all in the batcher's turns."""
    frames: list[list] = [[] for _ in clips]
    offsets = [0] * len(clips)
    flushed = [False] * len(clips)
    while not all(flushed):
        work, owners = [], []
        for index, (session, (audio, chunk)) in enumerate(zip(sessions, clips)):
            if flushed[index]:
                continue
            if offsets[index] < len(audio):
                work.append((session, audio[offsets[index] : offsets[index] + chunk]))
                offsets[index] += chunk
            else:
                work.append((session, None))
                flushed[index] = True
            owners.append(index)
        for index, result in zip(owners, batcher.step(work)):
            frames[index] += result
    return frames


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_batched_sessions_equal_sessions_alone(device) -> None:
    """On a GPU the sessions' work runs on the pipeline's stream and the frames are read on the
    caller's: the frames match only if the streams wait for each other."""
    clips = [(speech(1.2, seed=11), 882), (speech(0.9, seed=12), 441), (speech(1.5, seed=13), 3001)]  # 40, 20, 136 ms chunks
    pipeline = stand_in(device=device)
    batcher = SessionBatcher(pipeline)
    frames = in_turns(batcher, [Session(pipeline, RATE) for _ in clips], clips)
    for (audio, chunk), got in zip(clips, frames):
        images, pts, sound = joined(got)
        expected_images, expected_pts, expected_sound = alone(audio, chunk)  # on the CPU
        same_frames(images.cpu(), expected_images)  # a row's values do not depend on the batch it shares
        np.testing.assert_array_equal(pts, expected_pts)
        np.testing.assert_array_equal(sound, expected_sound)
    assert batcher.rows == sum(len(joined(got)[0]) for got in frames)
    assert batcher.fill > 0.5  # three sessions share batches of 4 (one session of 40 ms chunks fills 1 in 4)


def test_sessions_of_other_rates_and_chunk_sizes_share_turns(monkeypatch) -> None:
    """Sessions at four rates, in chunks of four sizes: each gets the frames it gets alone, and the
    mel columns of those whose segments have one length in a turn are computed in one call."""
    rates, chunk_ms = (16000, 22050, 44100, 48000, 16000, 16000), (40, 20, 40, 100, 40, 40)
    clips = [(resample(torch.from_numpy(synthetic_speech(1.0, seed=20 + index)), 16000, rate).numpy(), rate * ms // 1000)
             for index, (rate, ms) in enumerate(zip(rates, chunk_ms))]
    expected = [alone(audio, chunk, rate=rate) for (audio, chunk), rate in zip(clips, rates)]
    stacks = []
    stft = torch.stft
    monkeypatch.setattr(torch, "stft", lambda padded, *args, **kwargs: stacks.append(padded.shape) or stft(padded, *args, **kwargs))
    pipeline = stand_in()
    frames = in_turns(SessionBatcher(pipeline), [Session(pipeline, rate) for rate in rates], clips)
    for got, (expected_images, expected_pts, expected_sound) in zip(frames, expected):
        images, pts, sound = joined(got)
        same_frames(images, expected_images)
        np.testing.assert_array_equal(pts, expected_pts)
        np.testing.assert_array_equal(sound, expected_sound)
    assert max((shape[0] for shape in stacks if len(shape) == 2), default=1) >= 3  # the three 16 kHz sessions in 40 ms chunks, at least


def test_a_bad_chunk_fails_only_its_session() -> None:
    pipeline = stand_in()
    batcher = SessionBatcher(pipeline)
    good, bad = Session(pipeline, RATE), Session(pipeline, RATE)
    audio, chunk = speech(0.8, seed=14), 882
    got = []
    for turn, start in enumerate(range(0, len(audio), chunk)):
        piece = audio[start : start + chunk]
        work = [(good, piece)]
        if turn == 3:
            work.append((bad, np.full(chunk, np.nan, np.float32)))
        results = batcher.step(work)
        got += results[0]
        if turn == 3:
            assert isinstance(results[1], TalkrtError) and "NaN" in str(results[1])
    got += batcher.step([(good, None)])[0]
    images, pts, sound = joined(got)
    expected_images, expected_pts, _ = alone(audio, chunk)
    same_frames(images, expected_images)
    np.testing.assert_array_equal(pts, expected_pts)
    with pytest.raises(ValueError, match="one chunk per step"):
        batcher.step([(good, audio[:chunk]), (good, audio[:chunk])])
