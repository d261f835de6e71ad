"""`talkrt demo`: the whole chain on built-in random-weight models, a synthetic face and synthetic speech.

Random weights make the mouth move meaninglessly; the point is the machinery:
export, engine build, avatar preparation, the pipeline, the MP4 and the profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from talkrt.optional import available
from talkrt.runtime.synthetic import SAMPLE_RATE, synthetic_speech


@dataclass
class DemoResult:
    video: Path
    report_json: Path
    report_markdown: Path
    plot: Path
    onnx: Path
    engine: Path | None
    backend: str
    device: str
    report: object  # ProfileReport
    notes: list[str] = field(default_factory=list)  # choices made on the way, and why

    @property
    def headline(self) -> str:
        paths = ", ".join(str(p) for p in (self.report_json, self.report_markdown, self.plot))
        return f"{self.video} ({self.report.frames} frames; {self.backend} on {self.device}) and the profile: {paths}"


def demo_engine_backend(gpu) -> tuple[str | None, str]:
    """Which builder the demo uses on this machine (None: none), and why.

    On a GPU the engine must run there: TensorRT where it is installed, TensorRT-RTX
    only on GPUs it supports. Without a GPU the RTX build still proves the graph builds.
    """
    from talkrt.engines.devices import rtx_unsupported

    if gpu is not None and available("tensorrt"):
        return "tensorrt", f"TensorRT builds for {gpu.name}"
    if gpu is not None and not gpu.rtx_supported:  # only the datacenter builder targets this GPU
        return None, rtx_unsupported(gpu)
    if not available("tensorrt_rtx"):
        hint = '"talkrt[rtx]" or "talkrt[gpu]"' if gpu is None else f'"talkrt[gpu]" (TensorRT) or "talkrt[rtx]" (TensorRT-RTX, which supports {gpu.name})'
        return None, f"no TensorRT backend is installed (pip install {hint})"
    return "tensorrt-rtx", f"TensorRT-RTX builds for {gpu.name}" if gpu else "TensorRT-RTX builds ahead of time without a GPU"


def run_demo(out_dir: str | Path = "out", seconds: float = 4.0, device: str = "auto", batch_size: int = 8, step: Callable[[str], None] = lambda _: None) -> DemoResult:
    from talkrt.engines.devices import ort_cuda_available, resolve_device, visible_gpu
    from talkrt.errors import TalkrtError
    from talkrt.export.onnx import export_onnx
    from talkrt.outputs import check_outputs
    from talkrt.models.registry import DEFAULT_RENDERER, get_renderer_family, get_spec
    from talkrt.runtime.avatar import synthetic_avatar
    from talkrt.runtime.pipeline import PipelineOptions, pipeline_from_files

    out_dir = Path(out_dir)
    check_outputs({"--out-dir": out_dir}, directories=["--out-dir"])
    target = resolve_device(device, "torch").device
    gpu = visible_gpu(target) if target.type == "cuda" else None
    notes: list[str] = []
    models = out_dir / "models"
    generator = get_renderer_family(DEFAULT_RENDERER).roles["generator"]  # the demo renders with the default renderer
    spec = get_spec(generator.graph, **generator.options)
    onnx_path = models / f"{generator.stem}.onnx"
    step(f"exporting {spec.name} (random weights) to ONNX and validating it")
    export_onnx(spec, spec.build_module(None, seed=0), onnx_path)

    engine = None
    builder, why = demo_engine_backend(gpu)
    notes.append(f"engine: {why}")
    if builder is not None:
        from talkrt.engines.build import BuildOptions, build_engine

        step(f"building the {builder} engine")
        try:
            engine = build_engine(onnx_path, models / f"{generator.stem}.engine", BuildOptions(backend=builder, profile_overrides=())).engine
        except (TalkrtError, RuntimeError) as error:  # a driver too old for the builder, say: run without the engine
            notes.append(f"engine build failed, running without it: {error}")

    if target.type == "cuda" and engine is not None:
        backend, model = "trt", engine
    elif target.type == "cuda" and ort_cuda_available():
        backend, model = "ort", onnx_path
    elif target.type == "cuda":
        backend, model = "torch", None  # random weights, same seed as the export
        notes.append('backend: torch on the GPU (no engine, and onnxruntime has no CUDA provider: pip install "talkrt[gpu]")')
    else:
        backend, model = "ort", onnx_path

    step("preparing the synthetic avatar and speech")
    avatar = synthetic_avatar()
    avatar.save(out_dir / "avatar.npz")
    speech = synthetic_speech(seconds)
    from talkrt.runtime.media import write_wav

    write_wav(out_dir / "speech.wav", speech, SAMPLE_RATE)

    step(f"running the pipeline on {target} with the {backend} backend")
    pipeline = pipeline_from_files(avatar, DEFAULT_RENDERER, backend, model, str(target), PipelineOptions(batch_size=batch_size))
    try:
        report = pipeline.write_video(speech, SAMPLE_RATE, out_dir / "out.mp4")
    finally:
        pipeline.close()
    paths = report.save_all(out_dir / "profile")
    return DemoResult(out_dir / "out.mp4", *paths, onnx_path, engine, backend, str(target), report, notes)
