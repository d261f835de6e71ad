"""From recorded marks to the numbers of a run: a pure function, no clock, no device.

Definitions used by :func:`summarize` (all times in ms since the run start):

* **Per-frame stage cost.** A stage call covering a batch of ``n`` frames adds
  ``duration / n`` to each of them; calls touching the same frame add up. Calls
  with no frames (``tts``) count in ``calls`` and ``total_ms`` only.
* **Audio time of frame k**: when the audio frame k needs had arrived. Offline (no
  chunk ever reported) it is the first ``audio_available()`` mark: all audio at
  once. Streaming (``audio_chunk_arrived(end_sample)``, or ``audio_available``
  with a sample count), it is the first chunk after
  which frame k is computable: per ``alignment.frames_ready`` when a
  :class:`~talkrt.runtime.align.FeatureAlignment` is given, else
  once the samples of the frame's own span ``[s_k, s_(k+1))`` arrived (no
  lookahead). Frames beyond the last chunk's reach get the last chunk's time
  (the end of the stream). Without any audio mark it is the run start.
* **End-to-end latency of frame k** = ready_k - max(audio_k, 0).
* **Time to first frame** (``avatar_first_frame_ms``, OpenTalking's name) = first
  frame ready - first audio available (run start when audio was never marked).
* **tts_first_pcm_ms** (only when a ``tts`` stage ran) = first audio available -
  start of the first ``tts`` call (its end, when audio was never marked).
* **Deadline misses.** Playback starts when the first frame is ready: frame k is
  presented at first_ready + (k - k0) / fps, k0 the lowest ready frame index. A
  frame misses when it is ready after its presentation time (by more than 1 us,
  so float noise on an exactly-on-time frame is not a miss), i.e. the viewer would
  see a stall. ``slack_ms`` per frame is presentation - ready. This
  counts real stalls of a buffered player rather than frames whose latency is
  over 1000/fps, which would flag every frame of a run with any buffering; the
  1000/fps line in the plot is the per-frame compute budget.
* **Per-batch time** (batch = one ``frames_ready`` call) = ready_b -
  max(ready_(b-1), latest audio time among its frames, 0): how long the batch took
  once it could start. ``steady_chunk_ms`` is its median over batches after the
  first.
* **Wall time** = run start to the last frame ready or stage end;
  ``render_fps`` = frames / wall, ``real_time_factor`` = wall / audio duration
  (< 1 is faster than real time).
* **Text runs** (speech made during the run, chunk by chunk, and marked with
  ``speech_ready``; the run starts when the text does): ``text_to_first_audio_ms``
  (TTFA) = the first chunk of speech ready; ``text_to_first_frame_ms`` (TTFV) = the
  first frame ready; ``steady_real_time_factor`` = (wall - TTFA) / the speech after
  the first chunk, the cost once started (None with a single chunk). All three are
  None in other runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from talkrt import __version__
from talkrt.runtime.align import FeatureAlignment, num_video_frames
from talkrt.runtime.profiler.report import Percentiles, ProfileReport, StageStats
from talkrt.runtime.profiler.vocabulary import DECIMALS, LATE_TOLERANCE_MS, STAGES

__all__ = ["CaptureDecision", "RecordedRun", "StageCall", "summarize"]


@dataclass(frozen=True)
class StageCall:
    """One timed stage call: its video frames (None for none, e.g. tts) and its begin and end."""

    name: str
    frames: Optional[range]
    begin_ms: float
    end_ms: float


@dataclass(frozen=True)
class RecordedRun:
    """What one run recorded, every time in ms since the run start.

    ``audio_first_ms`` are ``audio_available`` marks without a sample count;
    ``audio_chunks`` are ``(end_sample, ms)``: samples [0, end_sample) had arrived,
    counted at ``sample_rate``; ``speech`` are the chunks of a text run's speech.
    """

    stage_calls: Sequence[StageCall] = ()
    ready: Sequence[tuple[range, float]] = ()  # (frames, when marked ready)
    audio_first_ms: Sequence[float] = ()
    audio_chunks: Sequence[tuple[int, float]] = ()
    speech: Sequence[tuple[float, float]] = ()  # (seconds of speech in a chunk, ms when it was ready)
    sample_rate: int = 16000
    h2d_bytes: int = 0
    d2h_bytes: int = 0
    device: str = "cpu"
    device_name: str = "cpu"
    peak_device_memory_bytes: Optional[int] = None


class CaptureDecision(Protocol):
    """The pipeline's CUDA-graph decision, as the report records it."""

    @property
    def use(self) -> bool: ...

    @property
    def reason(self) -> str: ...


