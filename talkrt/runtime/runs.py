"""A pipeline run from the files a user names: the wiring `talkrt run` and `talkrt profile` share,
here where tests reach it. Every input and output is checked before anything loads."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from talkrt.errors import TalkrtError, TalkrtWarning
from talkrt.models.registry import DEFAULT_RENDERER, get_renderer_family, renderer_names
from talkrt.outputs import check_outputs
from talkrt.runtime.profiler import ProfileReport, report_paths

@dataclass(frozen=True)
class RunRequest:
    """What to render: speech (``audio`` or ``text`` with a ``tts`` voice), an avatar, the renderer
    and its graph files, where it runs and what it writes (``out``; the report's files too when
    profiling). ``option_files`` are the renderer's own (its family's ``option_files``)."""

    avatar: Path
    out: Path = Path("out.mp4")
    audio: Path | None = None
    text: str | None = None
    tts: Path | None = None
    channel: int | None = None
    boxes: Path | None = None
    landmarks: Path | None = None
    renderer: str = DEFAULT_RENDERER
    backend: str = "ort"
    model: Path | None = None
    engines: Path | None = None
    device: str = "auto"
    fps: str = "25"
    batch_size: int = 8
    stream_chunk_ms: float | None = None
    option_files: Mapping[str, Path | None] = field(default_factory=dict)
    trust: bool = False
    skip_unknown: bool = False
    report: Path | None = None  # profile too: the report's stem (STEM.json, STEM.md, STEM.png)
    stream_context_ms: float | None = None  # a transformer's history when streaming (default: the one its features declare)

    @property
    def report_files(self) -> tuple[Path, ...]:
        return report_paths(self.report) if self.report else ()


def check_request(request: RunRequest) -> None:
    """The choices and numbers of a request, before any file is read."""
    if (request.audio is None) == (request.text is None):
        raise TalkrtError("give exactly one of --audio FILE or --text TEXT")
    if request.channel is not None and request.audio is None:
        raise TalkrtError("--channel picks a channel of --audio; it does not apply to --text")
    if request.text is not None and request.tts is None:
        raise TalkrtError("--text needs a voice: --tts DIR, a voice's directory from `talkrt export`")
    check_pipeline_choices(request)


def check_pipeline_choices(request: RunRequest) -> None:
    """The pipeline's choices in a request (renderer, backend, option files, device, frame rate,
    streaming), whatever the speech: a server checks these before it loads anything."""
    from talkrt.engines.devices import check_device_name
    from talkrt.runtime.align import MAX_FPS, as_fps

    family = get_renderer_family(request.renderer)
    from talkrt.engines.runners import RUNTIME_BACKENDS

    if request.backend not in RUNTIME_BACKENDS:
        raise TalkrtError(f"unknown backend {request.backend!r}; choose trt, ort or torch")
    accepted = {option.name for option in family.option_files}
    for name, path in request.option_files.items():
        if path is not None and name not in accepted:
            owners = [r for r in renderer_names() if name in {o.name for o in get_renderer_family(r).option_files}]
            raise TalkrtError(f"--{name} is for --renderer {' or '.join(owners)}")
    check_device_name(request.device)
    try:
        rate = as_fps(request.fps)
    except ValueError:
        raise TalkrtError(f"--fps {request.fps!r}: give a frame rate such as 25, 30000/1001 or 29.97") from None
    if rate > MAX_FPS:
        raise TalkrtError(f"--fps {request.fps}: at most {MAX_FPS} frames per second")
    chunk = request.stream_chunk_ms
    if chunk is not None and not (math.isfinite(chunk) and 0 < chunk <= 10_000):
        raise TalkrtError(f"--stream-chunk-ms {chunk}: give a chunk length above 0 and at most 10000 ms (20-40 is typical)")
    if request.stream_context_ms is not None and chunk is None:
        raise TalkrtError("--stream-context-ms sets the history of streamed features: add --stream-chunk-ms N")


def render_to_file(request: RunRequest, note: Callable[[str], None] = lambda text: None) -> ProfileReport:
    """Check everything, then speak (text) or read (audio), prepare or load the avatar, render on
    one pipeline and write the MP4 (and the report's files when profiling); ``note`` gets the lines worth telling (device chosen, random roles).
    Text with ``stream_chunk_ms`` is spoken as it is rendered: the voice's chunks go to the pipeline
    and the MP4 as they are made (`Pipeline.write_speech_video`)."""
    from talkrt.runtime.media import read_audio

    check_request(request)
    models = checked_models(request, {"--out": request.out, "--report": list(request.report_files)})
    options = renderer_options(request, models)
    chunks = None
    if request.text is not None:
        from talkrt.models.registry import voice

        speech = voice(request.tts)
        synthesizer, manifest = speech.load_voice(request.tts, request.backend, request.device, note)
        if request.stream_chunk_ms:
            chunks, rate = speech.speak_stream(request.text, synthesizer, manifest, skip_unknown=request.skip_unknown, chunk_ms=request.stream_chunk_ms)
        else:
            samples, rate, seconds = speech.speak(request.text, synthesizer, manifest, skip_unknown=request.skip_unknown)
            note(f"tts: {len(samples) / rate:.2f} s of speech in {seconds * 1000:.0f} ms")
    else:
        samples, rate = read_audio(request.audio, channel=request.channel)
    pipeline = open_pipeline(request, models, note, options=options)
    try:
        if request.stream_context_ms is not None:
            pipeline.renderer.use_context(request.stream_context_ms)
        if chunks is None:
            report = pipeline.write_video(samples, rate, request.out, streaming_chunk_ms=request.stream_chunk_ms)
        else:
            report = pipeline.write_speech_video(chunks, rate, request.out)
            if report.text_to_first_audio_ms is not None:
                note(f"tts: {report.audio_seconds:.2f} s of speech streamed, the first after {report.text_to_first_audio_ms:.0f} ms")
    finally:
        pipeline.close()
    if request.report:
        report.save_all(request.report)
    return report


def checked_models(request: RunRequest, outputs: Mapping[str, Path | list[Path]]) -> dict[str, Path | None]:
    """The renderer's graph files (role -> file) of a checked request, after its ``outputs`` and
    every input have passed `check_outputs`."""
    from talkrt.runtime.renderers import check_renderer_models, models_for

    models = models_for(request.renderer, request.backend, request.model, request.engines)
    check_renderer_models(request.renderer, request.backend, models)
    check_outputs(
        outputs,
        {"--audio": request.audio, "--avatar": request.avatar, "--boxes": request.boxes, "--model": request.model,
         "--engines": [p for p in models.values() if p], "--tts": request.tts, "--landmarks": request.landmarks,
         **{f"--{name}": path for name, path in request.option_files.items()}},
    )
    return models


def renderer_options(request: RunRequest, models: Mapping[str, Path | None]):
    """The renderer's options read from the request's option files (its family's RendererOptions);
    warns when ``--model`` with torch leaves roles on random weights."""
    from talkrt.runtime.renderers import random_roles

    family = get_renderer_family(request.renderer)
    options = family.renderer_options({k: v for k, v in request.option_files.items() if v is not None} or None, request.trust)
    if request.backend == "torch" and request.model is not None:
        unloaded = random_roles(request.renderer, models, options)
        if unloaded:
            warnings.warn(f"--model loads the generator; {', '.join(unloaded)} run with random weights in --backend torch (use exported graphs with ort/trt)", TalkrtWarning, stacklevel=3)
    return options


def open_pipeline(request: RunRequest, models: Mapping[str, Path | None], note: Callable[[str], None] = lambda text: None,
                  profile: bool = True, options=None):
    """The request's pipeline, built once: the avatar loaded or prepared, the device chosen (told
    to ``note``), the renderer's ``models`` loaded with its ``options`` (default: read now, see
    `renderer_options`); ``profile=False`` for a long-lived pipeline that is measured by its
    user (a server)."""
    from talkrt.engines.devices import engine_builder, resolve_device
    from talkrt.runtime.pipeline import PipelineOptions, pipeline_from_files

    if options is None:
        options = renderer_options(request, models)
    avatar = load_avatar(request.avatar, request.boxes, request.renderer, request.landmarks)
    engine = models["generator"] if request.backend == "trt" else None
    choice = resolve_device(request.device, request.backend, engine_backend=engine_builder(engine) if engine else None)
    note(f"device: {choice.device} ({choice.reason})")
    return pipeline_from_files(avatar, request.renderer, request.backend, dict(models), str(choice.device),
                               PipelineOptions(fps=request.fps, batch_size=request.batch_size, profile=profile), options)


def load_avatar(path: Path, boxes: Path | None, renderer: str, landmarks: Path | None):
    """A prepared avatar file (.npz), or an image or video prepared now for ``renderer``."""
    from talkrt.runtime.avatar import Avatar, prepare_avatar

    if path.suffix == ".npz":
        return Avatar.load(path)
    return prepare_avatar(path, boxes=boxes, renderer=renderer, landmarks=landmarks)


def speak_to_file(text: str, out: Path, voices: Mapping[str, Path | None], device: str = "auto", speaker: int | None = None, seed: int = 0,
                  sample_format: str = "pcm16", skip_unknown: bool = False, note: Callable[[str], None] = lambda text: None,
                  ref_audio: Path | None = None, ref_text: str | None = None, stream: bool = False) -> str:
    """Speak ``text`` with the one voice directory given in ``voices`` (backend -> directory) and write
    a WAV file; returns what was written (length, rate and the time the synthesis took). A cloning
    voice speaks as ``ref_audio`` with its transcript ``ref_text``; ``stream``: the voice's chunks
    as it makes them, with the time to the first."""
    import time

    import torch

    from talkrt.models.registry import voice
    from talkrt.runtime.media import write_wav

    flags = {"trt": "--engines", "ort": "--onnx", "torch": "--torch"}  # `talkrt tts`'s names of the backends' directories
    check_outputs({"--out": out}, {flags[backend]: directory for backend, directory in voices.items()} | {"--ref-audio": ref_audio})
    chosen = [(directory, backend) for backend, directory in voices.items() if directory is not None]
    if len(chosen) != 1:
        raise TalkrtError(f"give exactly one of {', '.join(f'{flag} DIR' for flag in flags.values())} (a voice's directory from `talkrt export`)")
    if (ref_audio is None) != (ref_text is None):
        raise TalkrtError("give --ref-audio FILE and --ref-text TEXT together (the reference speech and what is said in it)")
    directory, backend = chosen[0]
    speech = voice(directory)
    synthesizer, manifest = speech.load_voice(directory, backend, device, note, reference=(ref_audio, ref_text) if ref_audio else None)
    if not stream:
        waveform, rate, took = speech.speak(text, synthesizer, manifest, speaker, seed, skip_unknown)
        write_wav(out, waveform.cpu().numpy(), rate, sample_format)
        return f"{out}: {len(waveform) / rate:.2f} s at {rate} Hz in {took * 1000:.0f} ms"
    start = time.perf_counter()
    chunks, rate = speech.speak_stream(text, synthesizer, manifest, speaker, seed, skip_unknown)
    parts, first = [], None
    for chunk in chunks:
        parts.append(chunk.cpu())  # waits for the chunk: the time of the first is when it could be played
        first = first if first is not None else time.perf_counter() - start
    waveform = torch.cat(parts) if parts else torch.zeros(0)
    write_wav(out, waveform.numpy(), rate, sample_format)
    took = time.perf_counter() - start
    return f"{out}: {len(waveform) / rate:.2f} s at {rate} Hz in {took * 1000:.0f} ms, streamed in {len(parts)} chunks, the first after {1000 * (first or took):.0f} ms"
