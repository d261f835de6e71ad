"""PyTorch runner: the reference backend, and the fallback where no engine exists.

(Named pytorch.py, not torch.py: a submodule called torch would replace the
package's own `torch` global when imported.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from talkrt.engines.runners import GraphIO, Runner


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, spec, module: nn.Module, device: str | torch.device = "cpu") -> None:
        super().__init__(GraphIO.from_spec(spec), torch.device(device))
        self.module = module.eval().to(self.device)

    def run(self, inputs: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor] | None = None, stream: torch.cuda.Stream | None = None) -> dict[str, torch.Tensor]:
        outputs = self._check(inputs, outputs)
        context = torch.cuda.stream(stream) if stream is not None else _nullcontext()
        with context, torch.inference_mode():
            results = self.module(*(inputs[name] for name in self.input_names))
            results = results if isinstance(results, (tuple, list)) else (results,)
            for name, value in zip(self.output_names, results):
                outputs[name].copy_(value)
        return outputs


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
