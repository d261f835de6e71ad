"""Frames to the host while the next batch renders.

Two pinned host buffers take turns: batch i is copied into one with a
non-blocking copy queued on the pipeline's stream (so it reads the frame buffer
before the next batch overwrites it) and an event marks its end; a thread waits
on that event alone and hands the host frames to the consumer (the encoder).
The render of batch i+1 is queued meanwhile, so copy and encode overlap it, and
the encoder's time no longer includes waiting for the GPU. On the CPU the same
thread overlaps encoding with rendering.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch

from talkrt.runtime.profiler import Profiler

SLOTS = 2


class OverlappedSink:
    """``push(start, frames)`` per batch, ``close()`` at the end; the consumer sees batches in order.

    ``consume(start, frames)`` gets a (n, H, W, 3) uint8 host tensor that is valid only
    during the call. An error in the consumer is raised again by the next ``push`` or
    by ``close``.
    """

    def __init__(self, consume: Callable[[int, torch.Tensor], None], frame_shape: tuple[int, ...], batch_size: int, device: torch.device, profiler: Profiler | None = None) -> None:
        self.consume, self.device, self.profiler = consume, device, profiler
        pinned = device.type == "cuda"
        self._buffers = [torch.empty(batch_size, *frame_shape, dtype=torch.uint8, pin_memory=pinned) for _ in range(SLOTS)]
        self._events = [torch.cuda.Event() if pinned else None for _ in range(SLOTS)]
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(SLOTS):
            self._free.put(slot)
        self._work: queue.Queue[tuple[int, int, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="talkrt-sink", daemon=True)
        self._thread.start()

    def push(self, start: int, frames: torch.Tensor) -> None:
        """Queue the copy of ``frames`` (on the current stream) and return without waiting for it."""
        slot = self._free.get()  # blocks only while both buffers are still being encoded
        self._raise()
        count = len(frames)
        host = self._buffers[slot][:count]
        host.copy_(frames, non_blocking=self.device.type == "cuda")
        event = self._events[slot]
        if event is not None:
            event.record(torch.cuda.current_stream(self.device))
        if self.profiler is not None:
            self.profiler.count_copy(host, "d2h")
        self._work.put((slot, start, count))

    def close(self) -> None:
        """Wait until every pushed batch is consumed; raise the consumer's error if it failed."""
        self._work.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _drain(self) -> None:
        while (item := self._work.get()) is not None:
            slot, start, count = item
            try:
                if self._error is None:
                    event = self._events[slot]
                    if event is not None:
                        event.synchronize()  # this copy only, not the whole stream
                    frames = self._buffers[slot][:count]
                    if self.profiler is not None:
                        with self.profiler.stage("encode", range(start, start + count), host=True):
                            self.consume(start, frames)
                    else:
                        self.consume(start, frames)
            except BaseException as error:  # handed to the producer thread
                self._error = error
            finally:
                self._free.put(slot)
