"""The talking-head pipeline: audio -> 16 kHz -> features -> windows -> renderer -> paste-back -> frames.

Every stage runs on one device and one stream. The audio goes to the device
once; frames come back only at the sink (a video file, raw frames or a consumer
of FrameBatch). Buffers are allocated when the pipeline is built; on a GPU the
steady-state batch (gather, render, paste-back) is captured in a CUDA graph and
replayed. The same code runs on the CPU with host tensors and wall-clock timing.

Offline (``run``) and streaming (``stream``) produce the same frames: streaming
renders a frame as soon as every feature column of its window is final (the
lookahead comes from the alignment contract).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np
import torch

from talkrt.errors import TalkrtError
from talkrt.runtime.align import FpsLike, as_fps, gather_windows, num_video_frames
from talkrt.runtime.audio import resample, resampled_length
from talkrt.runtime.avatar import Avatar
from talkrt.runtime.compose import Compositor
from talkrt.runtime.profiler import Profiler, ProfileReport

Audio = Union[np.ndarray, torch.Tensor]  # mono float samples; a tensor may already be on the pipeline's device

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class PipelineOptions:
    fps: FpsLike = 25
    batch_size: int = 8
    profile: bool = True
    cuda_graphs: bool = True  # capture the steady-state batch on a GPU


@dataclass(frozen=True)
class CapturePlan:
    """Whether the steady batch runs as captured CUDA graphs, and why (shown in the profile report)."""

    use: bool
    reason: str


def capture_plan(device: torch.device, options: PipelineOptions, renderer) -> CapturePlan:
    """The pipeline's CUDA-graph policy: capture on a GPU, at warm-up, when every runner in the batch allows it."""
    return plan_capture(device, options.cuda_graphs, renderer.batch_runners, "render and compose captured at warm-up")


def plan_capture(device: torch.device, enabled: bool, runners, captured: str) -> CapturePlan:
    """The one CUDA-graph policy: capture on a GPU, unless turned off or a runner's calls cannot be
    recorded; ``captured`` says what is captured when it is."""
    if device.type != "cuda":
        return CapturePlan(False, "not on a GPU")
    if not enabled:
        return CapturePlan(False, "CUDA graphs turned off")
    for runner in runners:
        if not runner.capturable:
            why = {
                "ort": "ONNX Runtime synchronises inside its run call",
                "trt": "TensorRT-RTX captures its own CUDA graphs (whole-graph strategy)",
            }.get(runner.backend, f"the {runner.backend} runner cannot be captured")
            return CapturePlan(False, why)
    return CapturePlan(True, captured)


def abandon_capture(graphs: list, device: torch.device, error: Exception) -> CapturePlan:
    """After a failed capture: free the graphs and their memory pool; the plan then says why."""
    for graph in graphs:
        graph.reset()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()  # hand back the failed capture's memory pool
    return CapturePlan(False, f"capture failed ({type(error).__name__}: {error})")


@dataclass(frozen=True)
class DueFrames:
    """What the renderer needs for frames ``start .. start + n - 1`` of an utterance: the avatar
    frame of each (n,) and its window of features (n, C, window), on the pipeline's device."""

    start: int
    avatar_index: torch.Tensor
    windows: torch.Tensor

    def __len__(self) -> int:
        return len(self.windows)


@dataclass
class FrameBatch:
    """Finished frames ``start .. start + len(frames) - 1``; ``frames`` (n, H, W, 3) uint8 BGR on the
    pipeline's device is a view of a reused buffer: consume it before asking for the next batch."""

    start: int
    frames: torch.Tensor


