"""The `talkrt` command line: parse, call the library, print with rich.

User mistakes end with one red line on stderr and a non-zero exit; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from talkrt.errors import TalkrtError, TalkrtWarning
from talkrt.outputs import check_outputs

app = typer.Typer(
    name="talkrt",
    help="Export, build and run talking-head models as TensorRT engines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
export_app = typer.Typer(help="PyTorch -> validated ONNX, one command per model family.", no_args_is_help=True)
app.add_typer(export_app, name="export")

console = Console()
errors = Console(stderr=True)
_state = {"debug": False}

F = TypeVar("F", bound=Callable)


def _show_warning(show, message, category, filename, lineno, file=None, line=None) -> None:
    """A TalkrtWarning is one `warning:` line on stderr; other warnings go to `show`."""
    if issubclass(category, TalkrtWarning):
        errors.print(f"[yellow]warning:[/] {escape(' '.join(str(message).split()))}", highlight=False, soft_wrap=True)
    else:
        show(message, category, filename, lineno, file, line)


def user_errors(func: F) -> F:
    """Turn TalkrtError into one line and an exit code; unexpected errors into one line too, unless --debug."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
                return func(*args, **kwargs)
        except TalkrtError as exc:
            if _state["debug"]:
                raise
            errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            errors.print("[red]terminated[/]" if terminated else "[red]interrupted[/]")
            raise typer.Exit(143 if terminated else 130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if _state["debug"]:
                raise
            errors.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} (rerun with --debug for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False) -> None:
    _state["debug"] = debug


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


# --------------------------------------------------------------------------- export

CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Official checkpoint file.")]
RandomInitOpt = Annotated[bool, typer.Option("--random-init", help="Random weights (tests, demos, benchmarks).")]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-checkpoint", help="Allow arbitrary unpickling for checkpoints that hold more than tensors. Only for files you trust."),
]
SeedOpt = Annotated[int, typer.Option(help="Seed for --random-init weights.")]
ValidateOpt = Annotated[bool, typer.Option("--validate/--no-validate", help="Check ONNX Runtime against PyTorch before writing.")]


def _weights_source(checkpoint: Optional[Path], random_init: bool) -> Optional[str]:
    if (checkpoint is None) == (not random_init):
        raise TalkrtError("give exactly one of --checkpoint PATH or --random-init")
    return None if random_init else str(checkpoint)


def run_export(family: str, weights: Optional[str], out: Path, trust: bool, seed: int, validate: bool, **spec_options) -> None:
    """Export ``family`` from the checkpoint ``weights`` (None: random weights from ``seed``)."""
    from talkrt.export import get_spec

    check_outputs({"--out": out}, {"--checkpoint": weights})
    spec = get_spec(family, **spec_options)
    with console.status(f"loading {spec.name} {'from ' + weights if weights else 'with random weights'}") as status:
        module = spec.build_module(weights, trust) if weights else spec.build_module(None, seed=seed)
        from talkrt.export.onnx import export_onnx

        report = export_onnx(spec, module, out, validate=validate, step=lambda text: status.update(text))
    if report.validation:
        table = Table(title=f"parity: ONNX Runtime vs PyTorch (atol {spec.tolerance.atol:g}, rtol {spec.tolerance.rtol:g})")
        for column in ("output", "shape", "max abs error", "relative error", "within"):
            table.add_column(column)
        for result in report.validation:
            shape = ", ".join(f"{k}={v}" for k, v in result.point.items())
            table.add_row(result.output, shape, f"{result.max_abs:.3g}", f"{result.max_rel:.3g}", "[green]yes[/]" if result.ok else "[red]no[/]")
        console.print(table)
    nodes = sum(report.op_counts.values())
    _say(
        f"{out} ({_mib(out.stat().st_size)}, {nodes} nodes, opset {spec.opset}, {spec.exporter} exporter) in {report.seconds:.1f} s",
        prefix="[green]wrote[/] ",
    )


def _model_command(family: str, doc: str) -> None:
    """Register `talkrt export <family>` for a one-graph family: a checkpoint or random weights in, one ONNX file out."""

    def command(
        out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
        checkpoint: CheckpointOpt = None,
        random_init: RandomInitOpt = False,
        trust_checkpoint: TrustOpt = False,
        seed: SeedOpt = 0,
        validate: ValidateOpt = True,
    ) -> None:
        run_export(family, _weights_source(checkpoint, random_init), out, trust_checkpoint, seed, validate)

    command.__doc__ = doc
    export_app.command(family)(user_errors(command))


_model_command("wav2lip", "Wav2Lip generator (wav2lip.pth / wav2lip_gan.pth), 96x96, dynamic batch.")
_model_command("dinet", "DINet(3, 15, 29) renderer (clip_training_DINet_256mouth.pth), 416x320 face, exact 4-D AdaAT.")
_model_command("dinet-mapper", "DINet_optimized's audio mapping MLP (wav2vecDS.pt): 25 Hz CTC emissions -> DeepSpeech-like features.")
_model_command("dhlive-audio", "DH_live Audio2Feature (audio.pkl), one video frame per call with the LSTM state as inputs and outputs.")


