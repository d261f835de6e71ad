"""TensorRT / TensorRT-RTX runner: tensor addresses from torch, execute_async_v3 on the runner's bound stream.

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
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

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


def checked_engine(engine: str | Path, device: str | torch.device) -> tuple[dict, ModuleType]:
    """The sidecar of ``engine`` and the module (tensorrt or tensorrt_rtx) that loads it, once the
    file matches its sidecar and was built by the installed version for this GPU: a damaged,
    stale or foreign engine never reaches the deserialiser."""
    sidecar = read_sidecar(engine, verify=True)
    trt = require(_MODULES[sidecar["backend"]["name"]])
    gpu = visible_gpu(device) if torch.device(device).type == "cuda" else None
    check_engine_target(engine, sidecar, trt.__version__, None if gpu is None else (gpu.name, gpu.compute_capability))
    return sidecar, trt


class TensorRTRunner(Runner):
    """``load_engine`` deserialises the engine (loaders.EngineFromBytes) on first need: its bindings
    are the runner's ``io``, which renderers read before activation to size their buffers.
    Activation creates the execution context; ``run`` enqueues on the bound stream."""

    backend = "trt"

    def __init__(self, load_engine: Callable[[], Any], trt: ModuleType, sidecar: dict, engine_path: str | Path, device: str | torch.device = "cuda") -> None:
        super().__init__(device)
        self.load_engine, self.trt, self.sidecar, self.engine_path = load_engine, trt, sidecar, Path(engine_path)
        self.rtx = sidecar["backend"]["name"] == "tensorrt-rtx"
        self.capturable = not self.rtx  # RTX captures its own CUDA graphs
        self.profiles = sidecar.get("profiles") or [{}]
        self._engine = None
        self.context = self.runtime_config = self.runtime_cache = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            self._engine = self.load_engine()
        return self._engine

    @cached_property
    def io(self) -> GraphIO:
        engine, trt = self.engine, self.trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

        def tensor(name: str) -> TensorSpec:
            return TensorSpec(name, tuple(engine.get_tensor_shape(name)), _dtype_name(trt, engine.get_tensor_dtype(name)))

        inputs = tuple(tensor(n) for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outputs = tuple(tensor(n) for n in names if engine.get_tensor_mode(n) != trt.TensorIOMode.INPUT)
        return GraphIO(inputs, outputs)

    def _activate(self) -> None:
        self.context = self._rtx_context() if self.rtx else self.engine.create_execution_context()
        if self.context is None:
            raise TalkrtError(f"{self.sidecar['backend']['name']} could not create an execution context for {self.engine_path} (out of GPU memory?)")
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

    def _deactivate(self) -> None:
        """Persist the RTX runtime cache next to the engine (what was specialised this run), then drop the context."""
        if self.runtime_cache is not None:
            blob = self.runtime_cache.serialize()
            if blob is not None and len(blob):
                write_bytes_atomic(runtime_cache_path(self.engine_path), bytes(memoryview(blob)))
        self.context = self.runtime_config = self.runtime_cache = None

    def _set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Switch to the profile that covers ``shapes`` and set them; outputs' shapes follow."""
        if shapes == self._shapes:
            return
        profile = select_profile(self.profiles, shapes, str(self.engine_path))
        if profile != self._profile:
            if not self.context.set_optimization_profile_async(profile, self.stream.cuda_stream):
                raise TalkrtError(f"{self.engine_path}: TensorRT could not switch to optimization profile {profile}")
            self._profile = profile
            self._addresses.clear()  # set every address again under the new profile
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise TalkrtError(f"{self.engine_path}: TensorRT refused input {name} of shape {shape} in profile {profile}")
        self._output_shapes = {t.name: tuple(self.context.get_tensor_shape(t.name)) for t in self.io.outputs}
        self._shapes = shapes

    def allocate_outputs(self, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        self.activate()  # the context knows the output shapes
        self._set_shapes({n: tuple(int(s) for s in input_shapes[n]) for n in self.input_names})
        return {t.name: torch.empty(self._output_shapes[t.name], dtype=TORCH_DTYPES[t.dtype], device=self.device) for t in self.io.outputs}

    def _run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise TalkrtError(f"trt runner: missing inputs {missing}")
        self._set_shapes({n: tuple(inputs[n].shape) for n in self.input_names})
        if outputs is None:
            outputs = {t.name: torch.empty(self._output_shapes[t.name], dtype=TORCH_DTYPES[t.dtype], device=self.device) for t in self.io.outputs}
        for tensor in self.io.inputs:
            self._bind(tensor, inputs[tensor.name], None)
        for tensor in self.io.outputs:
            self._bind(tensor, outputs[tensor.name], self._output_shapes[tensor.name])
        if not self.context.execute_async_v3(self.stream.cuda_stream):
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
