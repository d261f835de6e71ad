"""The recorder: marks stages, frames ready, audio arrival, speech made and copies during a run.

One run is timed on one clock whose zero is the start of the run (``Profiler.start``,
called implicitly by the first profiler call):

* On CUDA every ``stage`` records a ``torch.cuda.Event`` pair on the current stream
  inside an NVTX range ``talkrt/<stage>``, and ``frames_ready`` records one event.
  Nothing synchronises in the hot path: ``start`` synchronises once to pin an
  origin event to the host clock, and ``report`` resolves every event against
  that origin. Host-side marks (audio arrival, ``host=True`` stages such as a
  PyAV encode) read the host clock and land on the same timeline.
* On the CPU everything reads the host clock.

The host clock is ``time.perf_counter`` unless another is injected (tests advance
a fake one, so their timings are exact).
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterator
from typing import Literal, Optional, Union

import torch

from talkrt.runtime.align import FeatureAlignment
from talkrt.runtime.profiler.report import ProfileReport
from talkrt.runtime.profiler.summary import CaptureDecision, RecordedRun, StageCall, summarize
from talkrt.runtime.profiler.vocabulary import STAGES

__all__ = ["Clock", "FramesLike", "Profiler"]

Clock = Callable[[], float]  # seconds on a monotonic clock
FramesLike = Union[range, int, None]

# A timestamp is either a host clock value (float) or a CUDA event, resolved in report().
_Stamp = Union[float, "torch.cuda.Event"]


class Profiler:
    """Times pipeline stages per frame; :mod:`talkrt.runtime.profiler.summary` defines the numbers.

    ``sample_rate`` is the rate of the sample counts given to ``audio_available`` /
    ``audio_chunk_arrived`` (the pipeline's 16 kHz clock). With ``enabled=False``
    every method is a cheap no-op and ``report`` returns an empty report. ``clock``
    returns host seconds; explicit times ``t`` given to the marks are on it.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        enabled: bool = True,
        nvtx: bool = True,
        *,
        sample_rate: int = 16000,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.device = torch.device(device)  # (engines.devices.normalize_device is a layer above)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"profiler device {self.device} requested but CUDA is not available")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        elif self.device.type != "cpu":
            raise ValueError(f"unsupported profiler device {self.device} (use cpu or cuda)")
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self.enabled = bool(enabled)
        self.cuda = self.device.type == "cuda"
        self.nvtx = bool(nvtx) and self.cuda
        self.sample_rate = int(sample_rate)
        self.clock = clock
        self._started = False
        self._reset()

    # ---------------------------------------------------------------- lifecycle

    def _reset(self) -> None:
        self._origin_host = 0.0
        self._origin_event: Optional[torch.cuda.Event] = None
        self._stage_calls: list[tuple[str, Optional[range], _Stamp, _Stamp]] = []
        self._ready: list[tuple[range, _Stamp]] = []
        self._audio_first: list[float] = []  # audio_available() marks without a sample count
        self._audio_chunks: list[tuple[int, float]] = []  # (end_sample, host time)
        self._speech: list[tuple[float, _Stamp]] = []  # (seconds of speech, when it was ready)
        self.h2d_bytes = 0
        self.d2h_bytes = 0
        self._peak_used = 0

    def start(self) -> None:
        """Begin a run: clear previous records, reset peak memory, pin the clock's zero.

        On CUDA this synchronises the device once (outside the hot path) so that the
        origin event and the host clock describe the same instant. Called
        implicitly by the first stage / mark if not called explicitly.
        """
        self._reset()
        self._started = True
        if not self.enabled:
            return
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._sample_memory()
            self._origin_event = torch.cuda.Event(enable_timing=True)
            self._origin_host = self.clock()
            self._origin_event.record(torch.cuda.current_stream(self.device))
            self._origin_event.synchronize()
        else:
            self._origin_host = self.clock()

    def _ensure_started(self) -> None:
        if not self._started:
            self.start()

    def _now(self) -> _Stamp:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return self.clock()

    # ---------------------------------------------------------------- hot path

    @contextlib.contextmanager
    def stage(self, name: str, frames: FramesLike = None, *, host: bool = False) -> Iterator[None]:
        """Time one step over the video frames in ``frames`` (a batch; None for no frames, e.g. tts).

        On CUDA: an event pair on the current stream and an NVTX range ``talkrt/<name>``;
        ``host=True`` times CPU work (a PyAV encode) with the host clock instead.
        """
        if name not in STAGES:
            raise ValueError(f"unknown profiler stage {name!r}; stages are {', '.join(STAGES)}")
        span = _as_range(frames)
        if not self.enabled:
            yield
            return
        self._ensure_started()
        on_device = self.cuda and not host
        if self.nvtx:
            torch.cuda.nvtx.range_push(f"talkrt/{name}")
        begin = self._now() if on_device else self.clock()
        try:
            yield
        finally:
            end = self._now() if on_device else self.clock()
            if self.nvtx:
                torch.cuda.nvtx.range_pop()
            self._stage_calls.append((name, span, begin, end))

    def frames_ready(self, frames: range | int, *, t: Optional[float] = None) -> None:
        """Mark ``frames`` as ready (an event on the current stream on CUDA, or host time ``t``)."""
        span = _as_range(frames)
        if not self.enabled or span is None or len(span) == 0:
            return
        self._ensure_started()
        stamp: _Stamp = float(t) if t is not None else self._now()
        self._ready.append((span, stamp))
        if self.cuda:
            self._sample_memory()

    def _sample_memory(self) -> None:
        """Device-wide memory in use (no sync): sees TensorRT's and ONNX Runtime's allocations too."""
        free, total = torch.cuda.mem_get_info(self.device)
        self._peak_used = max(self._peak_used, total - free)

    def audio_available(
        self,
        *,
        samples: Optional[int] = None,
        seconds: Optional[float] = None,
        t: Optional[float] = None,
    ) -> None:
        """The first audio is available at host time ``t`` (default now): t0 of time to first frame.

        With ``samples`` / ``seconds`` it also reports that much audio as arrived, like
        ``audio_chunk_arrived``. A run that never reports chunks is offline: all of its
        audio counts as available at the first mark.
        """
        if samples is not None and seconds is not None:
            raise ValueError("give samples or seconds, not both")
        if not self.enabled:
            return
        self._ensure_started()
        when = self.clock() if t is None else float(t)
        if seconds is not None:
            samples = round(seconds * self.sample_rate)
        if samples is None:
            self._audio_first.append(when)
        else:
            self._audio_chunks.append((int(samples), when))

    def audio_chunk_arrived(self, end_sample: int, t: Optional[float] = None) -> None:
        """Streaming: samples [0, end_sample) had arrived at host time ``t`` (default now)."""
        if end_sample < 0:
            raise ValueError("end_sample must be non-negative")
        if not self.enabled:
            return
        self._ensure_started()
        self._audio_chunks.append((int(end_sample), self.clock() if t is None else float(t)))

    def speech_ready(self, seconds: float) -> None:
        """Text to speech: a chunk of ``seconds`` of speech is ready now (an event on the current
        stream on CUDA, after the ``tts`` call that made it): the marks of a text run."""
        if seconds < 0:
            raise ValueError("seconds must be non-negative")
        if not self.enabled:
            return
        self._ensure_started()
        self._speech.append((float(seconds), self._now()))

    def count_copy(self, nbytes: int | torch.Tensor, direction: Literal["h2d", "d2h"]) -> None:
        """Account bytes copied between host and device (a tensor counts its ``nbytes``)."""
        if isinstance(nbytes, torch.Tensor):
            nbytes = nbytes.nbytes
        nbytes = int(nbytes)
        if nbytes < 0:
            raise ValueError("nbytes must be non-negative")
        if direction == "h2d":
            if self.enabled:
                self.h2d_bytes += nbytes
        elif direction == "d2h":
            if self.enabled:
                self.d2h_bytes += nbytes
        else:
            raise ValueError(f"direction must be 'h2d' or 'd2h', not {direction!r}")

    # ---------------------------------------------------------------- report

    def _resolve(self, stamp: _Stamp) -> float:
        """ms since the run start, on one timeline for host times and CUDA events."""
        if isinstance(stamp, float):
            return self._host_ms(stamp)
        stamp.synchronize()
        assert self._origin_event is not None
        return float(self._origin_event.elapsed_time(stamp))

    def _host_ms(self, t: float) -> float:
        return (t - self._origin_host) * 1000.0

    def recorded(self) -> RecordedRun:
        """Every mark so far resolved to ms since the run start (synchronises on CUDA)."""
        peak = None
        if self.cuda and self.enabled and self._started:
            self._sample_memory()
            peak = max(self._peak_used, int(torch.cuda.max_memory_allocated(self.device)))
        return RecordedRun(
            stage_calls=[
                StageCall(name, span, self._resolve(begin), self._resolve(end))
                for name, span, begin, end in self._stage_calls
            ],
            ready=[(span, self._resolve(stamp)) for span, stamp in self._ready],
            audio_first_ms=[self._host_ms(t) for t in self._audio_first],
            audio_chunks=[(end_sample, self._host_ms(t)) for end_sample, t in self._audio_chunks],
            speech=[(seconds, self._resolve(stamp)) for seconds, stamp in self._speech],
            sample_rate=self.sample_rate,
            h2d_bytes=self.h2d_bytes,
            d2h_bytes=self.d2h_bytes,
            device=str(self.device),
            device_name=_device_name(self.device),
            peak_device_memory_bytes=peak,
        )

    def report(
        self,
        audio_seconds: float,
        fps: float,
        *,
        alignment: Optional[FeatureAlignment] = None,
        cuda_graph: Optional[CaptureDecision] = None,
    ) -> ProfileReport:
        """Resolve every mark and compute the run's numbers (the only place that synchronises).

        ``fps`` may be any number (or Fraction) > 0. ``alignment`` decides which audio
        each frame needs when audio arrived in chunks (default: the frame's own span).
        ``cuda_graph`` is the pipeline's capture decision.
        """
        return summarize(self.recorded(), audio_seconds, fps, alignment=alignment, cuda_graph=cuda_graph)


def _as_range(frames: FramesLike) -> Optional[range]:
    if frames is None:
        return None
    if isinstance(frames, bool):
        raise TypeError("frames must be a range, an int or None")
    if isinstance(frames, int):
        return range(frames, frames + 1)
    if isinstance(frames, range):
        if frames.step != 1 or frames.start < 0:
            raise ValueError(f"frames must be a contiguous range of non-negative indices, not {frames!r}")
        return frames
    raise TypeError(f"frames must be a range, an int or None, not {type(frames).__name__}")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"