@export_app.command("dhlive-render")
@user_errors
def export_dhlive_render(
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    graph: Annotated[str, typer.Option(help="generator (per frame) or reference (once per avatar).")] = "generator",
    checkpoint: CheckpointOpt = None,
    random_init: RandomInitOpt = False,
    trust_checkpoint: TrustOpt = False,
    seed: SeedOpt = 0,
    validate: ValidateOpt = True,
) -> None:
    """DH_live renderer DINet_five_Ref(6, 30) (render.pth), 256x256, as reference encoder and per-frame generator."""
    if graph not in ("generator", "reference"):
        raise TalkrtError(f"--graph {graph!r}: choose generator or reference")
    run_export("dhlive-render", _weights_source(checkpoint, random_init), out, trust_checkpoint, seed, validate, graph=graph)


def _export_encoder(architecture: str, out: Path, preset: Optional[str], checkpoint: Optional[Path], random_init: bool, layer: Optional[int], normalize: Optional[bool], trust: bool, seed: int, validate: bool) -> None:
    source = _weights_source(checkpoint, random_init)
    run_export(architecture, source, out, trust, seed, validate, preset=preset, layer=layer, normalize=normalize, checkpoint=source)


PresetOpt = Annotated[Optional[str], typer.Option(help="chinese-hubert-base, chinese-hubert-large, hubert-base-ls960, wav2vec2-base-960h, tiny-hubert, tiny-wav2vec2.")]
LayerOpt = Annotated[Optional[int], typer.Option(help="Hidden layer to output (0 = before the first transformer layer; default: the last).")]
NormalizeOpt = Annotated[
    Optional[bool],
    typer.Option("--normalize/--no-normalize", help="Per-utterance normalisation inside the graph (default: the checkpoint's preprocessor_config.json, else the preset's)."),
]
EncoderCheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="transformers checkpoint directory (config.json + weights).")]


def _encoder_command(architecture: str, model_class: str) -> None:
    """Register `talkrt export <architecture>`; HuBERT and Wav2Vec2 take the same options."""

    def command(
        out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
        preset: PresetOpt = None,
        checkpoint: EncoderCheckpointOpt = None,
        random_init: RandomInitOpt = False,
        layer: LayerOpt = None,
        normalize: NormalizeOpt = None,
        trust_checkpoint: TrustOpt = False,
        seed: SeedOpt = 0,
        validate: ValidateOpt = True,
    ) -> None:
        _export_encoder(architecture, out, preset, checkpoint, random_init, layer, normalize, trust_checkpoint, seed, validate)

    command.__doc__ = f"{model_class} speech encoder (transformers {model_class}Model), dynamic batch and samples."
    export_app.command(architecture)(user_errors(command))


_encoder_command("hubert", "Hubert")
_encoder_command("wav2vec2", "Wav2Vec2")


AsrPresetOpt = Annotated[Optional[str], typer.Option(help="hubert-large-ls960-ft (default) or tiny-hubert-asr (tests).")]


@export_app.command("hubert-asr")
@user_errors
def export_hubert_asr(
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    preset: AsrPresetOpt = None,
    checkpoint: EncoderCheckpointOpt = None,
    random_init: RandomInitOpt = False,
    normalize: NormalizeOpt = None,
    trust_checkpoint: TrustOpt = False,
    seed: SeedOpt = 0,
    validate: ValidateOpt = True,
) -> None:
    """HuBERT CTC recognizer (transformers HubertForCTC, e.g. facebook/hubert-large-ls960-ft): 50 Hz emissions over torchaudio HUBERT_ASR_LARGE's 29 labels."""
    source = _weights_source(checkpoint, random_init)
    run_export("hubert-asr", source, out, trust_checkpoint, seed, validate, preset=preset, normalize=normalize, checkpoint=source)


@export_app.command("mel")
@user_errors
def export_mel(
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    validate: ValidateOpt = True,
) -> None:
    """Wav2Lip log-mel spectrogram: 16 kHz waveform -> 80 mel bins at 80 Hz, dynamic batch and samples (no weights, so no checkpoint)."""
    run_export("mel", None, out, False, 0, validate)


@export_app.command("vits")
@user_errors
def export_vits_command(
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Directory for encoder.onnx, decoder.onnx, full.onnx and manifest.json.")],
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="An MMS (transformers) directory, or an original VITS generator checkpoint (pretrained_ljs.pth, G_*.pth).")] = None,
    random_init: RandomInitOpt = False,
    preset: Annotated[Optional[str], typer.Option(help="mms-tts-eng, ljs-base, ljs-nosdp, vctk-base or tiny (random weights).")] = None,
    trust_checkpoint: TrustOpt = False,
    seed: SeedOpt = 0,
    validate: ValidateOpt = True,
) -> None:
    """VITS text to speech as three graphs: encoder | length regulation (runtime) | decoder, plus one graph for ONNX Runtime."""
    from talkrt.models.vits.specs import export_vits

    source = _weights_source(checkpoint, random_init)
    check_outputs({"--out-dir": out_dir}, {"--checkpoint": source}, directories=["--out-dir"])
    with console.status("exporting VITS") as status:
        manifest = export_vits(out_dir, preset=preset, checkpoint=source, trust=trust_checkpoint, seed=seed, validate=validate, step=lambda text: status.update(text))
    files = ", ".join(manifest["files"].values())
    _say(f"{out_dir}: {files} and manifest.json ({manifest['sample_rate']} Hz, {manifest['num_speakers']} speaker(s), {manifest['source']})", prefix="[green]wrote[/] ")


