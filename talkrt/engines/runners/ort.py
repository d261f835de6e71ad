"""ONNX Runtime runner: IO binding on torch tensors, no copies.

On CUDA the session's compute stream is the runner's bound stream (ONNX Runtime
fixes it when the session is created, at activation), so the graph runs in
order with the stages around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from talkrt.engines.runners.base import TORCH_DTYPES, GraphIO, Runner, check_binding
from talkrt.optional import require

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32, torch.bool: np.bool_, torch.uint8: np.uint8}


class OrtRunner(Runner):
    """``load_session(stream)`` makes the session (loaders.SessionFromOnnx); ``io`` is read
    from the spec the graph carries, so nothing loads before activation."""

    backend = "ort"

    def __init__(self, load_session: Callable[[torch.cuda.Stream | None], Any], io: GraphIO, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.load_session, self.io = load_session, io
        self.session = None

    def _activate(self) -> None:
        self.session = self.load_session(self.stream)
        self.run_options = make_run_options(require("onnxruntime"), self.device)
        self._binding = None
        self._bound: tuple | None = None  # (pointer, shape) of every bound tensor, to reuse the binding

    def _deactivate(self) -> None:
        self.session = self._binding = self._bound = None

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

    def _run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        outputs = self._check(inputs, outputs)
        binding = self._bind(inputs, outputs)
        self.session.run_with_iobinding(binding, self.run_options)
        return outputs


def make_run_options(ort, device: torch.device):
    """On CUDA, run() returns without synchronising the stream: the stream is the pipeline's, and
    the stages after this one are queued on it in order (a sync per call would stall the host)."""
    options = ort.RunOptions()
    if device.type == "cuda":
        options.add_run_config_entry("disable_synchronize_execution_providers", "1")
    return options
