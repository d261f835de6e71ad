"""Indexed devices and `--device auto` per backend (GPU facts passed in, so every case runs on the CPU)."""

from __future__ import annotations

import pytest
import torch

from talkrt.engines.devices import Gpu, normalize_device, resolve_device
from talkrt.errors import TalkrtError

H100 = Gpu("NVIDIA H100 80GB HBM3", "9.0")
RTX4090 = Gpu("NVIDIA GeForce RTX 4090", "8.9")


def test_bare_cuda_becomes_indexed() -> None:
    # A CUDA tensor reports cuda:N; a bare "cuda" never compares equal to it.
    assert normalize_device("cuda") == torch.device("cuda", 0 if not torch.cuda.is_available() else torch.cuda.current_device())
    assert normalize_device("cuda") != torch.device("cuda")
    assert normalize_device("cuda:1") == torch.device("cuda", 1)
    assert normalize_device("cpu") == torch.device("cpu")


def test_runner_devices_are_indexed(wav2lip_onnx) -> None:
    from talkrt.engines.runners import make_runner
    from talkrt.models.registry import get_spec

    spec = get_spec("wav2lip")
    runner = make_runner("torch", spec=spec, module=spec.build_module(None, seed=0), device="cpu")
    assert runner.device == torch.device("cpu")
    assert normalize_device(torch.device("cuda")).index is not None


@pytest.mark.parametrize(
    "requested, backend, gpu, ort_cuda, engine_backend, expected",
    [
        ("auto", "ort", None, False, None, "cpu"),
        ("auto", "torch", None, False, None, "cpu"),
        ("auto", "torch", H100, False, None, "cuda:0"),
        ("auto", "ort", H100, True, None, "cuda:0"),
        ("auto", "ort", H100, False, None, "cpu"),  # the default extras on a GPU machine: CPU onnxruntime
        ("auto", "trt", H100, False, "tensorrt", "cuda:0"),
        ("auto", "trt", RTX4090, False, "tensorrt-rtx", "cuda:0"),
        ("cuda", "torch", H100, False, None, "cuda:0"),
        ("cuda:1", "torch", H100, False, None, "cuda:1"),
        ("cpu", "ort", H100, True, None, "cpu"),
    ],
)
def test_auto_device_per_backend(requested, backend, gpu, ort_cuda, engine_backend, expected) -> None:
    choice = resolve_device(requested, backend, engine_backend=engine_backend, gpu=gpu, ort_cuda=ort_cuda)
    assert choice.device == torch.device(expected)
    assert choice.reason


def test_auto_names_why_ort_stays_on_the_cpu() -> None:
    choice = resolve_device("auto", "ort", gpu=H100, ort_cuda=False)
    assert "onnxruntime has no CUDA provider" in choice.reason and "talkrt[gpu]" in choice.reason


@pytest.mark.parametrize(
    "requested, backend, gpu, ort_cuda, engine_backend, message",
    [
        ("auto", "trt", H100, False, "tensorrt-rtx", r"TensorRT-RTX has no kernels for NVIDIA H100 .*9\.0.*--backend tensorrt.*ort or torch"),
        ("auto", "trt", None, False, "tensorrt", "need a CUDA GPU and none is visible"),
        ("cpu", "trt", H100, False, "tensorrt", "run on a CUDA GPU, not the CPU"),
        ("cuda", "ort", H100, False, None, "ONNX Runtime has no CUDA provider"),
        ("cuda", "torch", None, False, None, "no CUDA GPU is visible"),
        ("gpu", "torch", None, False, None, "unknown device 'gpu'"),
    ],
)
def test_impossible_choices_say_why(requested, backend, gpu, ort_cuda, engine_backend, message) -> None:
    with pytest.raises(TalkrtError, match=message):
        resolve_device(requested, backend, engine_backend=engine_backend, gpu=gpu, ort_cuda=ort_cuda)


def test_demo_engine_hint_fits_the_gpu() -> None:
    """On a Hopper GPU the demo never suggests TensorRT-RTX, which has no kernels for it."""
    from talkrt.demo import demo_engine_backend
    from talkrt.optional import available

    backend, reason = demo_engine_backend(H100)
    if available("tensorrt"):
        assert backend == "tensorrt"
    else:
        assert backend is None and "TensorRT-RTX has no kernels for NVIDIA H100" in reason and "--backend tensorrt" in reason
    backend, reason = demo_engine_backend(RTX4090)
    if not available("tensorrt"):
        assert backend == ("tensorrt-rtx" if available("tensorrt_rtx") else None)