# --------------------------------------------------------------------------- build


class _RichBuildProgress:
    """Shows TensorRT's build phases as progress bars."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.tasks: dict[str, tuple[int, int]] = {}  # phase -> (task id, steps)

    def phase_start(self, name: str, parent: str | None, num_steps: int) -> None:
        indent = "  " if parent else ""
        steps = max(num_steps, 1)
        self.tasks[name] = (self.progress.add_task(indent + name, total=steps), steps)

    def step_complete(self, name: str, step: int) -> None:
        if name in self.tasks:
            self.progress.update(self.tasks[name][0], completed=step + 1)

    def phase_finish(self, name: str) -> None:
        if name in self.tasks:
            self.progress.remove_task(self.tasks.pop(name)[0])


@app.command()
@user_errors
def build(
    onnx_file: Annotated[Path, typer.Argument(help="ONNX file (from talkrt export, or any graph with --profile for its dynamic dims).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Engine file to write (default: beside the ONNX, .engine).")] = None,
    backend: Annotated[str, typer.Option(help="auto, tensorrt (datacenter GPU) or tensorrt-rtx (RTX GPUs; builds without a GPU).")] = "auto",
    profile: Annotated[
        Optional[list[str]],
        typer.Option("--profile", help="NAME:MIN,OPT,MAX for a dynamic dim or input (e.g. batch:1,8,32 or face_sequences:1x6x96x96,...); repeatable."),
    ] = None,
    add_profile: Annotated[
        Optional[list[str]],
        typer.Option("--add-profile", help="Another optimization profile: overrides separated by ';', e.g. 'samples:3200,16000,32000'; repeatable."),
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32, fp16 (the spec's FP32 ops kept) or auto (FP16, with nodes moved back to FP32 until the spec's gates hold).")] = "fp32",
    calibration: Annotated[Optional[Path], typer.Option(help="Inputs for --precision auto (.npz keyed by input name; default: drawn from the spec).")] = None,
    compute_capability: Annotated[
        Optional[list[str]], typer.Option("--compute-capability", "--cc", help="TensorRT-RTX targets, e.g. 8.6,12.0 (default: 8.0,8.6,8.9,12.0, or the RTX GPU present).")
    ] = None,
    opt_level: Annotated[int, typer.Option(min=0, max=5, help="Builder optimization level.")] = 3,
    timing_cache: Annotated[Optional[Path], typer.Option(help="TensorRT timing cache: used if present, updated after the build.")] = None,
    hardware_compat: Annotated[str, typer.Option(help="TensorRT: none, ampere_plus or same_compute_capability.")] = "none",
    version_compatible: Annotated[bool, typer.Option(help="TensorRT: an engine later TensorRT versions can load (with the lean runtime).")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse and store engines in the engine cache ($TALKRT_CACHE, default ~/.cache/talkrt/engines).")] = True,
) -> None:
    """Build a serialized engine and its JSON sidecar from an ONNX file (reusing a matching one at once)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from talkrt.engines.build import BuildOptions, build_engine, compute_capability_list, sidecar_path
    from talkrt.engines.profiles import parse_profile_override

    options = BuildOptions(
        backend=backend,
        precision=precision,
        profile_overrides=tuple(parse_profile_override(p) for p in profile or ()),
        extra_profiles=tuple(tuple(parse_profile_override(p) for p in extra.split(";") if p.strip()) for extra in add_profile or ()),
        compute_capabilities=compute_capability_list(compute_capability or ()),
        optimization_level=opt_level,
        calibration=str(calibration) if calibration else None,
        timing_cache=str(timing_cache) if timing_cache else None,
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        cache=cache,
    )
    if onnx_file.is_dir():  # an exported VITS directory: its encoder and decoder
        from talkrt.models.vits.synth import build_vits_engines

        check_outputs({"DIR": onnx_file}, directories=["DIR"])
        with console.status(f"building the VITS engines in {onnx_file}"):
            manifest = build_vits_engines(onnx_file, options)
        _say(f"{', '.join(str(onnx_file / e) for e in manifest['engines'].values())} and updated {onnx_file / 'manifest.json'}", prefix="[green]wrote[/] ")
        return
    out = out or onnx_file.with_suffix(".engine")
    check_outputs({"--out": [out, sidecar_path(out)]}, {"ONNX_FILE": onnx_file, "--calibration": calibration})
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True) as bars:
        result = build_engine(onnx_file, out, options, _RichBuildProgress(bars))
    meta = result.metadata
    target = meta["target"]
    where = ", ".join("sm" + cc.replace(".", "") for cc in target["compute_capabilities"]) if "compute_capabilities" in target else f"{target['gpu']} (sm{target['compute_capability'].replace('.', '')})"
    for index, shapes_by_input in enumerate(meta["profiles"]):
        for name, shapes in shapes_by_input.items():
            low, opt, high = ("x".join(map(str, shapes[k])) for k in ("min", "opt", "max"))
            _say(f"  profile {index} {name}: min {low}  opt {opt}  max {high}")
    plan = meta["precision"]
    if plan["mode"] != "fp32":
        fp32 = plan.get("fp32_nodes", {})
        verdict = "gates hold" if plan.get("passed") else "[red]gates fail[/]"
        _say(f"  precision {plan['mode']}: {len(fp32)} nodes kept in FP32, {verdict}; {plan.get('applied_as', '')}")
    folding = meta.get("sanitize")  # absent from sidecars written before folding
    if folding:
        shown = f"[yellow]{escape(folding['fallback'])}[/]" if folding["fallback"] else f"{folding['nodes_before']} -> {folding['nodes_after']} nodes"
        _say(f"  constant folding ({folding['tool']}): {shown}")
    done = f"reused ({result.reused})" if result.reused else f"in {meta['build_seconds']:.1f} s"
    _say(
        f"{result.engine} ({_mib(meta['engine_bytes'])}, {meta['backend']['name']} {meta['backend']['version']}, "
        f"{plan['mode']}, for {where}) {done}; sidecar {result.sidecar.name}",
        prefix="[green]wrote[/] ",
    )