class Pipeline:
    def __init__(self, avatar: Avatar, renderer, options: PipelineOptions = PipelineOptions(), stream: torch.cuda.Stream | None = None) -> None:
        if options.batch_size < 1:
            raise TalkrtError("batch size must be at least 1")
        _check_avatar_for(avatar, renderer.name, tuple(renderer.crop_size))
        self.avatar = avatar
        self.renderer = renderer
        self.options = options
        self.fps: Fraction = as_fps(options.fps)
        self.device = renderer.device
        if self.device.type == "cuda":
            self.stream = stream or torch.cuda.Stream(self.device)
        else:
            self.stream = None
        self.profiler = Profiler(self.device, enabled=options.profile)
        with self._on_stream():
            self.compositor = Compositor(avatar.frames, avatar.boxes, avatar.blend_mask, self.device)
            renderer.bind(avatar, options.batch_size, self.stream)
            batch = options.batch_size
            self._frame_out = torch.empty(batch, *self.compositor.frame_shape, dtype=torch.uint8, device=self.device)
            # On a GPU every batch runs on these full-size buffers (a partial batch is padded):
            # one shape for the engines' contexts and for the captured graphs.
            self._static_avatar_index = torch.zeros(batch, dtype=torch.long, device=self.device)
            self._static_windows = torch.zeros(batch, renderer.feature_channels, renderer.alignment.window, device=self.device)
        self._graphs: tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph] | None = None
        self._static_faces: torch.Tensor | None = None
        self.capture = capture_plan(self.device, options, renderer)
        if self.device.type == "cuda":
            self.warmup()

    @property
    def cuda_graph_used(self) -> bool:
        return self._graphs is not None

    def warmup(self) -> None:
        """Run one full batch eagerly (lazy allocations, kernel choice, engine specialisation), then
        capture render and compose as two graphs on fixed buffers, before any utterance."""
        index, windows = self._static_avatar_index, self._static_windows
        with self._on_stream():
            self._warm_features()
            faces = self.renderer.render(index, windows)
            self.compositor.compose(index, faces, self._frame_out)
        self.stream.synchronize()
        if not self.capture.use:
            return
        graphs: list[torch.cuda.CUDAGraph] = []
        try:
            graphs.append(torch.cuda.CUDAGraph())
            with torch.cuda.graph(graphs[0], stream=self.stream):
                faces = self.renderer.render(index, windows)
            graphs.append(torch.cuda.CUDAGraph())
            with torch.cuda.graph(graphs[1], pool=graphs[0].pool(), stream=self.stream):
                self.compositor.compose(index, faces, self._frame_out)
        except Exception as error:  # eager is correct, only slower: say why in the report
            self.capture = abandon_capture(graphs, self.device, error)
            return
        self._graphs, self._static_faces = (graphs[0], graphs[1]), faces

    def _warm_features(self) -> None:
        """Features and windows of silence: the first call of each kernel loads its module and
        plans (cuFFT), tens of milliseconds that would otherwise delay the first frame."""
        features = self.renderer.warmup()
        count = num_video_frames(self.renderer.warm_samples(), self.fps, SAMPLE_RATE)
        gather_windows(features, self.renderer.alignment.window_indices(features.shape[-1], count, self.fps, self.device))
        self._avatar_indices(0, count)

    def close(self) -> None:
        """Release the graphs and the runners' resources (an RTX engine's runtime cache is saved)."""
        self._graphs = self._static_faces = None
        self.renderer.release()

    # ------------------------------------------------------------------ helpers

    def _on_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def handoff(self) -> Iterator[None]:
        """Run the block on the pipeline's stream for a caller on its own stream (a server thread,
        a user's code): the pipeline's stream first waits for the caller's queued work (a chunk
        made on the device), and the caller's stream then waits for the block's work (frames it
        reads). Both waits are on the GPU, not the host; without them the two streams race."""
        if self.stream is None:
            yield
            return
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            yield
        caller.wait_stream(self.stream)

    def _to_device(self, audio: Audio) -> torch.Tensor:
        """The audio on the pipeline's device. To a GPU host audio goes through pinned memory
        without blocking: a plain copy waits for all the work queued on the stream (in a server,
        every session's step so far) before the host can go on."""
        if isinstance(audio, torch.Tensor) and audio.device == self.device:
            return audio
        host = audio.cpu() if isinstance(audio, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        self.profiler.count_copy(host, "h2d")
        if self.device.type != "cuda":
            return host.to(self.device)
        # The caching host allocator keeps the pinned block until the copy has run.
        return host.pin_memory().to(self.device, non_blocking=True)

    def _batches(self, start: int, avatar_index: torch.Tensor, windows: torch.Tensor) -> Iterator[FrameBatch]:
        """Frames start .. start + len(windows) - 1, a batch at a time (offline and streaming alike)."""
        batch_size = self.options.batch_size
        for offset in range(0, len(windows), batch_size):
            stop = offset + batch_size
            yield self._batch(start + offset, avatar_index[offset:stop], windows[offset:stop])

    def _render_due(self, due: DueFrames | None) -> Iterator[FrameBatch]:
        if due is not None:
            with self._on_stream():
                yield from self._batches(due.start, due.avatar_index, due.windows)

    def render_frames(self, avatar_index: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Finished frames (n, H, W, 3) uint8 BGR for avatar frames (n,) and windows (n, C, window),
        rendered a batch at a time, as a tensor of their own (the batches' buffer is reused)."""
        with self._on_stream():
            return torch.cat([batch.frames.clone() for batch in self._batches(0, avatar_index, windows)])

    def _batch(self, start: int, avatar_index: torch.Tensor, windows: torch.Tensor) -> FrameBatch:
        """Render and paste back one batch (frames start .. start + n - 1)."""
        count = len(avatar_index)
        frames = range(start, start + count)
        with self.profiler.stage("render", frames):
            faces = self.render(avatar_index, windows)
        with self.profiler.stage("compose", frames):
            if self._graphs is not None:
                self._graphs[1].replay()
                out = self._frame_out
            elif self.device.type == "cuda":  # the batch lies in the fixed buffers
                out = self.compositor.compose(self._static_avatar_index, faces, self._frame_out)
            else:
                out = self.compositor.compose(avatar_index, faces, self._frame_out[:count])
        self.profiler.frames_ready(frames)
        return FrameBatch(start, out[:count])

    def render(self, avatar_index: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """The renderer alone on one batch, as the pipeline runs it (on a GPU: through the fixed
        buffers, replaying the captured graph where there is one); call it on the pipeline's stream."""
        if self.device.type != "cuda":
            return self.renderer.render(avatar_index, windows)
        count = len(avatar_index)
        self._static_avatar_index[:count].copy_(avatar_index)
        self._static_windows[:count].copy_(windows)
        if self._graphs is None:
            return self.renderer.render(self._static_avatar_index, self._static_windows)
        self._graphs[0].replay()
        return self._static_faces

    # ------------------------------------------------------------------ offline

    def run(self, audio: Audio, sample_rate: int) -> Iterator[FrameBatch]:
        """All frames for ``audio`` (float32 mono at ``sample_rate``; numpy, or a tensor on any device), batch by batch."""
        audio = _check_audio(audio, sample_rate)
        self.renderer.reset()
        self.profiler.start()
        self.profiler.audio_available(samples=resampled_length(len(audio), sample_rate, SAMPLE_RATE))
        with self._on_stream():
            with self.profiler.stage("resample"):
                wav16k = resample(self._to_device(audio), sample_rate, SAMPLE_RATE)
            total = wav16k.shape[-1]
            count = num_video_frames(total, self.fps, SAMPLE_RATE)
            with self.profiler.stage("features", range(count)):
                features = self.renderer.features(wav16k)
            with self.profiler.stage("windows", range(count)):
                alignment = self.renderer.alignment
                indices = alignment.window_indices(features.shape[-1], count, self.fps, self.device)
                windows = gather_windows(features, indices)  # (N, C, W), one gather
                avatar_index = self._avatar_indices(0, count)
            yield from self._batches(0, avatar_index, windows)

    def _avatar_indices(self, start: int, count: int) -> torch.Tensor:
        return self.avatar.frame_indices(start, count, self.device)  # made on the device: no copy

    # ---------------------------------------------------------------- streaming

    def stream_chunks(self, chunks: Iterable[Audio], sample_rate: int) -> Iterator[FrameBatch]:
        """Frames as soon as their windows are complete, for audio arriving in chunks (e.g. 20-40 ms).

        The output equals ``run`` on the concatenated audio, frame for frame (within float
        rounding: the features are computed piece by piece). See `Utterance`.
        """
        utterance = self.utterance(sample_rate)
        for chunk in chunks:
            yield from utterance.push(chunk)
        yield from utterance.finish()

    def utterance(self, sample_rate: int, avatar_start: int = 0) -> "Utterance":
        """A new utterance streamed into this pipeline (the previous one is forgotten); its frame 0
        shows the avatar's frame for output frame ``avatar_start`` (a session's frames go on moving)."""
        return Utterance(self, sample_rate, avatar_start)

    def speech_frames(self, speech: Iterable[Audio], sample_rate: int, on_audio: Callable[[Audio], None] = lambda chunk: None) -> Iterator[FrameBatch]:
        """``stream_chunks`` for speech made as it is spoken (a voice's ``speak_stream``): the
        utterance starts the run's clock before the text is spoken; each chunk is drawn on the
        pipeline's stream, timed as the ``tts`` stage (the last call finds the end) and marked
        ready, then handed to ``on_audio`` (e.g. the MP4's audio track) and pushed, and its
        frames come before the next chunk is made. A chunk on the device stays there."""
        return self.stream_chunks(self._spoken(speech, sample_rate, on_audio), sample_rate)

    def _spoken(self, speech: Iterable[Audio], sample_rate: int, on_audio: Callable[[Audio], None]) -> Iterator[Audio]:
        chunks = iter(speech)
        while True:
            with self._on_stream():  # on_audio too: a copy of the chunk waits for the voice's work
                with self.profiler.stage("tts"):
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                self.profiler.speech_ready(len(chunk) / sample_rate)
                on_audio(chunk)
            yield chunk

    # -------------------------------------------------------------------- sinks

    def write_video(self, audio: Audio, sample_rate: int, out: str | Path, *, streaming_chunk_ms: float | None = None) -> ProfileReport:
        """Run (offline, or streaming in chunks of ``streaming_chunk_ms``) and write an H.264 MP4 with the audio.

        A waveform tensor on the pipeline's device feeds the features where it lies; the
        muxer's copy goes to the host once (chunks arriving in a stream are host audio)."""
        from talkrt.runtime.media import VideoWriter

        audio = _check_audio(audio, sample_rate)
        host_audio = audio.cpu().numpy() if isinstance(audio, torch.Tensor) else audio
        if streaming_chunk_ms:
            audio = host_audio
            step = max(1, round(sample_rate * streaming_chunk_ms / 1000))
            batches = self.stream_chunks((audio[i : i + step] for i in range(0, len(audio), step)), sample_rate)
        else:
            batches = self.run(audio, sample_rate)
        with VideoWriter(out, fps=self.fps, audio=host_audio, sample_rate=sample_rate) as writer:
            self._encode(batches, writer)
        return self._report(len(audio) / sample_rate)

    def write_speech_video(self, speech: Iterable[Audio], sample_rate: int, out: str | Path) -> ProfileReport:
        """Write an H.264 MP4 of speech made as it is spoken (`speech_frames`): each chunk joins the
        audio track when it is made, and the frames go to the encoder as they come; the report has
        the text run's numbers (text to first audio and frame, steady real-time factor)."""
        from talkrt.runtime.media import VideoWriter

        def to_track(chunk: Audio) -> None:
            if isinstance(chunk, torch.Tensor) and chunk.device.type != "cpu":
                self.profiler.count_copy(chunk, "d2h")  # the muxer's copy; the features read the chunk where it lies
            writer.append_audio(chunk)

        with VideoWriter(out, fps=self.fps, sample_rate=sample_rate, audio_follows=True) as writer:
            self._encode(self.speech_frames(speech, sample_rate, to_track), writer)
        return self._report(writer.audio_samples / sample_rate)

    def _report(self, audio_seconds: float) -> ProfileReport:
        return self.profiler.report(audio_seconds, float(self.fps), alignment=self.renderer.alignment, cuda_graph=self.capture)

    def _encode(self, batches: Iterable[FrameBatch], writer) -> None:
        """Frames to ``writer`` (a VideoWriter) through the overlapped sink, as the batches come."""
        from talkrt.runtime.sink import OverlappedSink
        from talkrt.runtime.yuv import bgr_to_i420, i420_shape

        # On a GPU the frames become yuv420p there: half the bytes to copy, and the
        # encoding thread only encodes. On the CPU libswscale converts faster than torch.
        on_gpu = self.device.type == "cuda"
        height, width = self.compositor.frame_shape[:2]
        write = writer.write_i420 if on_gpu else writer.write_frames
        shape = i420_shape(height, width) if on_gpu else self.compositor.frame_shape
        sink = OverlappedSink(lambda _, images: write(images), shape, self.options.batch_size, self.device, self.profiler)
        try:
            for batch in batches:
                with self._on_stream():
                    images = batch.frames
                    if on_gpu:
                        with self.profiler.stage("encode", range(batch.start, batch.start + len(images))):
                            images = bgr_to_i420(images)
                    sink.push(batch.start, images)
        finally:
            sink.close()

    def frames(self, audio: Audio, sample_rate: int) -> torch.Tensor:
        """Every frame as one (N, H, W, 3) uint8 tensor on the host (tests, raw output)."""
        # copy=True: on the CPU .cpu() would return the reused buffer itself.
        return torch.cat([batch.frames.to("cpu", copy=True) for batch in self.run(audio, sample_rate)])


def _check_avatar_for(avatar: Avatar, renderer: str, crop_size: tuple[int, int] | None = None) -> None:
    if avatar.renderer != renderer or (crop_size is not None and avatar.crop_size != crop_size):
        height, width = avatar.crop_size
        raise TalkrtError(
            f"the avatar was prepared for {avatar.renderer} ({width}x{height} crops), not {renderer}: "
            f"prepare it again with `talkrt avatar prepare --renderer {renderer}`"
        )


def _check_audio(audio: Audio, sample_rate: int, allow_empty: bool = False) -> Audio:
    """A float32 waveform, as numpy or, when given as a tensor, as a tensor on its own device (TTS
    output stays where it was made: no host round trip before the features)."""
    if isinstance(audio, torch.Tensor):
        if audio.dim() != 1 or not audio.is_floating_point():
            raise TalkrtError(f"audio must be a mono float waveform, shape (samples,); got {audio.dtype} {tuple(audio.shape)}")
        if len(audio) == 0 and not allow_empty:
            raise TalkrtError("the audio is empty")
        if not bool(torch.isfinite(audio).all()):  # one sync, before any work starts
            raise TalkrtError("the audio contains NaN or infinite samples")
        return audio.to(torch.float32)
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise TalkrtError(f"audio must be mono, shape (samples,); got {audio.shape} (average the channels first)")
    if sample_rate <= 0:
        raise TalkrtError(f"bad sample rate {sample_rate}")
    if len(audio) == 0 and not allow_empty:
        raise TalkrtError("the audio is empty")
    if not np.all(np.isfinite(audio)):
        raise TalkrtError("the audio contains NaN or infinite samples")
    return audio.astype(np.float32, copy=False)



def pipeline_from_files(
    avatar_path: str | Path | Avatar,
    renderer_name: str,
    backend: str,
    models: str | Path | dict | None,
    device: str,
    options: PipelineOptions,
    renderer_options=None,
    **option_fields,
) -> Pipeline:
    """Build a pipeline from an avatar file and the renderer's models.

    ``models`` is the generator's file (engine, ONNX file, or checkpoint for torch; None:
    random weights with torch) or a dict role -> file (the family's roles).
    ``renderer_options`` (the family's RendererOptions) or ``option_fields`` (their fields, e.g.
    ``features=`` or ``pca=``, and ``torch_dtype=``) go to :func:`talkrt.runtime.renderers.build_renderer`.
    """
    from talkrt.runtime.renderers import build_renderer

    avatar = avatar_path if isinstance(avatar_path, Avatar) else Avatar.load(avatar_path)
    _check_avatar_for(avatar, renderer_name)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TalkrtError("--device cuda: no CUDA GPU is visible")
    if not isinstance(models, dict):
        models = {"generator": models}
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    renderer = build_renderer(renderer_name, backend, models, device, options=renderer_options, **option_fields)
    return Pipeline(avatar, renderer, options, stream)


_AVATAR_CYCLE_ROOM = 64  # frames a step can take from the cached avatar indices (more are computed)


class Utterance:
    """One utterance streamed through a pipeline: ``push`` chunks as they arrive, ``finish`` at its end.

    Every step costs the same however long the stream has run: each chunk goes to the
    device once, the resampler and the renderer's feature stream keep only the history
    their filters and frames need, and the windows are cut from the few feature columns
    that future frames can still read (talkrt.runtime.feature_stream).

    A step is ``feed`` (resample, and the feature stream's ``take``: the segment its columns are
    computed from), the columns' computation, then ``due`` (the stream's ``accept``, the windows).
    ``step(chunk, defer_features=True)`` stops after ``feed`` and returns the utterance, so that a
    caller with many utterances computes all their ``segment``s in one call (talkrt.runtime.batching).
    """

    def __init__(self, pipeline: Pipeline, sample_rate: int, avatar_start: int = 0) -> None:
        from talkrt.runtime.feature_stream import FeatureWindow
        from talkrt.runtime.incremental import FramedFeatureStream, StreamingResampler

        self.pipeline, self.sample_rate, self.avatar_start = pipeline, sample_rate, avatar_start
        self.alignment = pipeline.renderer.alignment
        self.resampler = StreamingResampler(sample_rate, SAMPLE_RATE, pipeline.device)
        pipeline.renderer.reset()
        self.features = pipeline.renderer.feature_stream()
        # A stream that computes its columns from a segment of its own (see ``feed``), or another.
        self._takes = isinstance(self.features, FramedFeatureStream)
        self.segment: torch.Tensor | None = None  # of the step fed last, for the features' compute
        self._columns: torch.Tensor | None = None  # of the step fed last, from a stream without take
        self._frames = range(0)  # the frames the step fed last completes
        self.window = FeatureWindow(self.alignment, pipeline.fps, SAMPLE_RATE)
        self.samples = 0  # final 16 kHz samples so far
        self.done = 0  # frames yielded so far
        self.finished = False
        # The avatar's frames go back and forth with this period (talkrt.runtime.avatar.ping_pong_indices):
        # a step slices its indices from one period (and room for a step's frames) made once,
        # where making them would cost a few kernel launches per step.
        self._avatar_period = max(1, 2 * pipeline.avatar.num_frames - 2)
        with pipeline._on_stream():  # where the steps read it
            self._avatar_cycle = pipeline._avatar_indices(0, self._avatar_period + _AVATAR_CYCLE_ROOM)
        pipeline.profiler.start()

    def push(self, chunk: Audio) -> Iterator[FrameBatch]:
        """The frames ``chunk`` (float32 mono at the utterance's rate, host or device) completes."""
        yield from self.pipeline._render_due(self.step(chunk))

    def finish(self) -> Iterator[FrameBatch]:
        """The frames that needed the end of the audio."""
        yield from self.pipeline._render_due(self.step(None))

    def step(self, chunk: Audio | None, defer_features: bool = False) -> DueFrames | Utterance | None:
        """``push`` (``chunk``) or ``finish`` (None) up to the renderer: the inputs of the frames the
        step completes, for a caller that renders them in one batch with other utterances' frames
        (talkrt.runtime.batching); None when it completes none. With ``defer_features``: the
        utterance, once fed, when it has a ``segment`` for the caller to compute and hand to ``due``."""
        if self.finished:
            if chunk is None:
                return None
            raise TalkrtError("this utterance has finished: start another one")
        if chunk is None:
            self.finished = True
        else:
            with self.pipeline._on_stream():  # a device chunk may still be in the making on the pipeline's stream
                chunk = _check_audio(chunk, self.sample_rate, allow_empty=True)
            if not len(chunk):
                return None
        if not self.feed(chunk):
            return None
        if self.segment is None:
            return self.due(None)
        if defer_features:
            return self
        with self.pipeline._on_stream(), self.pipeline.profiler.stage("features", self._frames):
            columns = self.features.compute(self.segment)
        return self.due(columns)

    def feed(self, chunk: torch.Tensor | np.ndarray | None) -> bool:
        """The first part of a step, for a checked ``chunk`` (None: the end): resampled and taken by
        the feature stream, whose ``compute`` of ``segment`` (None: nothing to compute) makes the
        step's columns. A stream without ``take`` computes them here. False: no samples yet, and
        the step ends here."""
        pipeline, profiler = self.pipeline, self.pipeline.profiler
        with pipeline._on_stream():
            with profiler.stage("resample"):
                wav16k = self.resampler.finish() if chunk is None else self.resampler.push(pipeline._to_device(chunk))
            self.samples += len(wav16k)
            if self.samples == 0:
                return False
            profiler.audio_chunk_arrived(self.samples)
            ready = self.alignment.frames_ready(self.samples, pipeline.fps, self.samples if self.finished else None)
            self._frames = range(self.done, ready)
            with profiler.stage("features", self._frames):
                if self._takes:
                    self.segment, self._columns = self.features.take(wav16k), None
                else:
                    self.segment, self._columns = None, self.features.push(wav16k)
        return True

    def due(self, columns: torch.Tensor | None) -> DueFrames | None:
        """The rest of a ``feed``ed step, given the stream's ``compute`` of ``segment`` (None when it
        is None): the inputs of the frames it completes, as ``step`` returns them."""
        pipeline, done, ready = self.pipeline, self._frames.start, self._frames.stop
        with pipeline._on_stream():
            with pipeline.profiler.stage("features", self._frames):
                self.window.append(self.features.accept(columns) if self._takes else self._columns)
                if self.finished:
                    self.window.append(self.features.finish())
            if ready <= done:
                return None
            with pipeline.profiler.stage("windows", self._frames):
                windows = self.window.windows(done, ready, self.window.end)  # gathered: a tensor of its own
                avatar_index = self._avatar_indices(self.avatar_start + done, ready - done)
            self.done = ready
            self.window.forget_before(ready)
        return DueFrames(done, avatar_index, windows)

    def state_sizes(self) -> dict[str, int]:
        """What the utterance holds between steps (input samples the resampler keeps, 16 kHz samples
        the feature stream keeps, feature columns): bounded, however long the stream runs."""
        columns = self.window.columns
        return {
            "resampler_samples": self.resampler.state_samples,
            "feature_samples": self.features.state_samples,
            "feature_columns": 0 if columns is None else columns.shape[-1],
        }

    def _avatar_indices(self, start: int, count: int) -> torch.Tensor:
        """`Pipeline._avatar_indices`, a view of the cycle where it holds them."""
        offset = start % self._avatar_period
        if offset + count > len(self._avatar_cycle):
            return self.pipeline._avatar_indices(start, count)
        return self._avatar_cycle[offset : offset + count]

