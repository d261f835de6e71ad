"""PyTorch runner: the reference backend, and the fallback where no engine exists.

(Named pytorch.py, not torch.py: a submodule called torch would replace the
package's own `torch` global when imported.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from talkrt.engines.runners.base import GraphIO, Runner


class TorchRunner(Runner):
    """The eval-mode module; ``dtype=torch.float16`` runs its floating-point work in half
    precision while the I/O keeps the graph's declared types (inputs cast in, outputs
    cast back into the preallocated buffers)."""

    backend = "torch"
    capturable = True

    def __init__(self, spec, module: nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        super().__init__(GraphIO.from_spec(spec), device)
        self.dtype = dtype
        self.module = module.eval().to(self.device, dtype)

    def run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None = None, stream: torch.cuda.Stream | None = None) -> dict[str, torch.Tensor]:
        outputs = self._check(inputs, outputs)
        context = torch.cuda.stream(stream) if stream is not None else _nullcontext()
        with context, torch.inference_mode():
            results = self.module(*(self._cast(inputs[name]) for name in self.input_names))
            results = results if isinstance(results, (tuple, list)) else (results,)
            for name, value in zip(self.output_names, results):
                outputs[name].copy_(value)
        return outputs


    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.dtype) if tensor.is_floating_point() and tensor.dtype != self.dtype else tensor


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
