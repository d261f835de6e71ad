"""Which device a backend runs on: indexed torch devices, GPU facts, and `--device auto` per backend.

A device is always an indexed ``torch.device`` (``cuda:0``, never bare ``cuda``):
tensors report indexed devices, so comparing against a bare one is always unequal.
"""

from __future__ import annotations

import re

from dataclasses import dataclass

import torch

from talkrt.engines.sidecar import read_sidecar
from talkrt.errors import TalkrtError

# TensorRT-RTX's targets (its ComputeCapability enum): Turing to consumer Blackwell.
# Hopper (9.0) and datacenter Blackwell (10.x) are not among them.
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "9.0"

    @property
    def rtx_supported(self) -> bool:
        return self.compute_capability in RTX_COMPUTE_CAPABILITIES


def normalize_device(device: str | torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current>``; anything else unchanged."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return device


def visible_gpu(device: str | torch.device = "cuda") -> Gpu | None:
    """The GPU behind ``device``, or None where CUDA is not available."""
    if not torch.cuda.is_available():
        return None
    device = normalize_device(device)
    major, minor = torch.cuda.get_device_capability(device)
    return Gpu(torch.cuda.get_device_name(device), f"{major}.{minor}")


def rtx_unsupported(gpu: Gpu) -> str:
    """The one line that says TensorRT-RTX cannot run on ``gpu`` and what to use instead."""
    return (
        f"TensorRT-RTX has no kernels for {gpu.name} (compute capability {gpu.compute_capability}; it supports "
        f"{', '.join(RTX_COMPUTE_CAPABILITIES)}): build with `talkrt build --backend tensorrt` on this GPU, or run with --backend ort or torch"
    )


def ort_cuda_available() -> bool:
    """True when onnxruntime is installed and offers its CUDA execution provider."""
    try:
        import onnxruntime
    except Exception:  # not installed, or a broken install
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    reason: str  # why, in a few words, for the line the CLI prints


def check_device_name(requested: str) -> None:
    """``--device`` is auto, cpu, cuda or cuda:N; anything else is one line, before any work."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", requested):
        raise TalkrtError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(
    requested: str,
    backend: str,
    *,
    engine_backend: str | None = None,
    gpu: Gpu | None | str = "probe",
    ort_cuda: bool | None = None,
) -> DeviceChoice:
    """The device for ``backend`` (trt, ort or torch) given ``--device`` (auto, cpu, cuda, cuda:N).

    ``engine_backend`` is the engine's builder (tensorrt or tensorrt-rtx) for trt;
    ``gpu`` and ``ort_cuda`` are probed unless given (tests pass them).
    """
    check_device_name(requested)
    if gpu == "probe":
        gpu = visible_gpu(requested if requested.startswith("cuda") else "cuda")
    cuda_device = normalize_device(requested if requested.startswith("cuda") else "cuda")
    if requested == "cpu":
        if backend == "trt":
            raise TalkrtError("TensorRT engines run on a CUDA GPU, not the CPU: use --backend ort or torch with --device cpu")
        return DeviceChoice(torch.device("cpu"), "--device cpu")
    if gpu is None:
        if requested.startswith("cuda"):
            raise TalkrtError(f"--device {requested}: no CUDA GPU is visible (use --device cpu)")
        if backend == "trt":
            raise TalkrtError("TensorRT engines need a CUDA GPU and none is visible: use --backend ort or torch on the CPU")
        return DeviceChoice(torch.device("cpu"), "no CUDA GPU is visible")
    if backend == "trt" and engine_backend == "tensorrt-rtx" and not gpu.rtx_supported:
        raise TalkrtError(rtx_unsupported(gpu))
    if backend == "ort":
        if ort_cuda is None:
            ort_cuda = ort_cuda_available()
        if not ort_cuda:
            if requested.startswith("cuda"):
                raise TalkrtError('ONNX Runtime has no CUDA provider here: pip install "talkrt[gpu]" (onnxruntime-gpu), or use --backend torch on the GPU')
            return DeviceChoice(torch.device("cpu"), f'{gpu.name} found, but onnxruntime has no CUDA provider (pip install "talkrt[gpu]")')
    return DeviceChoice(cuda_device, f"{gpu.name}, compute capability {gpu.compute_capability}")


def engine_builder(engine) -> str | None:
    """tensorrt or tensorrt-rtx, from an engine's sidecar (None without an engine)."""
    if engine is None:
        return None
    return read_sidecar(engine)["backend"]["name"]
