"""ONNX -> serialized engine with TensorRT-RTX or TensorRT, plus its JSON sidecar.

TensorRT-RTX builds ahead of time on a machine without a GPU for an explicit
list of compute capabilities (kernels are specialised on the device when the
engine is first loaded). Datacenter TensorRT needs the GPU it builds for.

Precision: FP32 for now. The precision plan recorded in the sidecar is the seam
for mixed FP16 (export/precision.py): TensorRT 11 and TensorRT-RTX take
precision only from the graph's types (strongly typed networks), TensorRT 10
from the FP16 flag plus per-layer constraints.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import onnx

import talkrt
from talkrt.engines.profiles import ProfileOverride, graph_inputs, resolve_profile, spec_dims
from talkrt.errors import MissingDependency, TalkrtError
from talkrt.fileio import atomic_path, sha256_file, write_text_atomic
from talkrt.optional import available, require

BACKENDS = ("tensorrt-rtx", "tensorrt")
PRECISIONS = ("fp32",)  # fp16 / auto arrive with the mixed-precision plan
# TensorRT-RTX's own CPU-AOT default set, spelled out so the sidecar records what was built.
DEFAULT_RTX_COMPUTE_CAPABILITIES = ("8.0", "8.6", "8.9", "12.0")


class BuildProgress(Protocol):
    """What the builder reports while it works (the CLI shows it as progress bars)."""

    def phase_start(self, name: str, parent: str | None, num_steps: int) -> None: ...
    def step_complete(self, name: str, step: int) -> None: ...
    def phase_finish(self, name: str) -> None: ...


@dataclass(frozen=True)
class BuildOptions:
    backend: str = "auto"  # auto | tensorrt-rtx | tensorrt
    precision: str = "fp32"
    profile_overrides: tuple[ProfileOverride, ...] = ()
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets, e.g. ("8.6", "12.0"); () = default
    optimization_level: int = 3
    workspace_mib: int | None = None


@dataclass
class BuildResult:
    engine: Path
    sidecar: Path
    metadata: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def sidecar_path(engine: str | os.PathLike) -> Path:
    return Path(f"{engine}.json")


def cache_key(metadata: dict) -> str:
    """Hash of everything that determines the engine: the same key means the same engine."""
    keyed = {k: metadata[k] for k in ("onnx_sha256", "backend", "target", "precision", "profiles")}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def select_backend(name: str) -> "Backend":
    if name not in ("auto", *BACKENDS):
        raise TalkrtError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if name == "auto":
        if available("tensorrt") and _cuda_device() is not None:
            name = "tensorrt"
        elif available("tensorrt_rtx"):
            name = "tensorrt-rtx"
        else:
            raise MissingDependency(
                'no TensorRT backend is installed: pip install "talkrt[rtx]" (TensorRT-RTX, builds without a GPU) '
                'or "talkrt[gpu]" (TensorRT, on a datacenter GPU)'
            )
    return RtxBackend() if name == "tensorrt-rtx" else TensorRTBackend()


def _cuda_device() -> tuple[str, str] | None:
    """(name, compute capability) of the current CUDA device, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


class Backend:
    name: str
    module_name: str

    def __init__(self) -> None:
        self.trt = require(self.module_name)

    @property
    def version(self) -> str:
        return self.trt.__version__

    def target(self, options: BuildOptions) -> dict:
        raise NotImplementedError

    def configure(self, config, target: dict, options: BuildOptions) -> None:
        """Backend-specific builder settings (targets, precision flags)."""

    def network_flags(self) -> int:
        return 0


class RtxBackend(Backend):
    name = "tensorrt-rtx"
    module_name = "tensorrt_rtx"

    def target(self, options: BuildOptions) -> dict:
        ccs = options.compute_capabilities
        if not ccs:
            device = _cuda_device()
            # On an RTX GPU build for it alone; elsewhere (no GPU, or a GPU TensorRT-RTX
            # does not support, such as Hopper) build for the default set.
            ccs = (device[1],) if device and self._enum(device[1], strict=False) else DEFAULT_RTX_COMPUTE_CAPABILITIES
        for cc in ccs:
            self._enum(cc)
        return {"compute_capabilities": list(ccs)}

    def _enum(self, cc: str, strict: bool = True):
        member = getattr(self.trt.ComputeCapability, "SM" + cc.replace(".", ""), None)
        if member is None and strict:
            supported = [m[2:-1] + "." + m[-1] for m in self.trt.ComputeCapability.__members__ if m.startswith("SM")]
            raise TalkrtError(f"TensorRT-RTX {self.version} cannot target compute capability {cc}; supported: {', '.join(supported)}")
        return member

    def network_flags(self) -> int:
        return 1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    def configure(self, config, target: dict, options: BuildOptions) -> None:
        ccs = target["compute_capabilities"]
        # set_compute_capability silently returns False unless the count is set first.
        config.num_compute_capabilities = len(ccs)
        for index, cc in enumerate(ccs):
            if not config.set_compute_capability(self._enum(cc), index):
                raise TalkrtError(f"TensorRT-RTX refused compute capability {cc}")