def summarize(
    run: RecordedRun,
    audio_seconds: float,
    fps: float,
    *,
    alignment: Optional[FeatureAlignment] = None,
    cuda_graph: Optional[CaptureDecision] = None,
) -> ProfileReport:
    """The report of ``run``; see the module docstring for every definition.

    ``fps`` may be any number (or Fraction) > 0. ``alignment`` decides which audio
    each frame needs when audio arrived in chunks (default: the frame's own span).
    """
    fps_value = float(fps)
    if not fps_value > 0:
        raise ValueError("fps must be positive")
    if audio_seconds < 0:
        raise ValueError("audio_seconds must be non-negative")
    if alignment is not None and alignment.sample_rate != run.sample_rate:
        raise ValueError(
            f"alignment {alignment.name} runs at {alignment.sample_rate} Hz, the profiler at {run.sample_rate} Hz"
        )
    calls = run.stage_calls
    ready_marks = sorted(((when, span) for span, when in run.ready), key=lambda m: m[0])

    # Frames: everything marked ready or touched by a stage.
    ready_ms: dict[int, float] = {}
    for when, span in ready_marks:
        for k in span:
            ready_ms.setdefault(k, when)  # a frame is ready the first time it is marked
    touched = set(ready_ms)
    for call in calls:
        if call.frames is not None:
            touched.update(call.frames)
    index = sorted(touched)
    position = {k: i for i, k in enumerate(index)}
    n = len(index)
    frames = len(ready_ms) if ready_ms else n

    # Per-stage totals and per-frame division.
    stage_frame = {name: np.zeros(n) for name in STAGES}
    stage_calls = {name: 0 for name in STAGES}
    stage_total = {name: 0.0 for name in STAGES}
    stage_touched = {name: np.zeros(n, dtype=bool) for name in STAGES}
    for call in calls:
        duration = max(0.0, call.end_ms - call.begin_ms)
        stage_calls[call.name] += 1
        stage_total[call.name] += duration
        if call.frames is not None and len(call.frames):
            rows = [position[k] for k in call.frames]
            stage_frame[call.name][rows] += duration / len(call.frames)
            stage_touched[call.name][rows] = True
    ran = [name for name in STAGES if stage_calls[name]]
    stages = {
        name: StageStats(
            calls=stage_calls[name],
            total_ms=round(stage_total[name], DECIMALS),
            frames=int(stage_touched[name].sum()),
            per_frame_ms=Percentiles.of(stage_frame[name][stage_touched[name]]),
        )
        for name in ran
    }

    # Audio: when each frame's audio was available.
    first_audio_candidates = [*run.audio_first_ms, *(when for _, when in run.audio_chunks)]
    first_audio = min(first_audio_candidates) if first_audio_candidates else None
    frame_audio = _frame_audio_ms(run, index, fps, audio_seconds, alignment)

    # End-to-end latency, deadlines, batches.
    ready = np.array([ready_ms.get(k, np.nan) for k in index], dtype=np.float64)
    audio = np.array(frame_audio, dtype=np.float64)
    latency = ready - np.maximum(audio, 0.0)
    is_ready = np.isfinite(ready)
    slack = np.full(n, np.nan)
    deadline_misses = 0
    first_ready = None
    if is_ready.any():
        first_ready = float(ready[is_ready].min())
        k0 = min(ready_ms)
        presentation = first_ready + (np.asarray(index, dtype=np.float64) - k0) * 1000.0 / fps_value
        slack = presentation - ready
        deadline_misses = int((slack[is_ready] < -LATE_TOLERANCE_MS).sum())

    batch_frames, batch_ready, batch_ms = [], [], []
    previous = 0.0
    for when, span in ready_marks:
        needed = max((float(audio[position[k]]) for k in span), default=0.0)
        batch_frames.append((span.start, span.stop))
        batch_ready.append(round(when, DECIMALS))
        batch_ms.append(round(max(0.0, when - max(previous, needed, 0.0)), DECIMALS))
        previous = max(previous, when)

    ends = [call.end_ms for call in calls] + [when for when, _ in ready_marks]
    wall_ms = max([0.0, *ends])
    tts_calls = [(call.begin_ms, call.end_ms) for call in calls if call.name == "tts"]
    tts_first_pcm = None
    if tts_calls:
        tts_begin, tts_end = min(tts_calls)
        tts_first_pcm = (first_audio if first_audio is not None else tts_end) - tts_begin
    ttff = None if first_ready is None else first_ready - (first_audio if first_audio is not None else 0.0)
    ttfa, ttfv, steady_rtf = _text_run(run.speech, first_ready, wall_ms)

    def rounded(values: np.ndarray) -> list[Optional[float]]:
        return [round(float(v), DECIMALS) if math.isfinite(v) else None for v in values]

    return ProfileReport(
        device=run.device,
        device_name=run.device_name,
        fps=fps_value,
        audio_seconds=float(audio_seconds),
        frames=frames,
        wall_ms=round(wall_ms, DECIMALS),
        render_fps=round(frames / (wall_ms / 1000.0), DECIMALS) if wall_ms > 0 else 0.0,
        real_time_factor=round(wall_ms / 1000.0 / audio_seconds, 6) if audio_seconds > 0 else None,
        time_to_first_frame_ms=None if ttff is None else round(ttff, DECIMALS),
        tts_first_pcm_ms=None if tts_first_pcm is None else round(tts_first_pcm, DECIMALS),
        text_to_first_audio_ms=ttfa,
        text_to_first_frame_ms=ttfv,
        steady_real_time_factor=steady_rtf,
        steady_chunk_ms=round(float(np.median(batch_ms[1:])), DECIMALS) if len(batch_ms) > 1 else None,
        deadline_misses=deadline_misses,
        peak_device_memory_bytes=run.peak_device_memory_bytes,
        h2d_bytes=run.h2d_bytes,
        d2h_bytes=run.d2h_bytes,
        stages=stages,
        end_to_end_ms=Percentiles.of(latency[is_ready]),
        frame_index=index,
        frame_stage_ms={name: [round(float(v), DECIMALS) for v in stage_frame[name]] for name in ran},
        frame_audio_ms=[round(float(v), DECIMALS) for v in audio],
        frame_ready_ms=rounded(ready),
        frame_latency_ms=rounded(latency),
        frame_slack_ms=rounded(slack),
        batch_frames=batch_frames,
        batch_ready_ms=batch_ready,
        batch_ms=batch_ms,
        talkrt_version=__version__,
        cuda_graph=None if cuda_graph is None else {"used": bool(cuda_graph.use), "reason": str(cuda_graph.reason)},
        feature_context=_feature_context(alignment, streamed=bool(run.audio_chunks)),
    )