# --------------------------------------------------------------------------- tts


def _say(text: str, prefix: str = "", style: str = "") -> None:
    """Print ``text`` as it is (paths and hints may hold brackets, which rich reads as markup)
    after ``prefix`` (markup), in ``style``."""
    body = escape(text)
    console.print(prefix + (f"[{style}]{body}[/]" if style else body), highlight=False)


def _device(requested: str, backend: str, engine: Optional[Path] = None):
    """The device for this backend (see devices.resolve_device), printed with the reason."""
    from talkrt.engines.devices import engine_builder, resolve_device

    choice = resolve_device(requested, backend, engine_backend=engine_builder(engine) if backend == "trt" else None)
    _say(f"device: {choice.device} ({choice.reason})", style="dim")
    return choice.device


def _synthesizer(onnx_dir: Optional[Path], engines: Optional[Path], torch_dir: Optional[Path], device: str):
    from talkrt.models.vits.synth import VitsSynthesizer, read_manifest

    chosen = [(d, b) for d, b in ((engines, "trt"), (onnx_dir, "ort"), (torch_dir, "torch")) if d is not None]
    if len(chosen) != 1:
        raise TalkrtError("give exactly one of --engines DIR, --onnx DIR or --torch DIR (a directory from `talkrt export vits`)")
    directory, backend = chosen[0]
    return VitsSynthesizer.from_manifest(directory, backend=backend, device=_device(device, backend)), read_manifest(directory)


def _speak(text: str, synthesizer, manifest: dict, speaker: Optional[int], seed: int, skip_unknown: bool = False):
    """Text -> (float32 waveform where the voice ran, sample rate, seconds it took)."""
    import time

    import torch

    from talkrt.models.vits.text import text_to_ids

    ids = text_to_ids(text, manifest, skip_unknown)
    if not ids:
        raise TalkrtError("the text has no characters this voice can speak")
    start = time.perf_counter()
    waveform = synthesizer.synthesize(ids, speaker_id=speaker, seed=seed).float()
    if waveform.is_cuda:  # the time printed is the synthesis, not its launch
        torch.cuda.synchronize(waveform.device)
    return waveform, manifest["sample_rate"], time.perf_counter() - start


SkipUnknownOpt = Annotated[bool, typer.Option("--skip-unknown", help="Drop symbols the voice has no id for (they are refused otherwise).")]