class TensorRTBackend(Backend):
    name = "tensorrt"
    module_name = "tensorrt"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def target(self, options: BuildOptions) -> dict:
        device = _cuda_device()
        if device is None:
            raise TalkrtError("TensorRT builds engines on the GPU they run on and no CUDA GPU is visible; use --backend tensorrt-rtx for a CPU-only build")
        if options.compute_capabilities and options.compute_capabilities != (device[1],):
            raise TalkrtError(f"TensorRT builds for the GPU it runs on ({device[0]}, {device[1]}); --compute-capability is for TensorRT-RTX")
        return {"gpu": device[0], "compute_capability": device[1]}

    def configure(self, config, target: dict, options: BuildOptions) -> None:
        # TensorRT 10 is weakly typed: FP32 unless the FP16 flag is set; TensorRT 11 is
        # strongly typed by default and takes precision from the graph. Either way an
        # FP32 graph with no flags builds FP32 (TF32 stays TensorRT's default).
        return None


def _precision_plan(options: BuildOptions, config, backend: Backend) -> dict:
    tf32 = bool(getattr(backend.trt.BuilderFlag, "TF32", None) is not None and config.get_flag(backend.trt.BuilderFlag.TF32))
    return {"mode": options.precision, "fp32_nodes": "all", "tf32": tf32, "reason": "FP32 build: every node keeps the graph's FP32 type"}


def _make_logger(trt, lines: list[str]):
    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg: str) -> None:  # noqa: D401 - TensorRT callback
            if severity <= trt.ILogger.Severity.WARNING:
                lines.append(f"[{str(severity).rsplit('.', 1)[-1]}] {msg}")

    return CapturingLogger()


def _make_monitor(trt, progress: BuildProgress):
    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            progress.step_complete(phase_name, step)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return Monitor()


def _parse_errors(parser) -> str:
    messages = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node = f" at node {error.node_name()!r} ({error.node_operator()})" if error.node() >= 0 else ""
        messages.append(f"{error.desc()}{node}")
    return "; ".join(messages) or "unknown parser error"


def build_engine(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    progress: BuildProgress | None = None,
) -> BuildResult:
    """Build ``onnx_path`` into ``out`` and write ``out.json``; both appear only if the build succeeds."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise TalkrtError(f"ONNX file not found: {onnx_path}")
    if options.precision not in PRECISIONS:
        raise TalkrtError(f"precision {options.precision!r} is not available yet; this version builds: {', '.join(PRECISIONS)}")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise TalkrtError(f"{onnx_path} is not an ONNX model ({type(exc).__name__})") from exc
    inputs = graph_inputs(model)
    profile = resolve_profile(inputs, spec_dims(model), options.profile_overrides)
    backend = select_backend(options.backend)
    target = backend.target(options)
    trt = backend.trt

    log: list[str] = []
    logger = _make_logger(trt, log)
    start = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(backend.network_flags())
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not bytes) so an external .onnx.data sidecar resolves.
    if not parser.parse_from_file(str(onnx_path)):
        raise TalkrtError(f"{backend.name} cannot parse {onnx_path.name}: {_parse_errors(parser)}")
    config = builder.create_builder_config()
    config.builder_optimization_level = options.optimization_level
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    backend.configure(config, target, options)
    trt_profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        trt_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(trt_profile)
    if progress is not None:
        config.progress_monitor = _make_monitor(trt, progress)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = [line for line in log if line.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
        raise TalkrtError(f"{backend.name} could not build {onnx_path.name}: {errors[-1] if errors else 'no error reported'}")
    seconds = time.perf_counter() - start

    props = {p.key: p.value for p in model.metadata_props}
    metadata = {
        "talkrt_version": talkrt.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "onnx": str(onnx_path),
        "onnx_sha256": sha256_file(onnx_path),
        "family": props.get("talkrt.family"),
        "graph": props.get("talkrt.graph"),
        "backend": {"name": backend.name, "version": backend.version},
        "target": target,
        "precision": _precision_plan(options, config, backend),
        "profiles": [{name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in profile.items()}],
        "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in inputs],
        "outputs": [{"name": o.name, "dims": [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]} for o in model.graph.output],
        "builder_optimization_level": options.optimization_level,
        "build_seconds": round(seconds, 3),
    }
    metadata["cache_key"] = cache_key(metadata)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(memoryview(serialized))
    metadata["engine_bytes"] = Path(out).stat().st_size
    write_text_atomic(sidecar_path(out), json.dumps(metadata, indent=2) + "\n")
    return BuildResult(Path(out), sidecar_path(out), metadata, log)


def read_sidecar(engine: str | os.PathLike) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise TalkrtError(f"{engine} has no sidecar {path.name}; rebuild it with: talkrt build MODEL.onnx --out {engine}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TalkrtError(f"{path} is not valid JSON ({exc.msg}); rebuild the engine") from exc


def compute_capability_list(values: Sequence[str]) -> tuple[str, ...]:
    """'8.6,12.0' or ['8.6', '12.0'] -> ('8.6', '12.0'); also accepts sm86 / SM120."""
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    normalized = []
    for item in items:
        digits = item.lower().removeprefix("sm").removeprefix("_")
        if "." not in digits and digits.isdigit() and len(digits) >= 2:
            digits = f"{digits[:-1]}.{digits[-1]}"
        try:
            major, minor = (int(x) for x in digits.split("."))
        except ValueError:
            raise TalkrtError(f"bad compute capability {item!r}: use e.g. 8.6 or sm86") from None
        normalized.append(f"{major}.{minor}")
    return tuple(normalized)
