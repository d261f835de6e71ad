"""Lazy imports of optional heavy backends, with the exact install command when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from talkrt.errors import MissingDependency

# module name -> (what it enables, the pip command that provides it)
INSTALL_HINTS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("ONNX validation and the ONNX Runtime backend", 'pip install "talkrt[cpu]"  (or "talkrt[gpu]" for onnxruntime-gpu)'),
    "tensorrt_rtx": ("TensorRT-RTX engines (CPU-only ahead-of-time builds included)", 'pip install "talkrt[rtx]"'),
    "tensorrt": ("TensorRT engines on datacenter GPUs", 'pip install "talkrt[gpu]"'),
    "av": ("video and audio files (PyAV)", "pip install av"),
    "cuda.bindings": ("CUDA streams and events without torch", 'pip install "talkrt[gpu]"'),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingDependency naming what it enables and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        enables, command = INSTALL_HINTS.get(module, (module, f"pip install {module}"))
        raise MissingDependency(f"{module} is not installed ({exc}); it is needed for {enables}: {command}") from exc


def available(module: str) -> bool:
    """True when ``module`` imports (used by doctor and backend selection; never raises)."""
    try:
        importlib.import_module(module)
    except Exception:  # a broken install (missing shared library) is "not available" too
        return False
    return True
