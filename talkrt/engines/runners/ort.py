"""ONNX Runtime runner: IO binding on torch tensors, no copies.

On CUDA the session's compute stream is the pipeline's stream (fixed when the
session is created), so the graph runs in order with the stages around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from talkrt.engines.runners.base import TORCH_DTYPES, GraphIO, Runner, check_binding
from talkrt.errors import TalkrtError
from talkrt.optional import require

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32, torch.bool: np.bool_, torch.uint8: np.uint8}


class OrtRunner(Runner):
    backend = "ort"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", stream: torch.cuda.Stream | None = None, io: GraphIO | None = None) -> None:
        super().__init__(io or GraphIO.from_onnx(path), device)  # ``io``: already read by the caller
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise TalkrtError('ONNX Runtime has no CUDA provider here: pip install "talkrt[gpu]" (onnxruntime-gpu) for the ort backend on a GPU')
            stream = stream or torch.cuda.current_stream(self.device)
            providers = [("CUDAExecutionProvider", cuda_provider_options(self.device, stream.cuda_stream))]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        if self.device.type == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            # get_available_providers lists what was compiled in, not what loads (CUDA or cuDNN libraries missing).
            raise TalkrtError(f"ONNX Runtime could not load its CUDA provider (it runs on {', '.join(self.session.get_providers())}): check the CUDA and cuDNN libraries onnxruntime-gpu needs, or use --backend torch")
        self.run_options = make_run_options(ort, self.device)
        self.stream = stream
        self._binding = None
        self._bound: tuple | None = None  # (pointer, shape) of every bound tensor, to reuse the binding

    def _bind(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]):
        key = tuple((t.data_ptr(), tuple(t.shape)) for t in (*(inputs[n] for n in self.input_names), *(outputs[n] for n in self.output_names)))
        if key == self._bound:
            return self._binding
        device_type = "cuda" if self.device.type == "cuda" else "cpu"
        device_id = self.device.index or 0
        binding = self.session.io_binding()
        for tensor_io in self.io.inputs:
            tensor = inputs[tensor_io.name]
            check_binding(f"ort runner: input {tensor_io.name}", tensor, TORCH_DTYPES[tensor_io.dtype], self.device)
            binding.bind_input(tensor_io.name, device_type, device_id, _NUMPY_DTYPES[tensor.dtype], tuple(tensor.shape), tensor.data_ptr())
        for tensor_io in self.io.outputs:
            name, tensor = tensor_io.name, outputs[tensor_io.name]
            check_binding(f"ort runner: output {name}", tensor, TORCH_DTYPES[tensor_io.dtype], self.device)
            binding.bind_output(name, device_type, device_id, _NUMPY_DTYPES[tensor.dtype], tuple(tensor.shape), tensor.data_ptr())
        self._binding, self._bound = binding, key
        return binding

    def run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None = None, stream: torch.cuda.Stream | None = None) -> dict[str, torch.Tensor]:
        outputs = self._check(inputs, outputs)
        if stream is not None and self.stream is not None and stream.cuda_stream != self.stream.cuda_stream:
            raise TalkrtError("ort runner: the CUDA stream is fixed when the session is created; pass the pipeline's stream to make_runner")
        binding = self._bind(inputs, outputs)
        self.session.run_with_iobinding(binding, self.run_options)
        return outputs


def cuda_provider_options(device: torch.device, stream_handle: int) -> dict[str, str]:
    """The CUDA provider on the pipeline's stream, with cuDNN's heuristic algorithm choice
    (the default exhaustive search benchmarks every conv at each new shape)."""
    return {
        "device_id": str(device.index or 0),
        "has_user_compute_stream": "1",
        "user_compute_stream": str(stream_handle),
        "cudnn_conv_algo_search": "HEURISTIC",
    }


def make_run_options(ort, device: torch.device):
    """On CUDA, run() returns without synchronising the stream: the stream is the pipeline's, and
    the stages after this one are queued on it in order (a sync per call would stall the host)."""
    options = ort.RunOptions()
    if device.type == "cuda":
        options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    return options
