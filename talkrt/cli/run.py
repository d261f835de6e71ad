"""The pipeline's commands: `talkrt run` / `profile` and `serve` (one option group), `avatar prepare`, `demo` and `tts`."""

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import App, BatchOpt, DeviceOpt, SeedOpt, SkipUnknownOpt, TrustOpt, app, console, note, variant, with_group, wrote
from talkrt.models.registry import DEFAULT_RENDERER, get_renderer_family, renderer_names
from talkrt.runtime.runs import RunRequest, render_to_file, speak_to_file

RendererOpt = Annotated[str, typer.Option("--renderer", help=", ".join(f"{name} ({get_renderer_family(name).crop})" for name in renderer_names()) + ".")]
LandmarksOpt = Annotated[Optional[Path], typer.Option("--landmarks", help="68-point landmarks for a renderer that crops around them: OpenFace CSV, .npy or .json; default: a template in the face boxes.")]

app.add_typer(avatar_app := App(help="Avatars: frames, face boxes, crops and masks, prepared once.", no_args_is_help=True), name="avatar")


@avatar_app.command("prepare")
def avatar_prepare(
    source: Annotated[Path, typer.Argument(help="An image or a video of the face.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Avatar file to write (.npz).")],
    boxes: Annotated[Optional[Path], typer.Option(help="Face boxes (JSON, CSV or text: x1 y1 x2 y2 per frame); default: the bundled OpenCV detector.")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Use at most this many frames of a video.")] = None,
    renderer: RendererOpt = DEFAULT_RENDERER,
    landmarks: LandmarksOpt = None,
) -> None:
    """Detect (or read) faces, crop them for a renderer and save everything in one file."""
    from talkrt.runtime.avatar import prepare_avatar_file
    with console.status(f"preparing the {renderer} avatar from {source}"):
        wrote(prepare_avatar_file(source, out, boxes=boxes, max_frames=max_frames, renderer=renderer, landmarks=landmarks))


def pipeline_options(
    avatar: Annotated[Path, typer.Option("--avatar", help="Avatar file from `talkrt avatar prepare`, or an image or video to prepare now.")],
    boxes: Annotated[Optional[Path], typer.Option("--boxes", help="Face boxes for an --avatar image or video.")] = None,
    renderer: RendererOpt = DEFAULT_RENDERER,
    backend: Annotated[str, typer.Option("--backend", help="trt (engine), ort (ONNX Runtime) or torch.")] = "ort",
    model: Annotated[Optional[Path], typer.Option("--model", help="The renderer's generator: engine (trt), ONNX file (ort) or checkpoint (torch; default random weights).")] = None,
    engines: Annotated[Optional[Path], typer.Option("--engines", help="Directory with the renderer's graphs as <name>.engine / <name>.onnx (`talkrt export` names).")] = None,
    device: DeviceOpt = "auto",
    fps: Annotated[str, typer.Option("--fps", help="Output frame rate: 25, 30, 29.97, 30000/1001, ...")] = "25",
    batch_size: BatchOpt = 8,
    tts_dir: Annotated[Optional[Path], typer.Option("--tts", help="A voice's directory from `talkrt export` (run with the same --backend), to speak --text.")] = None,
    landmarks: LandmarksOpt = None,
    trust_checkpoint: TrustOpt = False,
    **option_files: Optional[Path],
) -> RunRequest:
    """The options of a pipeline (`run`, `profile`, `serve`): avatar, renderer and graphs, device, voice, the renderers' option files."""
    return RunRequest(avatar, boxes=boxes, landmarks=landmarks, renderer=renderer, backend=backend, model=model, engines=engines, device=device, fps=fps,
                      batch_size=batch_size, tts=tts_dir, option_files=option_files, trust=trust_checkpoint)


pipeline_group = with_group(pipeline_options, "pipeline", {f.name: f"{name}: {f.help}." for name in renderer_names() for f in get_renderer_family(name).option_files})


@pipeline_group
def run(
    pipeline: RunRequest,
    out: Annotated[Path, typer.Option("--out", "-o", help="MP4 to write.")] = Path("out.mp4"),
    report: Annotated[Optional[Path], typer.Option("--report", help="Also profile: writes STEM.json, STEM.md and STEM.png.")] = None,
    audio: Annotated[Optional[Path], typer.Option("--audio", help="Speech: any common audio format and rate, or a video's audio track.")] = None,
    channel: Annotated[Optional[int], typer.Option("--channel", help="Use this audio channel (0-based) instead of averaging the channels.")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Text to speak with the voice in --tts.")] = None,
    stream_chunk_ms: Annotated[Optional[float], typer.Option("--stream-chunk-ms", help="Stream the audio in chunks of this many ms (20-40 typical) instead of offline; with --text, the speech is made as it is rendered, the first chunk this long.")] = None,
    stream_context_ms: Annotated[Optional[float], typer.Option("--stream-context-ms", help="Streaming with features that see a sliding context (HuBERT-like): ms of history each step sees (default: the features' declared context).")] = None,
    skip_unknown: SkipUnknownOpt = False,
) -> None:
    """Speech in, lip-synced video out: one pipeline on one device (with --report, profiled)."""
    request = replace(pipeline, out=out, report=report, audio=audio, channel=channel, text=text, stream_chunk_ms=stream_chunk_ms, stream_context_ms=stream_context_ms, skip_unknown=skip_unknown)
    with console.status(f"rendering with {request.renderer} ({request.backend})"):
        result = render_to_file(request, note)
    if report:
        console.print(result.rich_table())
        wrote(", ".join(str(p) for p in request.report_files))
    wrote(f"{out}: {result.frames} frames, {result.render_fps:.1f} fps, real-time factor {result.real_time_factor:.2f}, first frame after {result.time_to_first_frame_ms:.0f} ms")


app.command("run")(run)
app.command("profile")(variant(run, "profile", "Run the pipeline and report per-stage, per-frame latency: table, JSON, Markdown and a PNG plot.", out=Path("profile.mp4"), report=Path("profile")))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where the models, avatar, speech, video and report go.")] = Path("out"),
    seconds: Annotated[float, typer.Option(min=0.5, max=60, help="Length of the synthetic speech.")] = 4.0,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 8,
) -> None:
    """The whole chain on built-in random-weight models, a synthetic face and synthetic speech (CUDA if present)."""
    from talkrt.demo import run_demo
    with console.status("talkrt demo") as status:
        result = run_demo(out_dir, seconds, device, batch_size, step=lambda text: status.update(text))
    for line in result.notes:
        note(line)
    console.print(result.report.rich_table())
    wrote(result.headline)


@app.command()
def tts(
    text: Annotated[str, typer.Argument(help="What to say (IPA phonemes for voices trained on them).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="WAV file to write.")] = Path("speech.wav"),
    engines: Annotated[Optional[Path], typer.Option("--engines", help="Exported voice directory with engines (`talkrt build DIR`).")] = None,
    onnx_dir: Annotated[Optional[Path], typer.Option("--onnx", help="Exported voice directory, run with ONNX Runtime.")] = None,
    torch_dir: Annotated[Optional[Path], typer.Option("--torch", help="Exported voice directory, run in PyTorch.")] = None,
    speaker: Annotated[Optional[int], typer.Option(help="Speaker id of a multi-speaker model.")] = None,
    seed: SeedOpt = 0,
    sample_format: Annotated[str, typer.Option("--format", help="pcm16 or float32.")] = "pcm16",
    device: DeviceOpt = "auto",
    skip_unknown: SkipUnknownOpt = False,
    ref_audio: Annotated[Optional[Path], typer.Option("--ref-audio", help="A cloning voice (GPT-SoVITS): the speaker's reference speech, 3-10 s (default: the voice's reference.wav).")] = None,
    ref_text: Annotated[Optional[str], typer.Option("--ref-text", help="What is said in --ref-audio.")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Speak chunk by chunk as the voice makes them and tell the time to the first.")] = False,
) -> None:
    """Speak TEXT with an exported voice and write a WAV file."""
    wrote(speak_to_file(text, out, {"trt": engines, "ort": onnx_dir, "torch": torch_dir}, device, speaker, seed, sample_format, skip_unknown, note, ref_audio, ref_text, stream))


@pipeline_group
def serve(
    pipeline: RunRequest,
    host: Annotated[str, typer.Option("--host", help="Address to bind; the default serves this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8000,
    token: Annotated[Optional[str], typer.Option("--token", envvar="TALKRT_TOKEN", help="Every request must send Authorization: Bearer TOKEN (or ?token=TOKEN).")] = None,
    max_sessions: Annotated[int, typer.Option("--max-sessions", help="Live sessions open at once; more are refused (WebSocket close 1013).")] = 4,
    max_load: Annotated[float, typer.Option("--max-load", help="Refuse new sessions while the device is busy more than this share of the time (0-1).")] = 0.8,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest /v1/render body, in MB.")] = 50.0,
    batch_sessions: Annotated[bool, typer.Option("--batch-sessions/--one-at-a-time", help="Render the frames due in all sessions in shared batches, or each session's on its own.")] = True,
) -> None:
    """Serve live sessions (WebSocket /v1/stream) and renders (POST /v1/render) from models loaded once (with --tts, sessions may send text)."""
    from talkrt.serve.config import ServeConfig
    from talkrt.serve.server import serve as run_server
    config = ServeConfig(pipeline, pipeline.tts, host, port, token, max_sessions, max_body_mb=max_body_mb, max_load=max_load, batch_sessions=batch_sessions)
    run_server(config, note, ready=lambda url: console.print(f"talkrt serve: listening on {url} (Ctrl-C or SIGTERM to stop)", highlight=False))
    console.print("talkrt serve: stopped", highlight=False)


app.command("serve")(serve)
