"""Runners: one call for every backend (TensorRT, TensorRT-RTX, ONNX Runtime, PyTorch).

``runner.run(inputs, outputs, stream)`` takes named input tensors and optionally
named preallocated output tensors on the runner's device, runs on ``stream`` and
writes the outputs in place. With preallocated outputs a runner allocates
nothing per call; without them it allocates (convenient for one-off calls).
"""

from __future__ import annotations

from pathlib import Path

import torch

from talkrt.engines.runners.base import TORCH_DTYPES, GraphIO, Runner, StagingBuffers, check_binding, evaluate_dim
from talkrt.errors import TalkrtError

__all__ = ["RUNTIME_BACKENDS", "TORCH_DTYPES", "GraphIO", "Runner", "StagingBuffers", "check_binding", "evaluate_dim", "make_runner"]


RUNTIME_BACKENDS = ("trt", "ort", "torch")


def make_runner(
    backend: str,
    model: str | Path | None = None,
    *,
    spec=None,
    module=None,
    device: str | torch.device = "cpu",
    stream: torch.cuda.Stream | None = None,
    torch_dtype: torch.dtype = torch.float32,
    expect: tuple[str, str] | None = None,
) -> Runner:
    """A runner for ``backend``: trt takes an engine path, ort an ONNX path, torch a spec and module
    (run in ``torch_dtype``; engines and ONNX graphs carry their precision themselves).
    ``expect`` = (family, graph): an ONNX file exported for another graph is refused."""
    if backend == "torch":
        from talkrt.engines.runners.pytorch import TorchRunner

        if spec is None or module is None:
            raise TalkrtError("the torch backend needs the model's spec and module")
        return TorchRunner(spec, module, device, torch_dtype)
    if model is None:
        raise TalkrtError(f"the {backend} backend needs a model file")
    if backend not in ("ort", "trt"):
        raise TalkrtError(f"unknown backend {backend!r}; choose one of {', '.join(RUNTIME_BACKENDS)}")
    from talkrt.engines.model_files import check_model_file

    spec = check_model_file(model, backend, expect)
    if backend == "ort":
        from talkrt.engines.runners.ort import OrtRunner

        return OrtRunner(model, device, stream, GraphIO.from_stored(spec))
    from talkrt.engines.runners.trt import TensorRTRunner

    return TensorRTRunner(model, device)
