"""One WebSocket session of /v1/stream: the client's messages to the device worker, the worker's
frames to the client through a bounded queue (docs/serve.md has the protocol and policies)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from talkrt.serve.protocol import POLICY, SERVER_ERROR, ProtocolError, Start, decode_pcm16, message, parse_text, parse_text_request
from talkrt.serve.worker import DeviceWorker, Output


@dataclass(frozen=True)
class Limits:
    max_message_samples: int
    max_pending_samples: int
    max_queued_frames: int
    stall_seconds: float


class Closing(Exception):
    """The session ends: ``reason`` sent as an error message (when not None), then close ``code``."""

    def __init__(self, code: int, reason: str | None) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class LiveSession:
    """Runs one session until the client stops or leaves, or a mistake or the server ends it."""

    def __init__(self, websocket, worker: DeviceWorker, metrics, start: Start, limits: Limits, fps) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.websocket, self.worker, self.metrics, self.limits = websocket, worker, metrics, limits
        self.rate, self.frame_period = start.sample_rate, 1.0 / float(fps)
        self.loop = asyncio.get_running_loop()
        self.outbox: deque[tuple[str, Any]] = deque()
        self.queued_frames = 0
        self.wakeup = asyncio.Event()
        self.first_input: float | None = None
        self.first_frame_sent = False
        self.ending: Closing | None = None
        self.closed = False
        self.h264 = start.frames == "h264"
        # H.264: frames after a dropped one cannot be decoded; until the next keyframe they are
        # skipped too (None: not skipping; True / False: counted as dropped or not)
        self.skipping: bool | None = None
        self.slot = worker.add(start.sample_rate, self._deliver_from_worker, idle=start.idle, frames=start.frames)

    # ------------------------------------------------------------------ worker side

    def _deliver_from_worker(self, output: Output) -> None:
        self.loop.call_soon_threadsafe(self._take, output)

    def _take(self, output: Output) -> None:
        """On the event loop: queue a step's frames (dropping the oldest past the bound)."""
        if self.closed:  # handed over before the session left the worker
            return
        if output.error is not None:
            self.end(Closing(SERVER_ERROR if output.fatal else POLICY, output.error))
            return
        for number, frames in enumerate(output.frames):
            if output.pcm is not None:
                self.outbox.append(("audio", (int(frames.pts[0]), output.pcm[number])))
        pictures = iter(output.pictures)
        keyframes = iter(output.keyframes) if output.keyframes is not None else None
        for frames in output.frames:
            for offset, pts in enumerate(frames.pts):
                picture, key = next(pictures), next(keyframes) if keyframes is not None else None
                if key is not None and self.skipping is not None:
                    if not key:
                        if self.skipping:
                            self.metrics.frames_dropped.inc()
                        continue
                    self.skipping = None
                self.outbox.append(("frame", (frames.first + offset, int(pts), picture, output.pushed_at, key)))
                self.queued_frames += 1
        if output.ends:
            self.outbox.append(("end", self.slot.session.clock))
        while self.queued_frames > self.limits.max_queued_frames:
            self._drop_oldest_frame()
        self.metrics.session_queue.labels(self.id).set(self.queued_frames)
        self.wakeup.set()

    def _drop_oldest_frame(self) -> None:
        for position, (kind, _) in enumerate(self.outbox):
            if kind == "frame":
                del self.outbox[position]
                self.queued_frames -= 1
                self.metrics.frames_dropped.inc()
                if self.h264:
                    self._skip_to_keyframe(position, counted=True)
                return

    def _skip_to_keyframe(self, position: int, counted: bool) -> None:
        """H.264: the frames queued from ``position`` refer to a dropped one, up to the next
        keyframe: they go too, and without a keyframe queued the encoder is asked for one."""
        while position < len(self.outbox):
            kind, item = self.outbox[position]
            if kind != "frame":
                position += 1
                continue
            if item[4]:
                return
            del self.outbox[position]
            self.queued_frames -= 1
            if counted:
                self.metrics.frames_dropped.inc()
        self.skipping = counted
        self.worker.request_keyframe(self.slot)

    def end(self, closing: Closing) -> None:
        if self.ending is None:
            self.ending = closing
        self.wakeup.set()

    # ------------------------------------------------------------------ client side

    async def run(self) -> None:
        """Receive and send until the session ends; always leaves the worker."""
        self.metrics.sessions_total.inc()
        self.metrics.sessions_active.inc()
        sender = asyncio.create_task(self._send_loop())
        receiver = asyncio.create_task(self._receive_loop())
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            self.worker.remove(self.slot)
            self.closed = True
            self.outbox.clear()
            self.metrics.sessions_active.dec()
            self.metrics.end_session(self.id)
        closing = self.ending
        if closing is not None and closing.code is not None:
            if closing.reason is not None:
                self.metrics.sessions_closed.labels(_reason_label(closing)).inc()
            await _close(self.websocket, closing.code, closing.reason)

    async def _receive_loop(self) -> None:
        try:
            while self.ending is None:
                received = await self.websocket.receive()
                if received["type"] == "websocket.disconnect":
                    self.end(Closing(None, None))
                    return
                self._handle(received.get("bytes"), received.get("text"))
        except ProtocolError as error:
            self.end(Closing(error.code, error.reason))

    def _handle(self, data: bytes | None, text: str | None) -> None:
        now = time.monotonic()
        if data is not None:
            samples = decode_pcm16(data, self.limits.max_message_samples)
            if self.slot.pending_samples + len(samples) > self.limits.max_pending_samples:
                raise ProtocolError(f"more than {self.limits.max_pending_samples / self.rate:.0f} s of audio waiting: the server cannot keep up; send in real time")
            self.first_input = self.first_input or now
            self.worker.queue(self.slot, ("audio", samples, now))
            return
        request = parse_text(text or "")
        kind = request["type"]
        if kind == "start":
            raise ProtocolError("the session has started already: send \"start\" once")
        if kind == "flush":
            self.worker.queue(self.slot, ("flush", now))
        elif kind == "interrupt":
            self.worker.queue(self.slot, ("reset", now))
            self._drop_unsent()
        elif kind == "text":
            if self.worker.voice is None:
                raise ProtocolError("no voice is loaded: start the server with --tts DIR to send text")
            self.first_input = self.first_input or now
            self.worker.queue(self.slot, ("text", parse_text_request(request), now))
        elif kind == "stop":
            self.end(Closing(1000, None))

    def _drop_unsent(self) -> None:
        """An interruption: frames of the dropped utterance not yet sent go too (not counted as dropped)."""
        dropped = self.queued_frames > 0
        self.outbox = deque(item for item in self.outbox if item[0] not in ("frame", "audio"))
        self.queued_frames = 0
        if self.h264 and dropped:
            self._skip_to_keyframe(0, counted=False)

    async def _send_loop(self) -> None:
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                while self.outbox and self.ending is None:
                    await asyncio.wait_for(self._send_one(*self.outbox.popleft()), self.limits.stall_seconds)
                if self.ending is not None:
                    return
        except asyncio.TimeoutError:
            self.end(Closing(POLICY, f"the client took no frame for {self.limits.stall_seconds:g} s"))

    async def _send_one(self, kind: str, item: Any) -> None:
        websocket = self.websocket
        if kind == "audio":
            pts, pcm = item
            await websocket.send_text(message("audio", pts=pts, rate=self.rate))
            await websocket.send_bytes(pcm)
        elif kind == "end":
            await websocket.send_text(message("end", pts=item))
        else:
            index, pts, picture, pushed_at, key = item
            self.queued_frames -= 1
            await websocket.send_text(message("frame", index=index, pts=pts, rate=self.rate, **({} if key is None else {"key": key})))
            await websocket.send_bytes(picture)
            now = time.monotonic()
            self._count_frame(now, now - pushed_at)

    def _count_frame(self, now: float, latency: float) -> None:
        metrics = self.metrics
        metrics.frames_sent.inc()
        metrics.session_frames.labels(self.id).inc()
        metrics.session_queue.labels(self.id).set(self.queued_frames)
        metrics.frame_latency.observe(latency)
        metrics.session_latency.labels(self.id).set(latency)
        if latency > self.frame_period:
            metrics.deadline_misses.inc()
            metrics.session_misses.labels(self.id).inc()
        if not self.first_frame_sent and self.first_input is not None:
            self.first_frame_sent = True
            metrics.first_frame.observe(now - self.first_input)
            metrics.session_first_frame.labels(self.id).set(now - self.first_input)


def _reason_label(closing: Closing) -> str:
    return {POLICY: "protocol", SERVER_ERROR: "server_error", 1003: "unsupported", 1001: "shutdown", 1013: "max_sessions"}.get(closing.code, "other")


async def _close(websocket, code: int, reason: str | None) -> None:
    """The error message (when there is a reason), then the close frame; a client already gone is fine."""
    try:
        if reason is not None and code != 1000:
            await websocket.send_text(message("error", reason=reason))
        await websocket.close(code, (reason or "").encode()[:120].decode(errors="ignore"))
    except Exception:  # the connection is already closed
        pass


async def refuse(websocket, code: int, reason: str) -> None:
    await _close(websocket, code, reason)
