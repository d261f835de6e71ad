"""`talkrt run` / `profile` (one option group), `avatar prepare`, `demo` and `tts`."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from talkrt.cli.common import BatchOpt, DeviceOpt, SeedOpt, SkipUnknownOpt, TrustOpt, app, command, console, note, say, user_errors, variant, wrote
from talkrt.models.registry import DEFAULT_RENDERER, get_renderer_family, renderer_names
from talkrt.outputs import check_outputs

_RENDERERS = ", ".join(f"{name} ({get_renderer_family(name).crop})" for name in renderer_names())
_OPTION_FILES = {o.name: (name, o.help) for name in renderer_names() for o in get_renderer_family(name).option_files}
FeaturesOpt = Annotated[Optional[Path], typer.Option("--features", help=f"{_OPTION_FILES['features'][0]}: {_OPTION_FILES['features'][1]}.")]
PcaOpt = Annotated[Optional[Path], typer.Option("--pca", help=f"{_OPTION_FILES['pca'][0]}: {_OPTION_FILES['pca'][1]}.")]
RendererOpt = Annotated[str, typer.Option("--renderer", help=f"{_RENDERERS}.")]
LandmarksOpt = Annotated[Optional[Path], typer.Option("--landmarks", help="68-point landmarks for a renderer that crops around them: OpenFace CSV, .npy or .json; default: a template in the face boxes.")]

avatar_app = typer.Typer(help="Avatars: frames, face boxes, crops and masks, prepared once.", no_args_is_help=True)
app.add_typer(avatar_app, name="avatar")


@avatar_app.command("prepare")
@user_errors
def avatar_prepare(
    source: Annotated[Path, typer.Argument(help="An image or a video of the face.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Avatar file to write (.npz).")],
    boxes: Annotated[Optional[Path], typer.Option(help="Face boxes (JSON, CSV or text: x1 y1 x2 y2 per frame); default: the bundled OpenCV detector.")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Use at most this many frames of a video.")] = None,
    renderer: RendererOpt = DEFAULT_RENDERER,
    landmarks: LandmarksOpt = None,
) -> None:
    """Detect (or read) faces, crop them for a renderer and save everything in one file."""
    from talkrt.runtime.avatar import prepare_avatar

    check_outputs({"--out": out}, {"SOURCE": source, "--boxes": boxes, "--landmarks": landmarks})
    with console.status(f"preparing the {renderer} avatar from {source}"):
        avatar = prepare_avatar(source, boxes=boxes, max_frames=max_frames, renderer=renderer, landmarks=landmarks)
        avatar.save(out)
    (height, width), (crop_h, crop_w) = avatar.frame_size, avatar.crop_size
    wrote(f"{out}: {avatar.num_frames} frames of {width}x{height} at {avatar.fps} fps, {renderer} crops {crop_w}x{crop_h}")


def run(
    avatar: Annotated[Path, typer.Option("--avatar", help="Avatar file from `talkrt avatar prepare`, or an image or video to prepare now.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="MP4 to write.")] = Path("out.mp4"),
    report: Annotated[Optional[Path], typer.Option("--report", help="Also profile: writes STEM.json, STEM.md and STEM.png.")] = None,
    audio: Annotated[Optional[Path], typer.Option("--audio", help="Speech: any common audio format and rate, or a video's audio track.")] = None,
    channel: Annotated[Optional[int], typer.Option("--channel", help="Use this audio channel (0-based) instead of averaging the channels.")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Text to speak with the voice in --tts.")] = None,
    boxes: Annotated[Optional[Path], typer.Option("--boxes", help="Face boxes for an --avatar image or video.")] = None,
    renderer: RendererOpt = DEFAULT_RENDERER,
    backend: Annotated[str, typer.Option("--backend", help="trt (engine), ort (ONNX Runtime) or torch.")] = "ort",
    model: Annotated[Optional[Path], typer.Option("--model", help="The renderer's generator: engine (trt), ONNX file (ort) or checkpoint (torch; default random weights).")] = None,
    engines: Annotated[Optional[Path], typer.Option("--engines", help="Directory with the renderer's graphs as <name>.engine / <name>.onnx (`talkrt export` names).")] = None,
    device: DeviceOpt = "auto",
    fps: Annotated[str, typer.Option("--fps", help="Output frame rate: 25, 30, 29.97, 30000/1001, ...")] = "25",
    batch_size: BatchOpt = 8,
    stream_chunk_ms: Annotated[Optional[float], typer.Option("--stream-chunk-ms", help="Stream the audio in chunks of this many ms (20-40 typical) instead of offline; with --text, the speech is made as it is rendered, the first chunk this long.")] = None,
    stream_context_ms: Annotated[Optional[float], typer.Option("--stream-context-ms", help="Streaming with HuBERT-like features (DINet): ms of history each step sees (default: the features' declared context, 2000).")] = None,
    tts_dir: Annotated[Optional[Path], typer.Option("--tts", help="A voice's directory from `talkrt export` (run with the same --backend).")] = None,
    landmarks: LandmarksOpt = None,
    features: FeaturesOpt = None,
    pca: PcaOpt = None,
    trust_checkpoint: TrustOpt = False,
    skip_unknown: SkipUnknownOpt = False,
) -> None:
    """Speech in, lip-synced video out: one pipeline on one device (with --report, profiled)."""
    from talkrt.demo import report_paths, save_report
    from talkrt.runtime.runs import RunRequest, render_to_file

    request = RunRequest(avatar, out, audio, text, tts_dir, channel, boxes, landmarks, renderer, backend, model, engines, device, fps, batch_size, stream_chunk_ms,
                         {"features": features, "pca": pca}, trust_checkpoint, skip_unknown, report_paths(report) if report else (), stream_context_ms)
    with console.status(f"rendering with {renderer} ({backend})"):
        result = render_to_file(request, note)
    if report:
        console.print(result.rich_table())
        wrote(", ".join(str(p) for p in save_report(result, report)))
    wrote(f"{out}: {result.frames} frames, {result.render_fps:.1f} fps, real-time factor {result.real_time_factor:.2f}, first frame after {result.time_to_first_frame_ms:.0f} ms")


command(app, "run", run)
command(app, "profile", variant(run, "profile", "Run the pipeline and report per-stage, per-frame latency: table, JSON, Markdown and a PNG plot.",
                                 out=Path("profile.mp4"), report=Path("profile")))


@app.command()
@user_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where the models, avatar, speech, video and report go.")] = Path("out"),
    seconds: Annotated[float, typer.Option(min=0.5, max=60, help="Length of the synthetic speech.")] = 4.0,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 8,
) -> None:
    """The whole chain on built-in random-weight models, a synthetic face and synthetic speech (CUDA if present)."""
    from talkrt.demo import run_demo

    check_outputs({"--out-dir": out_dir}, directories=["--out-dir"])
    with console.status("talkrt demo") as status:
        result = run_demo(out_dir, seconds, device, batch_size, step=lambda text: status.update(text))
    for line in result.notes:
        say(line, style="dim")
    console.print(result.report.rich_table())
    paths = ", ".join(str(p) for p in (result.report_json, result.report_markdown, result.plot))
    wrote(f"{result.video} ({result.report.frames} frames; {result.backend} on {result.device}) and the profile: {paths}")


@app.command()
@user_errors
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
) -> None:
    """Speak TEXT with an exported voice and write a WAV file."""
    from talkrt.runtime.runs import speak_to_file

    check_outputs({"--out": out}, {"--engines": engines, "--onnx": onnx_dir, "--torch": torch_dir})
    seconds, rate, took = speak_to_file(text, out, {"trt": engines, "ort": onnx_dir, "torch": torch_dir}, device, speaker, seed, sample_format, skip_unknown, note)
    wrote(f"{out}: {seconds:.2f} s at {rate} Hz in {took * 1000:.0f} ms")
