"""TensorRT / TensorRT-RTX runner: tensor addresses from torch, execute_async_v3 on the pipeline's stream.

The engine's sidecar says which runtime built it; an engine whose size or
sha256 differs from its sidecar's, or from another runtime version or for
another GPU, is refused before deserialisation, with the command that rebuilds
it. Every call checks what TensorRT would otherwise take silently (dtype,
device, contiguity, 256-byte alignment, buffer shapes) and every return value
of the context, and picks the optimization profile that covers the input shapes.

TensorRT-RTX specialises kernels on the device: its runtime cache is kept next
to the engine (``ENGINE.runtime-cache``) so the next process starts warm, and it
captures CUDA graphs itself (whole-graph strategy), so its runner is never
captured from outside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from talkrt.engines.devices import Gpu, rtx_unsupported, visible_gpu
from talkrt.engines.profiles import select_profile
from talkrt.engines.runners.base import TORCH_DTYPES, GraphIO, Runner, check_binding
from talkrt.engines.sidecar import read_sidecar, rebuild_command
from talkrt.errors import TalkrtError
from talkrt.export.spec import TensorSpec
from talkrt.fileio import write_bytes_atomic
from talkrt.optional import require

_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
TENSOR_ALIGNMENT = 256  # bytes: TensorRT's requirement for every I/O address


def check_engine_target(engine: str | Path, sidecar: dict, installed_version: str, device: tuple[str, str] | None) -> None:
    """Refuse a stale or foreign engine, saying why and how to rebuild; ``device`` is (GPU name, compute capability)."""
    backend = sidecar["backend"]["name"]
    rebuild = rebuild_command(engine, sidecar)
    if sidecar["backend"]["version"] != installed_version:
        raise TalkrtError(f"{engine} was built by {backend} {sidecar['backend']['version']} but {installed_version} is installed; engines only load in the version that built them: {rebuild}")
    if device is None:
        # Callers differ in how to go on without a GPU (run: --backend ort; check: an ONNX candidate), so no option is named here.
        raise TalkrtError(f"{engine} is a {backend} engine and needs a CUDA GPU; none is visible")
    name, capability = device
    if backend == "tensorrt-rtx" and not Gpu(name, capability).rtx_supported:
        raise TalkrtError(rtx_unsupported(Gpu(name, capability)))
    target = sidecar["target"]
    if "compute_capabilities" in target:
        if capability not in target["compute_capabilities"]:
            raise TalkrtError(f"{engine} targets compute capabilities {', '.join(target['compute_capabilities'])}, not this GPU's {capability} ({name}): {rebuild} --cc {capability}")
    elif target.get("compute_capability") != capability or target.get("gpu") != name:
        raise TalkrtError(f"{engine} was built for {target.get('gpu')} ({target.get('compute_capability')}), not {name} ({capability}): {rebuild}")


def runtime_cache_path(engine: str | Path) -> Path:
    return Path(str(engine) + ".runtime-cache")


class TensorRTRunner(Runner):
    backend = "trt"

    def __init__(self, engine: str | Path, device: str | torch.device = "cuda") -> None:
        sidecar = read_sidecar(engine, verify=True)  # a damaged or replaced file never reaches the deserialiser
        builder = sidecar["backend"]["name"]
        trt = require(_MODULES[builder])
        gpu = visible_gpu(device) if torch.device(device).type == "cuda" else None
        check_engine_target(engine, sidecar, trt.__version__, None if gpu is None else (gpu.name, gpu.compute_capability))
        self.trt, self.sidecar, self.engine_path = trt, sidecar, Path(engine)
        self.rtx = builder == "tensorrt-rtx"
        self.capturable = not self.rtx  # RTX captures its own CUDA graphs
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise TalkrtError(f"{engine} could not be deserialised by {builder} {trt.__version__}; rebuild it")
        self.runtime_cache = None
        if self.rtx:
            self.context = self._rtx_context()
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise TalkrtError(f"{builder} could not create an execution context for {engine} (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT

        def tensor(name: str) -> TensorSpec:
            return TensorSpec(name, tuple(self.engine.get_tensor_shape(name)), _dtype_name(trt, self.engine.get_tensor_dtype(name)))

        inputs = tuple(tensor(n) for n in names if self.engine.get_tensor_mode(n) == mode)
        outputs = tuple(tensor(n) for n in names if self.engine.get_tensor_mode(n) != mode)
        super().__init__(GraphIO(inputs, outputs), device)
        self.profiles = sidecar.get("profiles") or [{}]
        self._profile = 0  # a new context starts on profile 0
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._output_shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}

    def _rtx_context(self):
        """Runtime cache loaded from next to the engine, whole-graph CUDA capture, lazy kernel specialisation."""
        trt = self.trt
        config = self.engine.create_runtime_config()
        cache = config.create_runtime_cache()
        saved = runtime_cache_path(self.engine_path)
        if saved.is_file():
            cache.deserialize(saved.read_bytes())  # a cache from another GPU or version is ignored by RTX
        if not config.set_runtime_cache(cache):
            raise TalkrtError("TensorRT-RTX refused its runtime cache")
        # The config does not keep the cache alive: hold both for the context's lifetime.
        self.runtime_config, self.runtime_cache = config, cache
        config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        config.dynamic_shapes_kernel_specialization_strategy = trt.DynamicShapesKernelSpecializationStrategy.LAZY
        return self.engine.create_execution_context(config)

    def release(self) -> None:
        """Persist the RTX runtime cache next to the engine (what was specialised this run)."""
        if self.runtime_cache is None:
            return
        blob = self.runtime_cache.serialize()
        if blob is not None and len(blob):
            write_bytes_atomic(runtime_cache_path(self.engine_path), bytes(memoryview(blob)))

    def _set_shapes(self, shapes: dict[str, tuple[int, ...]], stream_handle: int) -> None:
        """Switch to the profile that covers ``shapes`` and set them; outputs' shapes follow."""
        if shapes == self._shapes:
            return
        profile = select_profile(self.profiles, shapes, str(self.engine_path))
        if profile != self._profile:
            if not self.context.set_optimization_profile_async(profile, stream_handle):
                raise TalkrtError(f"{self.engine_path}: TensorRT could not switch to optimization profile {profile}")
            self._profile = profile
            self._addresses.clear()  # set every address again under the new profile
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise TalkrtError(f"{self.engine_path}: TensorRT refused input {name} of shape {shape} in profile {profile}")
        self._output_shapes = {t.name: tuple(self.context.get_tensor_shape(t.name)) for t in self.io.outputs}
        self._shapes = shapes

    def allocate_outputs(self, input_shapes):
        stream = torch.cuda.current_stream(self.device)
        self._set_shapes({n: tuple(int(s) for s in input_shapes[n]) for n in self.input_names}, stream.cuda_stream)
        return {t.name: torch.empty(self._output_shapes[t.name], dtype=TORCH_DTYPES[t.dtype], device=self.device) for t in self.io.outputs}

    def run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None = None, stream: torch.cuda.Stream | None = None) -> dict[str, torch.Tensor]:
        stream = stream or torch.cuda.current_stream(self.device)
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise TalkrtError(f"trt runner: missing inputs {missing}")
        self._set_shapes({n: tuple(inputs[n].shape) for n in self.input_names}, stream.cuda_stream)
        if outputs is None:
            outputs = {t.name: torch.empty(self._output_shapes[t.name], dtype=TORCH_DTYPES[t.dtype], device=self.device) for t in self.io.outputs}
        for tensor in self.io.inputs:
            self._bind(tensor, inputs[tensor.name], None)
        for tensor in self.io.outputs:
            self._bind(tensor, outputs[tensor.name], self._output_shapes[tensor.name])
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise TalkrtError(f"{self.sidecar['backend']['name']} failed to enqueue {self.engine_path}")
        return dict(outputs)

    def _bind(self, spec: TensorSpec, tensor: torch.Tensor, shape: tuple[int, ...] | None) -> None:
        check_binding(f"trt runner: {spec.name}", tensor, TORCH_DTYPES[spec.dtype], self.device, shape, TENSOR_ALIGNMENT)
        address = tensor.data_ptr()
        if self._addresses.get(spec.name) == address:
            return
        if not self.context.set_tensor_address(spec.name, address):
            raise TalkrtError(f"{self.engine_path}: TensorRT refused the address of {spec.name}")
        self._addresses[spec.name] = address


def _dtype_name(trt, dtype) -> str:
    return {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16", trt.DataType.INT32: "int32", trt.DataType.INT64: "int64", trt.DataType.BOOL: "bool", trt.DataType.UINT8: "uint8"}.get(dtype, json.dumps(str(dtype)))