def _feature_context(alignment: Optional[FeatureAlignment], streamed: bool) -> Optional[str]:
    """How the features of a run were computed (offline: always on the whole utterance)."""
    if alignment is None:
        return None
    if streamed and alignment.context is not None:
        return alignment.context.describe(alignment)
    if streamed and alignment.streamable:
        return "exact: incremental columns"
    return "whole utterance"


def _text_run(speech: Sequence[tuple[float, float]], first_ready: Optional[float], wall_ms: float) -> tuple[Optional[float], ...]:
    """(TTFA, TTFV, steady real-time factor) of a text run, rounded; all None without speech."""
    if not speech:
        return None, None, None
    chunks = sorted(speech, key=lambda chunk: chunk[1])
    first_seconds, first_audio = chunks[0]
    after = sum(seconds for seconds, _ in chunks[1:])
    steady = round(max(0.0, wall_ms - first_audio) / 1000.0 / after, 6) if after > 0 else None
    return round(first_audio, DECIMALS), None if first_ready is None else round(first_ready, DECIMALS), steady


def _frame_audio_ms(
    run: RecordedRun,
    index: list[int],
    fps: float,
    audio_seconds: float,
    alignment: Optional[FeatureAlignment],
) -> list[float]:
    """When the audio each frame needs had arrived (ms since run start; 0 when never marked)."""
    if not run.audio_chunks:  # offline: all of the audio arrived with the first mark
        when = min(run.audio_first_ms) if run.audio_first_ms else 0.0
        return [when] * len(index)
    chunks = sorted(run.audio_chunks, key=lambda c: c[1])
    total = round(audio_seconds * run.sample_rate)
    last_time = chunks[-1][1]
    # Cumulative count of computable frames after each chunk, in arrival order.
    marks: list[tuple[int, float]] = []
    reach = 0
    for end_sample, when in chunks:
        end_sample = min(end_sample, total) if total else end_sample
        final = bool(total) and end_sample >= total  # the stream's end is known only once reached
        if alignment is not None:
            count = alignment.frames_ready(end_sample, fps, total_samples=total if final else None)
        elif final:
            count = num_video_frames(total, fps, run.sample_rate)
        else:  # frame k's own span [s_k, s_{k+1}) is inside [0, end_sample)
            count = max(0, num_video_frames(end_sample + 1, fps, run.sample_rate) - 1)
        if count > reach:
            reach = count
            marks.append((reach, when))
    result = []
    cursor = 0
    for k in index:  # index is sorted, and so are the marks' reaches
        while cursor < len(marks) and marks[cursor][0] <= k:
            cursor += 1
        result.append(marks[cursor][1] if cursor < len(marks) else last_time)
    return result
