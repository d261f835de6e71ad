"""The session API: frames with integer presentation times and exactly their audio, utterance after
utterance, equal to offline runs; interruption; frames that wait for their audio; digital silence.

The generator is perf/soak.py's stand-in (Wav2Lip's real front end and windows, a random linear map
for the face): Wav2Lip with random weights draws nearly the same mouth whatever it hears, so frames
compared with it could not tell one window from another; the stand-in's frames follow the audio.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "perf"))
from soak import StandInRenderer  # noqa: E402  (perf/soak.py)

from talkrt.runtime.align import frame_start_sample, num_video_frames
from talkrt.runtime.avatar import synthetic_avatar
from talkrt.runtime.pipeline import Pipeline, PipelineOptions
from talkrt.runtime.session import Session
from talkrt.runtime.synthetic import synthetic_speech

RATE = 22050


def stand_in(fps=25, batch_size: int = 4, device: str = "cpu") -> Pipeline:
    # One avatar frame: every utterance shows the same face whatever frame it starts on.
    return Pipeline(synthetic_avatar(num_frames=1), StandInRenderer(device=device), PipelineOptions(fps=fps, batch_size=batch_size))


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return stand_in()


def same_frames(images: torch.Tensor, offline: torch.Tensor) -> None:
    """Equal to offline within a level (the features are computed piece by piece), and the frames
    differ from one another (so equality says something)."""
    assert images.shape == offline.shape
    assert (images.int() - offline.int()).abs().max() <= 1
    assert (offline.int() - offline[-1:].int()).abs().amax(dim=(1, 2, 3)).float().median() > 20


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
    same_frames(images, torch.cat([pipeline.frames(first, RATE), pipeline.frames(second, RATE)]))

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
    same_frames(images, pipeline.frames(answer, RATE))
    np.testing.assert_array_equal(audio[: len(answer)], answer)


def test_frames_wait_for_their_own_audio() -> None:
    """At 4 fps a frame (250 ms) lasts longer than the mel lookahead (212 ms): it is ready before its
    audio has all arrived, and waits (copied) until it has."""
    pipeline = stand_in(fps=4, batch_size=2)
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
    same_frames(images, pipeline.frames(audio, RATE))
    check_clock(frames)
    np.testing.assert_array_equal(joined[: len(audio)], audio)


def test_digital_silence_shows_the_avatar_at_rest(pipeline) -> None:
    """Frames whose window reads only exact zeros are the avatar's own frame (no generated lip
    quiver); frames that hear speech are rendered as offline; the switch turns it off."""
    silence = np.zeros(RATE // 2, np.float32)
    audio = np.concatenate([silence, speech(0.6, seed=6), silence])
    rest = torch.as_tensor(pipeline.avatar.frames[0])  # a one-frame avatar
    offline = pipeline.frames(audio, RATE)

    session = Session(pipeline, RATE)
    images, _, _, _ = collect(push_all(session, audio, chunk=RATE // 25) + session.flush())
    resting = [k for k in range(len(images)) if torch.equal(images[k], rest)]
    count = num_video_frames(len(audio), 25, RATE)
    assert len(images) == count
    # The first and last frames hear nothing; those around the speech do.
    assert 0 in resting and count - 1 in resting and len(resting) >= 10
    speaking = [k for k in range(count) if k not in resting]
    # The speech spans frames 12.5 .. 27.5; a frame hears up to 212 ms (5.3 frames) ahead, and the
    # check looks one window (5 frames) further back than the window itself.
    assert set(range(13, 28)) <= set(speaking) and min(speaking) >= 12 - 6 and max(speaking) <= 28 + 6
    same_frames(images[speaking], offline[speaking])
    assert not any(torch.equal(offline[k], rest) for k in resting)  # offline, the generator drew them

    quiet = Session(pipeline, RATE, idle_on_silence=False)
    images, _, _, _ = collect(push_all(quiet, audio, chunk=RATE // 25) + quiet.flush())
    same_frames(images, offline)

    silent = Session(pipeline, RATE)
    images, _, _, _ = collect(push_all(silent, np.zeros(RATE, np.float32), chunk=RATE // 50) + silent.flush())
    assert len(images) == 25 and all(torch.equal(image, rest) for image in images)


@pytest.mark.parametrize("chunk_ms", [7, 40, 333, "random"])
def test_stream_chunks_equals_offline_at_any_chunking(pipeline, chunk_ms) -> None:
    """`Pipeline.stream_chunks` (an Utterance under the hood) at 22.05 kHz, chunk sizes from a few
    samples to a third of a second, or drawn at random."""
    audio = speech(1.1, seed=7)
    if chunk_ms == "random":
        cuts = np.cumsum(np.random.default_rng(0).integers(1, RATE // 5, size=len(audio)))
        cuts = [0, *cuts[cuts < len(audio)].tolist(), len(audio)]
    else:
        step = RATE * chunk_ms // 1000
        cuts = [*range(0, len(audio), step), len(audio)]
    chunks = [audio[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    streamed = torch.cat([batch.frames.clone() for batch in pipeline.stream_chunks(chunks, RATE)])
    same_frames(streamed, pipeline.frames(audio, RATE))


def test_text_to_video_streams_through_a_session(pipeline) -> None:
    """VITS's streaming decode feeds a session chunk by chunk, as tensors (no host round trip on the
    way in): the first frames come out while the speech is still being synthesized, and the whole
    equals a session fed the one-shot waveform."""
    from talkrt.models.vits.model import build_random_vits
    from talkrt.models.vits.synth import VitsSynthesizer

    synthesizer = VitsSynthesizer.from_model(build_random_vits("tiny", seed=0))
    rate = synthesizer.sample_rate
    tokens = [5, 17, 3, 22, 9, 31, 2, 14, 27, 6, 11, 35, 8, 19, 4, 25, 13, 30, 7, 16, 1, 21, 12, 33, 10, 24, 18, 29, 15, 36] * 3

    streamed, chunks, first_frame_at = [], 0, None
    session = Session(pipeline, rate)
    for chunk in synthesizer.stream(tokens, seed=3, first_chunk_frames=8, chunk_frames=32):
        assert isinstance(chunk, torch.Tensor)
        chunks += 1
        out = session.push(chunk)
        if out and first_frame_at is None:
            first_frame_at = chunks
        streamed += out
    streamed += session.flush()
    assert first_frame_at is not None and first_frame_at < chunks, (first_frame_at, chunks)

    whole = synthesizer.synthesize(tokens, seed=3)
    one_shot = Session(pipeline, rate)
    reference = push_all(one_shot, whole.numpy(), chunk=rate // 25) + one_shot.flush()
    images, pts, audio, _ = collect(streamed)
    expected_images, expected_pts, expected_audio, _ = collect(reference)
    assert pts.tolist() == expected_pts.tolist()
    np.testing.assert_allclose(audio, expected_audio, atol=1e-4)  # the stream stitches to the one-shot decode within 1e-4
    same_frames(images, expected_images)


def test_a_steps_avatar_frames_walk_back_and_forth_as_offline() -> None:
    """Each step slices its avatar frames from one cached period, or computes them when it runs past it."""
    pipeline = Pipeline(synthetic_avatar(num_frames=5), StandInRenderer(), PipelineOptions(batch_size=4))
    utterance = pipeline.utterance(RATE)
    for start in (0, 3, 7, 8, 101):
        for count in (1, 8, 70):
            assert torch.equal(utterance._avatar_indices(start, count), pipeline.avatar.frame_indices(start, count, pipeline.device))
