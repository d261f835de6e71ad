"""TensorRT / TensorRT-RTX runner: tensor addresses from torch, execute_async_v3 on the pipeline's stream.

The engine's sidecar says which runtime built it; an engine from another
runtime version or for another GPU is refused before deserialisation, with the
command that rebuilds it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from talkrt.engines.build import read_sidecar
from talkrt.engines.runners import GraphIO, TensorIO, Runner
from talkrt.errors import TalkrtError
from talkrt.optional import require

_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}


def check_engine_target(engine: str | Path, sidecar: dict, installed_version: str, device: tuple[str, str] | None) -> None:
    """Refuse a stale or foreign engine, saying why and how to rebuild; ``device`` is (GPU name, compute capability)."""
    backend = sidecar["backend"]["name"]
    rebuild = f"talkrt build {sidecar.get('onnx', 'MODEL.onnx')} --out {engine} --backend {backend}"
    if sidecar["backend"]["version"] != installed_version:
        raise TalkrtError(f"{engine} was built by {backend} {sidecar['backend']['version']} but {installed_version} is installed; engines only load in the version that built them: {rebuild}")
    if device is None:
        raise TalkrtError(f"{engine} is a {backend} engine and needs a CUDA GPU; none is visible (use --backend ort or torch on the CPU)")
    name, capability = device
    target = sidecar["target"]
    if "compute_capabilities" in target:
        if capability not in target["compute_capabilities"]:
            raise TalkrtError(f"{engine} targets compute capabilities {', '.join(target['compute_capabilities'])}, not this GPU's {capability} ({name}): {rebuild} --cc {capability}")
    elif target.get("compute_capability") != capability or target.get("gpu") != name:
        raise TalkrtError(f"{engine} was built for {target.get('gpu')} ({target.get('compute_capability')}), not {name} ({capability}): {rebuild}")


class TensorRTRunner(Runner):
    backend = "trt"

    def __init__(self, engine: str | Path, device: str | torch.device = "cuda") -> None:
        sidecar = read_sidecar(engine)
        trt = require(_MODULES[sidecar["backend"]["name"]])
        device = torch.device(device)
        gpu = None
        if device.type == "cuda" and torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            gpu = (torch.cuda.get_device_name(device), f"{major}.{minor}")
        check_engine_target(engine, sidecar, trt.__version__, gpu)
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine).read_bytes())
        if self.engine is None:
            raise TalkrtError(f"{engine} could not be deserialised by {sidecar['backend']['name']} {trt.__version__}; rebuild it")
        if hasattr(self.engine, "create_runtime_config"):  # TensorRT-RTX: JIT specialisation happens here
            self.runtime_config = self.engine.create_runtime_config()
            self.context = self.engine.create_execution_context(self.runtime_config)
        else:
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        inputs = tuple(TensorIO(n, tuple(self.engine.get_tensor_shape(n)), _dtype_name(trt, self.engine.get_tensor_dtype(n))) for n in names if self.engine.get_tensor_mode(n) == mode)
        outputs = tuple(TensorIO(n, tuple(self.engine.get_tensor_shape(n)), _dtype_name(trt, self.engine.get_tensor_dtype(n))) for n in names if self.engine.get_tensor_mode(n) != mode)
        super().__init__(GraphIO(inputs, outputs), device)
        self.sidecar = sidecar

    def allocate_outputs(self, input_shapes):
        for name, shape in input_shapes.items():
            self.context.set_input_shape(name, tuple(shape))
        from talkrt.engines.runners import TORCH_DTYPES

        return {t.name: torch.empty(tuple(self.context.get_tensor_shape(t.name)), dtype=TORCH_DTYPES[t.dtype], device=self.device) for t in self.io.outputs}

    def run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None = None, stream: torch.cuda.Stream | None = None) -> dict[str, torch.Tensor]:
        for name in self.input_names:
            tensor = inputs[name]
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        if outputs is None:
            outputs = self.allocate_outputs({n: inputs[n].shape for n in self.input_names})
        for name in self.output_names:
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = stream or torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise TalkrtError(f"{self.sidecar['backend']['name']} failed to enqueue the engine")
        return dict(outputs)


def _dtype_name(trt, dtype) -> str:
    return {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16", trt.DataType.INT32: "int32", trt.DataType.INT64: "int64", trt.DataType.BOOL: "bool", trt.DataType.UINT8: "uint8"}.get(dtype, json.dumps(str(dtype)))
