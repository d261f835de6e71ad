"""PyTorch runner: the reference backend, and the fallback where no engine exists.

(Named pytorch.py, not torch.py: a submodule called torch would replace the
package's own `torch` global when imported.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import torch
from torch import nn

from talkrt.engines.runners.base import GraphIO, Runner


class TorchRunner(Runner):
    """The eval-mode module ``load_module`` returns (loaders.ModuleOnDevice); ``dtype=torch.float16``
    runs its floating-point work in half precision while the I/O keeps the graph's declared
    types (inputs cast in, outputs cast back into the preallocated buffers)."""

    backend = "torch"
    capturable = True

    def __init__(self, io: GraphIO, load_module: Callable[[], nn.Module], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        super().__init__(device)
        self.io, self.load_module, self.dtype = io, load_module, dtype
        self.module: nn.Module | None = None

    def _activate(self) -> None:
        self.module = self.load_module()

    def _deactivate(self) -> None:
        self.module = None

    def _run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        outputs = self._check(inputs, outputs)
        on_stream = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with on_stream, torch.inference_mode():
            results = self.module(*(self._cast(inputs[name]) for name in self.input_names))
            results = results if isinstance(results, (tuple, list)) else (results,)
            for name, value in zip(self.output_names, results):
                outputs[name].copy_(value)
        return outputs

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.dtype) if tensor.is_floating_point() and tensor.dtype != self.dtype else tensor
