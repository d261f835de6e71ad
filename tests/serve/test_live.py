"""A live session's outbound queue alone: past its bound the oldest frames are dropped and
counted, audio messages are kept, and nothing is queued after the session has left."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from types import SimpleNamespace

import numpy as np

from talkrt.runtime.session import Frames
from talkrt.serve.live import Limits, LiveSession
from talkrt.serve.metrics import Metrics
from talkrt.serve.protocol import Start
from talkrt.serve.worker import Output


class StandInWorker:
    voice = None

    def __init__(self) -> None:
        self.keyframes_requested = 0

    def add(self, sample_rate, deliver, idle=False, frames="jpeg"):
        return SimpleNamespace(session=SimpleNamespace(clock=0), pending_samples=0)

    def request_keyframe(self, slot) -> None:
        self.keyframes_requested += 1


def frames(first: int, count: int) -> Frames:
    return Frames(first, np.zeros((count, 2, 2, 3), np.uint8), np.arange(first, first + count, dtype=np.int64) * 640, np.zeros(count * 640, np.float32))


def test_oldest_frames_are_dropped_past_the_bound() -> None:
    metrics = Metrics(lambda: 1.0, device=None)

    async def run():
        session = LiveSession(None, StandInWorker(), metrics, Start(16000, False), Limits(640, 6400, 4, 1.0), Fraction(25))
        session._take(Output([frames(0, 3)], [b"a", b"b", b"c"], [b"pcm0"], 0.0))
        session._take(Output([frames(3, 3)], [b"d", b"e", b"f"], [b"pcm3"], 0.0, ends=True))
        queued = list(session.outbox)
        session.closed = True
        session._take(Output([frames(6, 1)], [b"g"], None, 0.0))
        return queued, list(session.outbox)

    queued, after_close = asyncio.run(run())
    assert [item[1][2] for item in queued if item[0] == "frame"] == [b"c", b"d", b"e", b"f"]
    assert [item[1] for item in queued if item[0] == "audio"] == [(0, b"pcm0"), (1920, b"pcm3")]
    assert queued[-1] == ("end", 0)
    assert after_close == queued
    assert metrics.registry.get_sample_value("talkrt_frames_dropped_total") == 2


class StalledSocket:
    """A client that takes nothing: every send waits forever."""

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()

    send_bytes = send_text


def test_a_stalled_client_is_closed() -> None:
    metrics = Metrics(lambda: 1.0, device=None)

    async def run():
        session = LiveSession(StalledSocket(), StandInWorker(), metrics, Start(16000, False), Limits(640, 6400, 4, 0.05), Fraction(25))
        session._take(Output([frames(0, 1)], [b"a"], None, 0.0))
        await asyncio.wait_for(session._send_loop(), 30)
        return session.ending

    ending = asyncio.run(run())
    assert ending.code == 1008 and "took no frame" in ending.reason


def test_h264_frames_that_refer_to_a_dropped_one_go_too() -> None:
    """An H.264 packet needs the ones since its keyframe: past the bound, the frames after the
    dropped one are skipped up to the next keyframe (asked for), so whatever is sent decodes;
    after an interruption the same, without counting them as dropped."""
    metrics = Metrics(lambda: 1.0, device=None)
    worker = StandInWorker()

    def queued(session) -> list[bytes]:
        return [item[1][2] for item in session.outbox if item[0] == "frame"]

    async def run():
        session = LiveSession(None, worker, metrics, Start(16000, False, "h264"), Limits(640, 6400, 4, 1.0), Fraction(25))
        session._take(Output([frames(0, 3)], [b"a", b"b", b"c"], None, 0.0, keyframes=[True, False, False]))
        session._take(Output([frames(3, 3)], [b"d", b"e", b"f"], None, 0.0, keyframes=[False, False, False]))
        overflowed = queued(session), worker.keyframes_requested
        session._take(Output([frames(6, 2)], [b"g", b"h"], None, 0.0, keyframes=[False, False]))
        session._take(Output([frames(8, 2)], [b"i", b"j"], None, 0.0, keyframes=[True, False]))
        resumed = queued(session), session.outbox[0][1][4]
        session._drop_unsent()
        session._take(Output([frames(10, 1)], [b"k"], None, 0.0, keyframes=[False]))
        session._take(Output([frames(11, 2)], [b"l", b"m"], None, 0.0, keyframes=[True, False]))
        return overflowed, resumed, queued(session), session.queued_frames

    overflowed, resumed, interrupted, count = asyncio.run(run())
    assert overflowed == ([], 1)  # "a" dropped, and "b" to "f" depend on it
    assert resumed == ([b"i", b"j"], True)
    assert interrupted == [b"l", b"m"] and count == 2 and worker.keyframes_requested == 2
    assert metrics.registry.get_sample_value("talkrt_frames_dropped_total") == 8  # a..h; not k (interrupted)
