"""Loaders: small callables that make a runner's backend objects (Polygraphy's loaders are the model).

``make_runner`` composes them and a runner calls them when it is activated, so building
a runner reads no weights and creates no session, context or stream binding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from talkrt.engines.devices import normalize_device
from talkrt.errors import TalkrtError
from talkrt.optional import require


class SessionFromOnnx:
    """An ONNX Runtime session for the graph at ``path`` on ``device``.

    Called with the stream the runner binds: on CUDA the provider computes on it (ONNX Runtime
    fixes the stream for the session's life), so the graph runs in order with the stages around it.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        self.path, self.device = Path(path), normalize_device(device)

    def __call__(self, stream: torch.cuda.Stream | None = None) -> Any:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        cuda = self.device.type == "cuda"
        if cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise TalkrtError('ONNX Runtime has no CUDA provider here: pip install "talkrt[gpu]" (onnxruntime-gpu) for the ort backend on a GPU')
            stream = stream or torch.cuda.current_stream(self.device)
            providers = [("CUDAExecutionProvider", cuda_provider_options(self.device, stream.cuda_stream))]
        else:
            providers = ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(self.path), options, providers=providers)
        if cuda and "CUDAExecutionProvider" not in session.get_providers():
            # get_available_providers lists what was compiled in, not what loads (CUDA or cuDNN libraries missing).
            raise TalkrtError(f"ONNX Runtime could not load its CUDA provider (it runs on {', '.join(session.get_providers())}): check the CUDA and cuDNN libraries onnxruntime-gpu needs, or use --backend torch")
        return session


def cuda_provider_options(device: torch.device, stream_handle: int) -> dict[str, str]:
    """The CUDA provider on the runner's stream, with cuDNN's heuristic algorithm choice
    (the default exhaustive search benchmarks every conv at each new shape)."""
    return {
        "device_id": str(device.index or 0),
        "has_user_compute_stream": "1",
        "user_compute_stream": str(stream_handle),
        "cudnn_conv_algo_search": "HEURISTIC",
    }


class BytesFromPath:
    """The bytes of a file, read when called."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self) -> bytes:
        return self.path.read_bytes()

    def __str__(self) -> str:
        return str(self.path)


class EngineFromBytes:
    """A TensorRT engine deserialised by ``trt`` (the tensorrt or tensorrt_rtx module that built it)
    from the bytes ``serialized`` returns; names its source in errors."""

    def __init__(self, serialized: Callable[[], bytes], trt: ModuleType) -> None:
        self.serialized, self.trt = serialized, trt

    def __call__(self) -> Any:
        trt = self.trt
        # The engine needs its runtime (and the runtime its logger) alive: the loader holds both.
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        engine = self.runtime.deserialize_cuda_engine(self.serialized())
        if engine is None:
            raise TalkrtError(f"{self.serialized} could not be deserialised by {trt.__name__} {trt.__version__}; rebuild it")
        return engine


class ModuleOnDevice:
    """An eval-mode module moved to ``device`` in ``dtype`` (in place, as ``nn.Module.to`` does)."""

    def __init__(self, module: nn.Module, device: str | torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.module, self.device, self.dtype = module, normalize_device(device), dtype

    def __call__(self) -> nn.Module:
        return self.module.eval().to(self.device, self.dtype)
