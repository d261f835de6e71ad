"""The two TensorRT builders talkrt drives: TensorRT-RTX and datacenter TensorRT.

TensorRT-RTX builds ahead of time without a GPU for an explicit list of compute
capabilities and only builds strongly typed networks: precision comes from the
graph. TensorRT builds on the GPU it will run on; version 10 is weakly typed
(FP16 is a builder flag plus per-layer FP32 constraints), version 11 is
strongly typed like TensorRT-RTX.
"""

from __future__ import annotations

from typing import Protocol

from talkrt.engines.sidecar import ENGINE_BUILDERS
from talkrt.errors import MissingDependency, TalkrtError
from talkrt.optional import available, require

# TensorRT-RTX's own CPU-AOT default set, spelled out so the sidecar records what was built.
DEFAULT_RTX_COMPUTE_CAPABILITIES = ("8.0", "8.6", "8.9", "12.0")
HARDWARE_COMPAT = ("none", "ampere_plus", "same_compute_capability")


class BuildProgress(Protocol):
    """What the builder reports while it works (the CLI shows it as progress bars)."""

    def phase_start(self, name: str, parent: str | None, num_steps: int) -> None: ...
    def step_complete(self, name: str, step: int) -> None: ...
    def phase_finish(self, name: str) -> None: ...


def select_backend(name: str) -> "Backend":
    if name not in ("auto", *ENGINE_BUILDERS):
        raise TalkrtError(f"unknown backend {name!r}; choose one of auto, {', '.join(ENGINE_BUILDERS)}")
    if name == "auto":
        from talkrt.engines.devices import visible_gpu

        if available("tensorrt") and visible_gpu() is not None:
            name = "tensorrt"
        elif available("tensorrt_rtx"):
            name = "tensorrt-rtx"
        else:
            raise MissingDependency(
                'no TensorRT backend is installed: pip install "talkrt[rtx]" (TensorRT-RTX, builds without a GPU) '
                'or "talkrt[gpu]" (TensorRT, on a datacenter GPU)'
            )
    return RtxBackend() if name == "tensorrt-rtx" else TensorRTBackend()


class Backend:
    name: str
    module_name: str
    strongly_typed = True  # precision comes from the graph's types

    def __init__(self) -> None:
        self.trt = require(self.module_name)

    @property
    def version(self) -> str:
        return self.trt.__version__

    def target(self, compute_capabilities: tuple[str, ...]) -> dict:
        raise NotImplementedError

    def network_flags(self) -> int:
        return 1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    def configure(self, config, target: dict, hardware_compat: str, version_compatible: bool) -> None:
        """Targets and compatibility options."""

    def apply_fp16_constraints(self, network, config, fp32_nodes: dict[str, str]) -> int:
        """Weakly typed builders only: FP16 flag plus FP32 constraints on these layers; returns how many were pinned."""
        raise TalkrtError(f"{self.name} {self.version} is strongly typed: FP16 must come from the graph")

    def load_timing_cache(self, config, data: bytes):
        return None

    def save_timing_cache(self, config) -> bytes | None:
        return None


def default_rtx_compute_capabilities(gpu) -> tuple[str, ...]:
    """An RTX build without --cc: the RTX GPU present alone, or the default set without a GPU.

    On a GPU TensorRT-RTX cannot run on (Hopper, datacenter Blackwell) it refuses at
    once: an engine built for other GPUs would only be refused at run time.
    """
    from talkrt.engines.devices import rtx_unsupported

    if gpu is None:
        return DEFAULT_RTX_COMPUTE_CAPABILITIES
    if not gpu.rtx_supported:
        raise TalkrtError(rtx_unsupported(gpu) + " (or name other GPUs with --cc)")
    return (gpu.compute_capability,)


class RtxBackend(Backend):
    name = "tensorrt-rtx"
    module_name = "tensorrt_rtx"

    def target(self, compute_capabilities: tuple[str, ...]) -> dict:
        from talkrt.engines.devices import visible_gpu

        ccs = compute_capabilities or default_rtx_compute_capabilities(visible_gpu())
        for cc in ccs:
            self._enum(cc)
        return {"compute_capabilities": list(ccs)}

    def _enum(self, cc: str):
        member = getattr(self.trt.ComputeCapability, "SM" + cc.replace(".", ""), None)
        if member is None:
            supported = [m[2:-1] + "." + m[-1] for m in self.trt.ComputeCapability.__members__ if m.startswith("SM")]
            raise TalkrtError(f"TensorRT-RTX {self.version} cannot target compute capability {cc}; supported: {', '.join(supported)}")
        return member

    def configure(self, config, target: dict, hardware_compat: str, version_compatible: bool) -> None:
        if hardware_compat != "none" or version_compatible:
            raise TalkrtError("--hardware-compat and --version-compatible are TensorRT options; a TensorRT-RTX engine is portable across its --cc list")
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

    @property
    def strongly_typed(self) -> bool:  # type: ignore[override]
        return self.major >= 11  # weak typing was removed in TensorRT 11

    def network_flags(self) -> int:
        return super().network_flags() if self.strongly_typed else 0

    def target(self, compute_capabilities: tuple[str, ...]) -> dict:
        from talkrt.engines.devices import visible_gpu

        gpu = visible_gpu()
        if gpu is None:
            raise TalkrtError("TensorRT builds engines on the GPU they run on and no CUDA GPU is visible; use --backend tensorrt-rtx for a CPU-only build")
        if compute_capabilities and compute_capabilities != (gpu.compute_capability,):
            raise TalkrtError(f"TensorRT builds for the GPU it runs on ({gpu.name}, {gpu.compute_capability}); --compute-capability is for TensorRT-RTX")
        return {"gpu": gpu.name, "compute_capability": gpu.compute_capability}

    def configure(self, config, target: dict, hardware_compat: str, version_compatible: bool) -> None:
        trt = self.trt
        levels = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, levels[hardware_compat])
        if version_compatible:
            # Needs the lean runtime where the engine loads; runtimes must allow engine host code.
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)

    def apply_fp16_constraints(self, network, config, fp32_nodes: dict[str, str]) -> int:
        if self.strongly_typed:
            return super().apply_fp16_constraints(network, config, fp32_nodes)
        trt = self.trt
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = 0
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            # The ONNX parser names layers after their nodes (sometimes with a suffix).
            if any(layer.name == node or layer.name.startswith(node + "_") for node in fp32_nodes):
                layer.precision = trt.float32
                for output in range(layer.num_outputs):
                    layer.set_output_type(output, trt.float32)
                pinned += 1
        return pinned

    def load_timing_cache(self, config, data: bytes):
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)
        return cache

    def save_timing_cache(self, config) -> bytes | None:
        cache = config.get_timing_cache()
        return bytes(memoryview(cache.serialize())) if cache is not None else None


def make_logger(trt, lines: list[str]):
    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg: str) -> None:  # noqa: D401 - TensorRT callback
            if severity <= trt.ILogger.Severity.WARNING:
                lines.append(f"[{str(severity).rsplit('.', 1)[-1]}] {msg}")

    return CapturingLogger()


def make_monitor(trt, progress: BuildProgress):
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


def parse_errors(parser) -> str:
    messages = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node = f" at node {error.node_name()!r} ({error.node_operator()})" if error.node() >= 0 else ""
        messages.append(f"{error.desc()}{node}")
    return "; ".join(messages) or "unknown parser error"