@app.command()
@user_errors
def tts(
    text: Annotated[str, typer.Argument(help="What to say (IPA phonemes for original VITS checkpoints).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="WAV file to write.")] = Path("speech.wav"),
    engines: Annotated[Optional[Path], typer.Option("--engines", help="Exported VITS directory with engines (`talkrt build DIR`).")] = None,
    onnx_dir: Annotated[Optional[Path], typer.Option("--onnx", help="Exported VITS directory, run with ONNX Runtime.")] = None,
    torch_dir: Annotated[Optional[Path], typer.Option("--torch", help="Exported VITS directory, run in PyTorch.")] = None,
    speaker: Annotated[Optional[int], typer.Option(help="Speaker id of a multi-speaker model.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling noise.")] = 0,
    sample_format: Annotated[str, typer.Option("--format", help="pcm16 or float32.")] = "pcm16",
    device: DeviceOpt = "auto",
    skip_unknown: SkipUnknownOpt = False,
) -> None:
    """Speak TEXT with an exported VITS model and write a WAV file."""
    from talkrt.runtime.media import write_wav

    check_outputs({"--out": out}, {"--engines": engines, "--onnx": onnx_dir, "--torch": torch_dir})
    synthesizer, manifest = _synthesizer(onnx_dir, engines, torch_dir, device)
    waveform, rate, seconds = _speak(text, synthesizer, manifest, speaker, seed, skip_unknown)
    write_wav(out, waveform.cpu().numpy(), rate, sample_format)
    _say(f"{out}: {len(waveform) / rate:.2f} s at {rate} Hz in {seconds * 1000:.0f} ms", prefix="[green]wrote[/] ")


# --------------------------------------------------------------------------- avatar / run / profile / demo

avatar_app = typer.Typer(help="Avatars: frames, face boxes, crops and masks, prepared once.", no_args_is_help=True)
app.add_typer(avatar_app, name="avatar")


@avatar_app.command("prepare")
@user_errors
def avatar_prepare(
    source: Annotated[Path, typer.Argument(help="An image or a video of the face.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Avatar file to write (.npz).")],
    boxes: Annotated[Optional[Path], typer.Option(help="Face boxes (JSON, CSV or text: x1 y1 x2 y2 per frame); default: the bundled OpenCV detector.")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Use at most this many frames of a video.")] = None,
    renderer: Annotated[str, typer.Option("--renderer", help="wav2lip (96x96 boxes), dinet (416x320 around landmarks) or dhlive (256x256 around landmarks).")] = "wav2lip",
    landmarks: Annotated[Optional[Path], typer.Option(help="68-point landmarks for dinet / dhlive: OpenFace CSV, .npy or .json; default: a template in the face boxes.")] = None,
) -> None:
    """Detect (or read) faces, crop them for a renderer and save everything in one file."""
    from talkrt.runtime.avatar import prepare_avatar

    check_outputs({"--out": out}, {"SOURCE": source, "--boxes": boxes, "--landmarks": landmarks})
    with console.status(f"preparing the {renderer} avatar from {source}"):
        avatar = prepare_avatar(source, boxes=boxes, max_frames=max_frames, renderer=renderer, landmarks=landmarks)
        avatar.save(out)
    height, width = avatar.frame_size
    crop_h, crop_w = avatar.crop_size
    _say(f"{out}: {avatar.num_frames} frames of {width}x{height} at {avatar.fps} fps, {renderer} crops {crop_w}x{crop_h}", prefix="[green]wrote[/] ")


RENDERER_CHOICES = ("wav2lip", "dinet", "dhlive")


def _load_avatar(path: Path, boxes: Optional[Path], renderer: str, landmarks: Optional[Path]):
    from talkrt.runtime.avatar import Avatar, prepare_avatar

    if path.suffix == ".npz":
        return Avatar.load(path)
    return prepare_avatar(path, boxes=boxes, renderer=renderer, landmarks=landmarks)


def _models_for(backend: str, renderer: str, model: Optional[Path], engines: Optional[Path]) -> dict[str, Optional[Path]]:
    """Role -> file for each of the renderer's graphs: --model is the generator; --engines DIR holds <stem>.engine / .onnx."""
    from talkrt.runtime.renderers import RENDERER_GRAPHS

    graphs = RENDERER_GRAPHS[renderer]
    models: dict[str, Optional[Path]] = {role: None for role in graphs}
    models["generator"] = model
    if engines is not None:
        if backend == "torch":
            raise TalkrtError("--engines is for --backend trt or ort; --backend torch takes a checkpoint with --model")
        if not engines.is_dir():
            raise TalkrtError(f"--engines {engines} is not a directory")
        suffix = "engine" if backend == "trt" else "onnx"
        for role, (_, _, stem) in graphs.items():
            candidate = engines / f"{stem}.{suffix}"
            if models[role] is None and candidate.is_file():
                models[role] = candidate
    if backend != "torch" and models["generator"] is None:
        stem = graphs["generator"][2]
        where = f"{engines / stem}.{'engine' if backend == 'trt' else 'onnx'} not found" if engines else f"the {backend} backend needs --model FILE or --engines DIR"
        raise TalkrtError(f"{where}; export it with `talkrt export {graphs['generator'][0]}` (and `talkrt build` for trt)")
    return models


def _renderer_options(renderer: str, features: Optional[Path], pca: Optional[Path], trust: bool) -> dict:
    if features is not None and renderer != "dinet":
        raise TalkrtError("--features is for --renderer dinet (25 Hz DeepSpeech features)")
    if pca is not None and renderer != "dhlive":
        raise TalkrtError("--pca is for --renderer dhlive (DH_live's pca.pkl)")
    options: dict = {}
    if features is not None:
        options["features"] = _read_features(features)
    if renderer == "dhlive":
        from talkrt.models.dhlive.model import MouthPCA

        options["pca"] = MouthPCA.load(pca, trust) if pca is not None else MouthPCA.random()
    return options


def _read_features(path: Path):
    import numpy as np

    if not path.is_file():
        raise TalkrtError(f"features file {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise TalkrtError(f"features file {path} is not a .npy array: {error}") from None
    return array


def _check_run_options(device: str, fps: str, stream_chunk_ms: Optional[float]) -> None:
    """The numeric and device options, before anything loads."""
    import math

    from talkrt.engines.devices import check_device_name
    from talkrt.runtime.align import MAX_FPS, as_fps

    check_device_name(device)
    try:
        rate = as_fps(fps)
    except ValueError:
        raise TalkrtError(f"--fps {fps!r}: give a frame rate such as 25, 30000/1001 or 29.97") from None
    if rate > MAX_FPS:
        raise TalkrtError(f"--fps {fps}: at most {MAX_FPS} frames per second")
    if stream_chunk_ms is not None and not (math.isfinite(stream_chunk_ms) and 0 < stream_chunk_ms <= 10_000):
        raise TalkrtError(f"--stream-chunk-ms {stream_chunk_ms}: give a chunk length above 0 and at most 10000 ms (20-40 is typical)")


def _run_pipeline(audio: Optional[Path], text: Optional[str], avatar: Path, boxes: Optional[Path], renderer: str, backend: str, model: Optional[Path], engines: Optional[Path], device: str, fps: str, batch_size: int, stream_chunk_ms: Optional[float], out: Path, tts_dir: Optional[Path] = None, *, landmarks: Optional[Path] = None, features: Optional[Path] = None, pca: Optional[Path] = None, trust: bool = False, skip_unknown: bool = False, channel: Optional[int] = None, report_files: tuple = ()):
    from talkrt.runtime.media import read_audio
    from talkrt.runtime.pipeline import PipelineOptions, pipeline_from_files
    from talkrt.runtime.renderers import check_renderer_models

    if (audio is None) == (text is None):
        raise TalkrtError("give exactly one of --audio FILE or --text TEXT")
    if channel is not None and audio is None:
        raise TalkrtError("--channel picks a channel of --audio; it does not apply to --text")
    if text is not None and tts_dir is None:
        raise TalkrtError("--text needs a voice: --tts DIR, a directory from `talkrt export vits`")
    if renderer not in RENDERER_CHOICES:
        raise TalkrtError(f"unknown renderer {renderer!r}; available: {', '.join(RENDERER_CHOICES)}")
    if backend not in ("trt", "ort", "torch"):
        raise TalkrtError(f"unknown backend {backend!r}; choose trt, ort or torch")
    _check_run_options(device, fps, stream_chunk_ms)
    renderer_options = _renderer_options(renderer, features, pca, trust)
    models = _models_for(backend, renderer, model, engines)
    check_renderer_models(renderer, backend, models)
    check_outputs(
        {"--out": out, "--report": list(report_files)},
        {"--audio": audio, "--avatar": avatar, "--boxes": boxes, "--model": model, "--engines": [p for p in models.values() if p], "--tts": tts_dir,
         "--landmarks": landmarks, "--features": features, "--pca": pca},
    )
    if backend == "torch" and model is not None:
        shared = {"reference"} if renderer == "dhlive" else set()
        random_roles = [role for role in models if role not in {"generator", *shared} and not (role in ("asr", "mapper") and features is not None)]
        if random_roles:
            _say(f"--model loads the generator; {', '.join(random_roles)} run with random weights in --backend torch (use exported graphs with ort/trt)", prefix="[yellow]note[/]: ")
    if text is not None:
        voice = {"trt": "engines", "ort": "onnx_dir", "torch": "torch_dir"}[backend]
        synthesizer, manifest = _synthesizer(**{"onnx_dir": None, "engines": None, "torch_dir": None, voice: tts_dir}, device=device)
        samples, rate, seconds = _speak(text, synthesizer, manifest, None, 0, skip_unknown)
        _say(f"tts: {len(samples) / rate:.2f} s of speech in {seconds * 1000:.0f} ms")
    else:
        samples, rate = read_audio(audio, channel=channel)
    prepared = _load_avatar(avatar, boxes, renderer, landmarks)
    options = PipelineOptions(fps=fps, batch_size=batch_size)
    pipeline = pipeline_from_files(prepared, renderer, backend, models, _device(device, backend, models["generator"]), options, **renderer_options)
    try:
        with console.status(f"rendering {len(samples) / rate:.1f} s of speech with {renderer} ({backend}, {pipeline.device})"):
            return pipeline.write_video(samples, rate, out, streaming_chunk_ms=stream_chunk_ms)
    finally:
        pipeline.close()


AudioOpt = Annotated[Optional[Path], typer.Option("--audio", help="Speech: any common audio format and rate, or a video's audio track.")]
TextOpt = Annotated[Optional[str], typer.Option("--text", help="Text to speak with the VITS voice in --tts.")]
TtsOpt = Annotated[Optional[Path], typer.Option("--tts", help="VITS directory from `talkrt export vits` (run with the same --backend).")]
AvatarOpt = Annotated[Path, typer.Option("--avatar", help="Avatar file from `talkrt avatar prepare`, or an image or video to prepare now.")]
BoxesOpt = Annotated[Optional[Path], typer.Option("--boxes", help="Face boxes for an --avatar image or video.")]
RendererOpt = Annotated[str, typer.Option("--renderer", help="wav2lip, dinet or dhlive.")]
LandmarksOpt = Annotated[Optional[Path], typer.Option("--landmarks", help="68-point landmarks for an --avatar video (dinet, dhlive): OpenFace CSV, .npy or .json.")]
FeaturesOpt = Annotated[Optional[Path], typer.Option("--features", help="dinet: precomputed 25 Hz DeepSpeech features, (frames, 29) .npy; default: the hubert-asr + dinet-mapper graphs.")]
PcaOpt = Annotated[Optional[Path], typer.Option("--pca", help="dhlive: DH_live's mouth PCA (pca.pkl with --trust-checkpoint, or .npz mean/components); default: a random stand-in.")]
RunTrustOpt = Annotated[bool, typer.Option("--trust-checkpoint", help="Allow unpickling files that need it (DH_live's pca.pkl).")]
BackendOpt = Annotated[str, typer.Option("--backend", help="trt (engine), ort (ONNX Runtime) or torch.")]
ModelOpt = Annotated[Optional[Path], typer.Option("--model", help="The renderer's generator: engine (trt), ONNX file (ort) or checkpoint (torch; default random weights).")]
EnginesOpt = Annotated[Optional[Path], typer.Option("--engines", help="Directory with the renderer's graphs as <name>.engine / <name>.onnx: wav2lip; dinet, hubert-asr, dinet-mapper; dhlive-render-generator, dhlive-render-reference, dhlive-audio.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cuda or cpu.")]
FpsOpt = Annotated[str, typer.Option("--fps", help="Output frame rate: 25, 30, 29.97, 30000/1001, ...")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Frames rendered per batch.")]
ChunkOpt = Annotated[Optional[float], typer.Option("--stream-chunk-ms", help="Stream the audio in chunks of this many ms (20-40 typical) instead of offline.")]
ChannelOpt = Annotated[Optional[int], typer.Option("--channel", help="Use this audio channel (0-based) instead of averaging the channels.")]


@app.command()
@user_errors
def run(
    avatar: AvatarOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="MP4 to write.")] = Path("out.mp4"),
    audio: AudioOpt = None,
    channel: ChannelOpt = None,
    text: TextOpt = None,
    boxes: BoxesOpt = None,
    renderer: RendererOpt = "wav2lip",
    backend: BackendOpt = "ort",
    model: ModelOpt = None,
    engines: EnginesOpt = None,
    device: DeviceOpt = "auto",
    fps: FpsOpt = "25",
    batch_size: BatchOpt = 8,
    stream_chunk_ms: ChunkOpt = None,
    tts_dir: TtsOpt = None,
    landmarks: LandmarksOpt = None,
    features: FeaturesOpt = None,
    pca: PcaOpt = None,
    trust_checkpoint: RunTrustOpt = False,
    skip_unknown: SkipUnknownOpt = False,
) -> None:
    """Speech in, lip-synced video out: one pipeline on one device."""
    report = _run_pipeline(audio, text, avatar, boxes, renderer, backend, model, engines, device, fps, batch_size, stream_chunk_ms, out, tts_dir,
                           landmarks=landmarks, features=features, pca=pca, trust=trust_checkpoint, skip_unknown=skip_unknown, channel=channel)
    _say(f"{out}: {report.frames} frames, {report.render_fps:.1f} fps, real-time factor {report.real_time_factor:.2f}, first frame after {report.time_to_first_frame_ms:.0f} ms", prefix="[green]wrote[/] ")


@app.command()
@user_errors
def profile(
    avatar: AvatarOpt,
    audio: AudioOpt = None,
    channel: ChannelOpt = None,
    text: TextOpt = None,
    boxes: BoxesOpt = None,
    renderer: RendererOpt = "wav2lip",
    backend: BackendOpt = "ort",
    model: ModelOpt = None,
    engines: EnginesOpt = None,
    device: DeviceOpt = "auto",
    fps: FpsOpt = "25",
    batch_size: BatchOpt = 8,
    stream_chunk_ms: ChunkOpt = None,
    report: Annotated[Path, typer.Option("--report", help="Report stem: writes STEM.json, STEM.md and STEM.png.")] = Path("profile"),
    out: Annotated[Path, typer.Option("--out", "-o", help="MP4 to write along the way.")] = Path("profile.mp4"),
    tts_dir: TtsOpt = None,
    landmarks: LandmarksOpt = None,
    features: FeaturesOpt = None,
    pca: PcaOpt = None,
    trust_checkpoint: RunTrustOpt = False,
    skip_unknown: SkipUnknownOpt = False,
) -> None:
    """Run the pipeline and report per-stage, per-frame latency: table, JSON, Markdown and a PNG plot."""
    from talkrt.demo import report_paths, save_report

    result = _run_pipeline(audio, text, avatar, boxes, renderer, backend, model, engines, device, fps, batch_size, stream_chunk_ms, out, tts_dir,
                           landmarks=landmarks, features=features, pca=pca, trust=trust_checkpoint, skip_unknown=skip_unknown, channel=channel, report_files=report_paths(report))
    console.print(result.rich_table())
    paths = save_report(result, report)
    _say(", ".join(str(p) for p in paths), prefix="[green]wrote[/] ")


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
    for note in result.notes:
        _say(note, style="dim")
    console.print(result.report.rich_table())
    _say(
        f"{result.video} ({result.report.frames} frames; {result.backend} on {result.device}) and the profile: "
        + ", ".join(str(p) for p in (result.report_json, result.report_markdown, result.plot)),
        prefix="[green]wrote[/] ",
    )


# --------------------------------------------------------------------------- inspect / doctor


@app.command()
@user_errors
def inspect(
    file: Annotated[Path, typer.Argument(help="An ONNX file or an engine (with its .json sidecar).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Inputs, outputs, dims, metadata and op counts of an ONNX file; the sidecar of an engine."""
    from talkrt.inspection import describe

    info = describe(file)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    if info["kind"] == "engine":
        sidecar = info["sidecar"]
        table = Table(title=f"engine {file} ({_mib(info['bytes'])})", show_header=False)
        for key, value in sidecar.items():
            table.add_row(key, value if isinstance(value, str) else json.dumps(value))
        console.print(table)
        return
    _say(f"{_mib(info['bytes'])}, opset {info['opset']}, {info['nodes']} nodes, {info['parameters']:,} parameters, producer {info['producer']}", prefix=f"[bold]{escape(str(file))}[/]: ")
    io_table = Table(title="inputs and outputs")
    for column in ("", "name", "dtype", "dims", "convention"):
        io_table.add_column(column)
    meta = info["metadata"]
    for kind in ("inputs", "outputs"):
        for tensor in info[kind]:
            dims = "x".join(str(d) for d in tensor["dims"])
            io_table.add_row(kind[:-1], tensor["name"], tensor["dtype"], dims, meta.get(f"talkrt.tensor.{tensor['name']}", ""))
    console.print(io_table)
    ops = Table(title="op counts")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, count in info["op_counts"].items():
        ops.add_row(op, str(count))
    console.print(ops)
    if meta:
        table = Table(title="metadata")
        table.add_column("key")
        table.add_column("value", overflow="fold")
        for key, value in meta.items():
            table.add_row(key, value)
        console.print(table)


@app.command()
@user_errors
def check(
    onnx_file: Annotated[Path, typer.Argument(help="The FP32 ONNX graph (the reference).")],
    candidate: Annotated[str, typer.Option("--candidate", help="fp16 or auto (the plan `talkrt build --precision` would use), an .onnx file, or an engine (run on the GPU).")] = "fp16",
    engine: Annotated[Optional[Path], typer.Option("--engine", help="Shorthand for --candidate ENGINE.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Inputs (.npz keyed by input name; default: drawn from the spec).")] = None,
    save_inputs: Annotated[Optional[Path], typer.Option("--save-inputs", help="Write the inputs compared on, as `polygraphy run --save-inputs` does.")] = None,
    save_outputs: Annotated[Optional[Path], typer.Option("--save-outputs", help="Write every runner's outputs, as `polygraphy run --save-outputs` does.")] = None,
) -> None:
    """Verdict table: the candidate against FP32 on the model's task-level gates (PSNR, cosine, SNR, max abs)."""
    from talkrt.errors import ValidationFailed
    from talkrt.precision.check import check as run_check

    with console.status(f"checking {engine or candidate} against {onnx_file}"):
        result = run_check(onnx_file, str(engine) if engine else candidate, str(calibration) if calibration else None, save_inputs=save_inputs, save_outputs=save_outputs)
    table = Table(title=f"{result.candidate} vs FP32 {onnx_file.name}")
    for column in ("gate", "metric", "threshold", "value", "verdict"):
        table.add_column(column)
    for row in result.rows:
        value = row["value"]
        shown = value if isinstance(value, str) else f"{value:.6g}"
        table.add_row(row["gate"], row["metric"], f"{row['threshold']:g}", shown, "[green]pass[/]" if row["passed"] else "[red]FAIL[/]")
    console.print(table)
    for path, what in ((save_inputs, "inputs"), (save_outputs, f"outputs of {', '.join(result.runs)}")):
        if path:
            _say(f"{what} to {path}", prefix="[green]wrote[/] ")
    if not result.passed:
        raise ValidationFailed(f"{result.candidate} fails {sum(not r['passed'] for r in result.rows)} of {len(result.rows)} gates against FP32")
    console.print("[green]as good as FP32 on every gate[/]")


@app.command()
@user_errors
def doctor() -> None:
    """What is installed (torch, CUDA, ONNX Runtime, TensorRT, TensorRT-RTX, PyAV) and what each enables."""
    from talkrt.doctor import run_checks

    table = Table(title="talkrt doctor")
    for column in ("component", "status", "enables"):
        table.add_column(column)
    for check in run_checks():
        mark = "[green]✓[/]" if check.ok else "[yellow]✗[/]"
        table.add_row(f"{mark} {check.component}", escape(check.status), escape(check.enables))
    console.print(table)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: it unwinds like Ctrl-C, so temporary files are removed."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: Optional[list[str]] = None) -> int:
    """The console entry point: usage mistakes (a value out of range, an unknown option) are one
    line and exit 2, like every other mistake; SIGTERM cleans up as Ctrl-C does."""
    import signal

    # click's UsageError (BadParameter's base), whether typer vendors click or not
    usage_error = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "UsageError")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(args=argv, standalone_mode=False)
    except usage_error as exc:
        command = exc.ctx.command_path if exc.ctx else "talkrt"
        errors.print(f"[bold red]error:[/] {escape(exc.format_message())} (see `{escape(command)} --help`)", highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:  # Ctrl-C or SIGTERM outside a command (while parsing)
        errors.print("[red]interrupted[/]")
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
