"""One thread owns the pipeline: every device call (sessions' pushes, whole renders) runs on it,
in turns.

A turn takes at most one step from each live session, in order (round robin: a session with
a backlog cannot starve the others), hands the steps to a ``stepper`` in one call, then runs
at most one queued job (a /v1/render). The stepper renders the turn:
`talkrt.runtime.batching.SessionBatcher` (the server's default) in batches shared by the
sessions, `OneAtATime` each session's push alone; both have ``step(work)`` and ``fill``.

Async request handling never waits on the device: it queues work here and gets results back
through the session's ``deliver`` callback (called on this thread; it must hand over to the
event loop itself) or a future.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from talkrt.errors import TalkrtError
from talkrt.runtime.session import Frames, Session

_log = logging.getLogger("talkrt.serve")  # the traceback of a server error goes to the server's log


class Stepper(Protocol):
    """Runs one turn's work: (session, chunk or None for a flush) -> each session's frames, or the
    error that refused its chunk."""

    fill: float

    def step(self, work: Sequence[tuple[Session, Any]]) -> list[list[Frames] | TalkrtError]: ...


class OneAtATime:
    """Each session's push (or flush) on its own, in turn; ``fill``: the share of the pipeline's
    batch rows that held a frame."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.rows, self.slots = batch_size, 0, 0

    @property
    def fill(self) -> float:
        return self.rows / self.slots if self.slots else 1.0

    def step(self, work: Sequence[tuple[Session, Any]]) -> list[list[Frames] | TalkrtError]:
        results: list[list[Frames] | TalkrtError] = []
        for session, chunk in work:
            try:
                frames = session.flush() if chunk is None else session.push(chunk)
            except TalkrtError as error:
                results.append(error)
                continue
            for batch in frames:  # a push renders its frames in batches of batch_size
                self.rows += len(batch.images)
                self.slots += -(-len(batch.images) // self.batch_size) * self.batch_size
            results.append(frames)
        return results


class LoadMeter:
    """The share of the last ``window`` seconds the device thread spent working: near 1, frames
    already come late, so admission refuses new sessions past a threshold."""

    def __init__(self, window: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self._spans: deque[tuple[float, float]] = deque()  # (start, end) of recent work

    def add(self, start: float, end: float) -> None:
        self._spans.append((start, end))
        while self._spans and self._spans[0][1] < end - self.window:
            self._spans.popleft()

    def ratio(self) -> float:
        now = self.clock()
        begin = now - self.window
        busy = sum(max(0.0, min(end, now) - max(start, begin)) for start, end in list(self._spans))
        return min(1.0, busy / self.window)


@dataclass
class Output:
    """What one step of a session produced, ready to send: each frame's picture (JPEG, raw RGB or
    an H.264 packet), and for spoken text the PCM16 audio those frames show. ``pushed_at``: when
    the input that completed them reached the server (time.monotonic)."""

    frames: list[Frames]
    pictures: list[bytes]
    pcm: list[bytes] | None
    pushed_at: float
    ends: bool = False  # the step ended an utterance (a flush)
    keyframes: list[bool] | None = None  # H.264: whether each packet is a keyframe
    error: str | None = None  # the session must close: the client's input was refused ...
    fatal: bool = False  # ... or the server failed


@dataclass
class Speech:
    """A text utterance being spoken: the voice's chunks, resampled to the session's rate."""

    chunks: Iterator[Any]
    resampler: Any | None


@dataclass
class Slot:
    """One live session's place at the worker: its queue of work and where its output goes."""

    session: Session
    deliver: Callable[[Output], None]
    idle: bool = False
    frames: str = "jpeg"  # how its frames are encoded (see talkrt.serve.protocol.FRAME_FORMATS)
    video: Any | None = None  # "h264": the session's own encoder (talkrt.serve.h264.H264Stream)
    ops: deque = field(default_factory=deque)  # ("audio", samples, received) | ("flush", t) | ("text", text, t) | ("reset", t)
    pending_samples: int = 0  # audio queued, not yet pushed
    speech: Speech | None = None
    speaking: bool = False  # frames of a text utterance: send their audio too
    talking: bool = False  # a client utterance is open (no idle silence inside it)
    started: float = field(default_factory=time.monotonic)
    closed: bool = False


class DeviceWorker:
    """The thread that owns ``pipeline``; ``encode(images, format) -> list[bytes]`` turns a Frames'
    images into the session's pictures (JPEG or raw) there, an "h264" session's encoder its packets;
    ``voice`` is (module, synthesizer, manifest) or None."""

    def __init__(self, pipeline, stepper: Stepper, encode: Callable[[Any, str], list[bytes]], voice: tuple | None = None) -> None:
        self.pipeline, self.stepper, self.encode, self.voice = pipeline, stepper, encode, voice
        self._slots: list[Slot] = []
        self._jobs: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.load = LoadMeter()
        self._thread = threading.Thread(target=self._run, name="talkrt-device", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- from any thread

    def add(self, sample_rate: int, deliver: Callable[[Output], None], idle: bool = False, frames: str = "jpeg") -> Slot:
        slot = Slot(Session(self.pipeline, sample_rate), deliver, idle, frames)
        if frames == "h264":
            from talkrt.serve.h264 import H264Stream

            slot.video = H264Stream(self.pipeline.fps)
        with self._cond:
            self._slots.append(slot)
            self._cond.notify()
        return slot

    def remove(self, slot: Slot) -> None:
        """Forget a session: its queued work goes, its encoder is freed, and nothing is delivered
        after this returns (a step already running finishes and is dropped)."""
        with self._cond:
            slot.closed = True
            slot.ops.clear()
            slot.speech = None
            slot.deliver = _discard  # the owner refers to its slot: no cycle left for the garbage collector to find
            if slot in self._slots:
                self._slots.remove(slot)
        if slot.video is not None:
            slot.video.close()

    def request_keyframe(self, slot: Slot) -> None:
        """An "h264" session dropped frames its next ones depend on: the next frame starts afresh."""
        if slot.video is not None:
            slot.video.request_keyframe()

    def queue(self, slot: Slot, op: tuple) -> None:
        with self._cond:
            if slot.closed:
                return
            if op[0] == "reset":  # an interruption drops what the utterance still had queued
                slot.ops.clear()
                slot.pending_samples = 0
                slot.speech = None
            if op[0] == "audio":
                slot.pending_samples += len(op[1])
            slot.ops.append(op)
            self._cond.notify()

    def call(self, job: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``job`` on the device thread (after the sessions' steps of a turn)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise TalkrtError("the server is shutting down")
            self._jobs.append((job, future))
            self._cond.notify()
        return future

    @property
    def sessions(self) -> int:
        with self._cond:
            return len(self._slots)

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    # ---------------------------------------------------------------- the device thread

    def _run(self) -> None:
        while self._next_turn():
            pass

    def _next_turn(self) -> bool:
        """Wait for work and run one turn; False once the worker stops. The turn's slots are this
        call's locals: while the thread waits for the next turn, nothing here keeps a session that
        has left alive, nor the device memory its state holds."""
        period = 1.0 / float(self.pipeline.fps)
        with self._cond:
            while not self._stopping and not self._jobs and not any(self._has_work(slot) for slot in self._slots):
                # idle sessions need a push each frame period
                self._cond.wait(timeout=period if any(slot.idle for slot in self._slots) else None)
                if any(slot.idle for slot in self._slots):
                    break
            if self._stopping:
                for _, future in self._jobs:
                    future.set_exception(TalkrtError("the server is shutting down"))
                return False
            # a text being spoken goes first: the session's other work waits for its end
            taken = [(slot, slot.ops.popleft() if slot.ops and slot.speech is None else None) for slot in self._slots if self._has_work(slot)]
            for slot, op in taken:
                if op is not None and op[0] == "audio":
                    slot.pending_samples -= len(op[1])
            job = self._jobs.popleft() if self._jobs else None
        start = time.monotonic()
        self._turn_of(taken)
        if job is not None:
            self._run_job(*job)
        self.load.add(start, time.monotonic())
        return True

    def _has_work(self, slot: Slot) -> bool:
        return bool(slot.ops) or slot.speech is not None or self._idle_due(slot)

    def _idle_due(self, slot: Slot) -> bool:
        """An idle session whose clock has fallen behind the wall clock, outside any utterance."""
        if not slot.idle or slot.talking or slot.speech is not None or slot.ops:
            return False
        elapsed = int((time.monotonic() - slot.started) * slot.session.sample_rate)
        return slot.session.clock < elapsed

    def _turn_of(self, taken: list[tuple[Slot, tuple | None]]) -> None:
        work, owners = [], []
        for slot, op in taken:
            try:
                step = self._chunk_for(slot, op)
            except TalkrtError as error:
                self._fail(slot, str(error), fatal=False)
                continue
            except Exception as error:  # the voice failed: this session ends, the server goes on
                _log.exception("a session's input failed; the session ends")
                self._fail(slot, f"server error: {type(error).__name__}: {error}", fatal=True)
                continue
            if step is not None:
                work.append(step[0])
                owners.append((slot, step[1], step[2]))
        if not work:
            return
        try:
            results = self.stepper.step(work)
        except Exception as error:
            _log.exception("a device step failed; its %d sessions end", len(owners))
            for slot, _, _ in owners:
                self._fail(slot, f"server error: {type(error).__name__}: {error}", fatal=True)
            return
        encoded = self._encode_together([(slot, result) for (slot, _, _), result in zip(owners, results) if not isinstance(result, TalkrtError)])
        for (slot, pushed_at, ends_speech), result, (_, chunk) in zip(owners, results, work):
            if isinstance(result, TalkrtError):
                self._fail(slot, str(result), fatal=False)
                continue
            try:
                pcm = [_pcm16(frames.audio) for frames in result] if slot.speaking else None
                keyframes = None
                if slot.video is not None:
                    packets = [packet for frames in result for packet in slot.video.encode(frames.images)]
                    pictures, keyframes = [data for data, _ in packets], [key for _, key in packets]
                elif id(slot) in encoded:
                    pictures = encoded[id(slot)]
                else:
                    pictures = [image for frames in result for image in self.encode(frames.images, slot.frames)]
            except Exception as error:
                _log.exception("encoding a session's frames failed; the session ends")
                self._fail(slot, f"server error: {type(error).__name__}: {error}", fatal=True)
                continue
            if ends_speech:
                slot.speaking = False
            if chunk is None and slot.video is not None:  # the next utterance starts on a keyframe
                slot.video.request_keyframe()
            self._send(slot, Output(result, pictures, pcm, pushed_at, ends=chunk is None, keyframes=keyframes))

    def _encode_together(self, done: list[tuple[Slot, list[Frames]]]) -> dict[int, list[bytes]]:
        """The pictures of a turn's JPEG and raw sessions (by id of their slot), one ``encode`` of all
        their frames per format: on a GPU one copy to the host, not one wait for the device per
        session. Where that fails the sessions are left out, to be encoded one by one: only the
        session whose frames fail ends."""
        groups: dict[str, list[tuple[Slot, list[Frames]]]] = {}
        for slot, result in done:
            if slot.video is None and result:
                groups.setdefault(slot.frames, []).append((slot, result))
        encoded: dict[int, list[bytes]] = {}
        for kind, group in groups.items():
            images = [frames.images for _, result in group for frames in result]
            try:
                pictures = self.encode(torch.cat(images) if len(images) > 1 else images[0], kind)
            except Exception:
                continue
            first = 0
            for slot, result in group:
                count = sum(len(frames.images) for frames in result)
                encoded[id(slot)], first = pictures[first : first + count], first + count
        return encoded

    def _fail(self, slot: Slot, reason: str, fatal: bool) -> None:
        with self._cond:
            slot.ops.clear()
            slot.speech = None
        self._send(slot, Output([], [], None, time.monotonic(), error=reason, fatal=fatal))

    def _chunk_for(self, slot: Slot, op: tuple | None) -> tuple[tuple[Session, Any], float, bool] | None:
        """This turn's (session, chunk or None) for ``slot``, when its pushed input arrived, and
        whether it ends a text utterance; None when the op needs no device step."""
        session, speech = slot.session, slot.speech  # an interruption may drop slot.speech meanwhile
        if speech is not None:  # a text utterance goes on: the voice makes its next chunk here
            chunk = next(speech.chunks, None)
            now = time.monotonic()
            if chunk is None:
                tail = speech.resampler.finish() if speech.resampler is not None else None
                slot.speech = None
                if tail is not None and len(tail):
                    slot.ops.appendleft(("flush", now))
                    return (session, tail), now, False
                return (session, None), now, True
            if speech.resampler is not None:
                chunk = speech.resampler.push(chunk)
            return (session, chunk), now, False
        if op is None:  # idle: one frame period of digital silence, which shows the avatar at rest
            samples = -(-session.sample_rate // int(np.ceil(float(self.pipeline.fps))))
            return (session, np.zeros(samples, np.float32)), time.monotonic(), False
        kind = op[0]
        if kind == "audio":
            slot.talking = True
            return (session, op[1]), op[2], False
        if kind == "flush":  # ends the utterance, a spoken one included
            slot.talking = False
            return (session, None), op[1], slot.speaking
        if kind == "reset":
            session.reset()
            if slot.video is not None:  # an interruption drops unsent frames: the next utterance starts on a keyframe
                slot.video.request_keyframe()
            slot.talking = slot.speaking = False
            return None
        if kind == "text":
            return self._start_speech(slot, op[1], op[2])
        raise ValueError(f"unknown op {kind!r}")

    def _start_speech(self, slot: Slot, text: str, received: float):
        from talkrt.runtime.incremental import StreamingResampler

        if self.voice is None:
            raise TalkrtError("no voice is loaded: start the server with --tts DIR to speak text")
        module, synthesizer, manifest = self.voice
        if slot.talking:  # the client's utterance ends where the text begins
            slot.ops.appendleft(("text", text, received))
            slot.talking = False
            return (slot.session, None), received, False
        chunks, rate = module.speak_stream(text, synthesizer, manifest, chunk_ms=40.0)
        target = slot.session.sample_rate
        resampler = StreamingResampler(rate, target, self.pipeline.device) if rate != target else None
        slot.speech, slot.speaking = Speech(iter(chunks), resampler), True
        return self._chunk_for(slot, None)

    def _send(self, slot: Slot, output: Output) -> None:
        with self._cond:
            if slot.closed:
                return
        slot.deliver(output)

    def _run_job(self, job: Callable[[], Any], future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(job())
        except BaseException as error:  # handed to the caller, who reports it
            future.set_exception(error)


def _discard(output: Output) -> None:
    pass


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
