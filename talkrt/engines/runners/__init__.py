"""Runners: one call for every backend (TensorRT, TensorRT-RTX, ONNX Runtime, PyTorch).

``make_runner`` composes a runner from loaders (``loaders``); nothing loads until
the runner is activated. ``runner.activate(stream)`` makes the backend objects and
binds the CUDA stream (the current one when None); ``runner.run(inputs, outputs)``
takes named input tensors and optionally named preallocated output tensors on the
runner's device, runs on the bound stream (activating on the current stream if
never activated) and writes the outputs in place. With preallocated outputs a
runner allocates nothing per call; without them it allocates (convenient for
one-off calls). ``release()`` deactivates.
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
    torch_dtype: torch.dtype = torch.float32,
    expect: tuple[str, str] | None = None,
) -> Runner:
    """A runner for ``backend``: trt takes an engine path, ort an ONNX path, torch a spec and module
    (run in ``torch_dtype``; engines and ONNX graphs carry their precision themselves).
    ``expect`` = (family, graph): an ONNX file exported for another graph is refused.
    Files are checked here (an engine against its sidecar and this GPU); loading waits for activation."""
    from talkrt.engines.runners import loaders

    if backend == "torch":
        from talkrt.engines.runners.pytorch import TorchRunner

        if spec is None or module is None:
            raise TalkrtError("the torch backend needs the model's spec and module")
        return TorchRunner(GraphIO.from_spec(spec), loaders.ModuleOnDevice(module, device, torch_dtype), device, torch_dtype)
    if model is None:
        raise TalkrtError(f"the {backend} backend needs a model file")
    if backend not in ("ort", "trt"):
        raise TalkrtError(f"unknown backend {backend!r}; choose one of {', '.join(RUNTIME_BACKENDS)}")
    from talkrt.engines.model_files import check_model_file

    spec = check_model_file(model, backend, expect)
    if backend == "ort":
        from talkrt.engines.runners.ort import OrtRunner

        return OrtRunner(loaders.SessionFromOnnx(model, device), GraphIO.from_stored(spec), device)
    from talkrt.engines.runners.trt import TensorRTRunner, checked_engine

    sidecar, trt = checked_engine(model, device)
    return TensorRTRunner(loaders.EngineFromBytes(loaders.BytesFromPath(model), trt), trt, sidecar, model, device)
