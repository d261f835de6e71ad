"""The Runner contract: same inputs, same outputs on every backend; outputs written in place."""

from __future__ import annotations

import pytest
import torch

from talkrt.engines.runners import GraphIO, evaluate_dim, make_runner
from talkrt.engines.runners.trt import check_engine_target
from talkrt.errors import TalkrtError
from talkrt.models.registry import get_spec


@pytest.fixture(scope="module")
def wav2lip_runners(wav2lip_onnx):
    spec = get_spec("wav2lip")
    torch_runner = make_runner("torch", spec=spec, module=spec.build_module(None, seed=0))
    return spec, torch_runner, make_runner("ort", wav2lip_onnx)


def test_ort_equals_torch_in_preallocated_buffers(wav2lip_runners) -> None:
    spec, torch_runner, ort_runner = wav2lip_runners
    inputs = {k: v.contiguous() for k, v in spec.example_inputs({"batch": 3}, seed=9).items()}
    shapes = {k: v.shape for k, v in inputs.items()}
    torch_out = torch_runner.allocate_outputs(shapes)
    ort_out = ort_runner.allocate_outputs(shapes)
    pointer = ort_out["generated_faces"].data_ptr()
    for _ in range(2):  # the second call reuses the IO binding
        returned = ort_runner.run(inputs, ort_out)
        torch_runner.run(inputs, torch_out)
    assert returned["generated_faces"].data_ptr() == pointer  # written in place, nothing reallocated
    torch.testing.assert_close(ort_out["generated_faces"], torch_out["generated_faces"], atol=spec.tolerance.atol, rtol=spec.tolerance.rtol)
    # New contents in the same buffers are seen by the cached binding.
    inputs["face_sequences"].copy_(torch.rand_like(inputs["face_sequences"]))
    ort_runner.run(inputs, ort_out)
    torch_runner.run(inputs, torch_out)
    torch.testing.assert_close(ort_out["generated_faces"], torch_out["generated_faces"], atol=spec.tolerance.atol, rtol=spec.tolerance.rtol)


def test_wrong_buffers_are_refused(wav2lip_runners) -> None:
    spec, _, ort_runner = wav2lip_runners
    inputs = spec.example_inputs({"batch": 2})
    with pytest.raises(TalkrtError, match=r"output generated_faces buffer is \(1, 3, 96, 96\), needs \(2, 3, 96, 96\)"):
        ort_runner.run(inputs, {"generated_faces": torch.empty(1, 3, 96, 96)})
    with pytest.raises(TalkrtError, match="dim 'batch' is 2 in one input and 3"):
        ort_runner.run({"audio_sequences": inputs["audio_sequences"], "face_sequences": torch.rand(3, 6, 96, 96)})


def test_derived_dims() -> None:
    spec = get_spec("hubert", preset="tiny-hubert")
    io = GraphIO.from_spec(spec)
    assert io.output_shapes({"input_values": (2, 61334)}) == {"features": (2, 191, 64)}
    assert evaluate_dim("floor(samples / 200) + 1", {"samples": 999}) == 5
    with pytest.raises(TalkrtError, match="cannot evaluate"):
        evaluate_dim("__import__('os').getcwd()", {})


SIDECAR = {"onnx": "m.onnx", "backend": {"name": "tensorrt-rtx", "version": "1.7.1.116"}, "target": {"compute_capabilities": ["8.6", "8.9"]}}


@pytest.mark.parametrize(
    "sidecar, version, device, message",
    [
        (SIDECAR, "1.8.0.1", ("RTX 4090", "8.9"), "built by tensorrt-rtx 1.7.1.116 but 1.8.0.1 is installed"),
        (SIDECAR, "1.7.1.116", None, "needs a CUDA GPU"),
        (SIDECAR, "1.7.1.116", ("RTX 5090", "12.0"), r"targets compute capabilities 8.6, 8.9, not this GPU's 12.0 .*--cc 12.0"),
        ({**SIDECAR, "backend": {"name": "tensorrt", "version": "10.13"}, "target": {"gpu": "NVIDIA H100", "compute_capability": "9.0"}}, "10.13", ("NVIDIA H200", "9.0"), "built for NVIDIA H100"),
    ],
    ids=["version", "no-gpu", "other-cc", "other-gpu"],
)
def test_stale_or_foreign_engines_are_refused(sidecar, version, device, message) -> None:
    with pytest.raises(TalkrtError, match=message) as info:
        check_engine_target("m.engine", sidecar, version, device)
    assert "talkrt build m.onnx --out m.engine" in str(info.value) or device is None


def test_matching_engine_passes() -> None:
    check_engine_target("m.engine", SIDECAR, "1.7.1.116", ("RTX 3090", "8.6"))


def test_trt_runner_without_gpu_says_so(wav2lip_onnx, tmp_path) -> None:
    pytest.importorskip("tensorrt_rtx")
    if torch.cuda.is_available():
        pytest.skip("this checks the message on machines without a GPU")
    from talkrt.engines.build import BuildOptions, build_engine

    engine = build_engine(wav2lip_onnx, tmp_path / "w.engine", BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.6",))).engine
    with pytest.raises(TalkrtError, match="needs a CUDA GPU"):
        make_runner("trt", engine, device="cuda")


def test_unknown_backend_and_missing_model(tmp_path) -> None:
    with pytest.raises(TalkrtError, match="model file not found"):
        make_runner("ort", tmp_path / "none.onnx")
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(TalkrtError, match="unknown backend"):
        make_runner("tvm", tmp_path / "x.onnx")


@pytest.mark.gpu
def test_runners_agree_on_the_gpu(wav2lip_onnx, tmp_path) -> None:
    """torch on CUDA against ONNX Runtime (CUDA provider when it loads, asserted; else its CPU
    provider) and the engine this GPU can run (TensorRT, or TensorRT-RTX on RTX GPUs), with
    two profiles switched between calls on one stream."""
    from talkrt.engines.build import BuildOptions, build_engine
    from talkrt.engines.devices import ort_cuda_available, visible_gpu
    from talkrt.engines.profiles import parse_profile_override
    from talkrt.optional import available

    spec = get_spec("wav2lip")
    stream = torch.cuda.Stream()
    reference = make_runner("torch", spec=spec, module=spec.build_module(None, seed=0), device="cuda").activate(stream)
    ort_device = "cuda" if ort_cuda_available() else "cpu"
    ort_runner = make_runner("ort", wav2lip_onnx, device=ort_device).activate(stream)  # on the CPU the stream is ignored
    expected_provider = "CUDAExecutionProvider" if ort_device == "cuda" else "CPUExecutionProvider"
    assert ort_runner.session.get_providers()[0] == expected_provider
    runners = [ort_runner]
    gpu = visible_gpu()
    builder = "tensorrt" if available("tensorrt") else "tensorrt-rtx" if available("tensorrt_rtx") and gpu.rtx_supported else None
    if builder is not None:
        options = BuildOptions(backend=builder, profile_overrides=(parse_profile_override("batch:1,1,1"),), extra_profiles=((parse_profile_override("batch:2,4,8"),),))
        runners.append(make_runner("trt", build_engine(wav2lip_onnx, tmp_path / "w.engine", options).engine, device="cuda").activate(stream))
    for batch in (4, 1, 4):  # profile 1, 0, 1
        inputs = {k: v.cuda() for k, v in spec.example_inputs({"batch": batch}, seed=batch).items()}
        with torch.cuda.stream(stream):
            expected = reference.run(inputs)["generated_faces"]
            for runner in runners:
                device_inputs = {k: v.to(runner.device) for k, v in inputs.items()}
                out = runner.run(device_inputs)["generated_faces"]
                stream.synchronize()
                torch.testing.assert_close(out.to(expected.device), expected, atol=1e-3, rtol=1e-3)
    for runner in runners:
        runner.release()


@pytest.mark.gpu
def test_rtx_engine_on_this_gpu_runs_or_is_refused_in_one_line(wav2lip_onnx, tmp_path) -> None:
    """On an RTX GPU the RTX engine runs; on Hopper or datacenter Blackwell it is refused with the way out."""
    pytest.importorskip("tensorrt_rtx")
    from talkrt.engines.build import BuildOptions, build_engine
    from talkrt.engines.devices import visible_gpu

    gpu = visible_gpu()
    engine = build_engine(wav2lip_onnx, tmp_path / "r.engine", BuildOptions(backend="tensorrt-rtx", compute_capabilities=("8.6",))).engine
    if gpu.rtx_supported:
        pytest.skip("this GPU runs RTX engines (covered by the agreement test)")
    with pytest.raises(TalkrtError, match=r"TensorRT-RTX has no kernels for .*--backend tensorrt"):
        make_runner("trt", engine, device="cuda")


def test_bindings_are_checked_before_a_backend_reads_raw_pointers() -> None:
    from talkrt.engines.runners import check_binding

    cpu = torch.device("cpu")
    storage = torch.empty(4 * 64 + 64)
    start = (-storage.data_ptr() % 256) // 4  # the first 256-byte boundary
    buffer = storage[start : start + 256].view(4, 64)
    check_binding("x", buffer, torch.float32, cpu, (4, 64), 256)
    with pytest.raises(TalkrtError, match=rf"not 256-byte aligned \(a view at offset {start + 3}\).*staging buffer"):
        check_binding("x", storage[start + 3 : start + 3 + 256].view(4, 64), torch.float32, cpu, None, 256)
    with pytest.raises(TalkrtError, match="x is float16, the graph takes float32"):
        check_binding("x", buffer.half(), torch.float32, cpu)
    with pytest.raises(TalkrtError, match="not contiguous"):
        check_binding("x", buffer.T, torch.float32, cpu)
    with pytest.raises(TalkrtError, match=r"buffer is \(4, 64\), needs \(2, 64\)"):
        check_binding("x", buffer, torch.float32, cpu, (2, 64))
    with pytest.raises(TalkrtError, match="is on cpu, the runner on cuda:0"):
        check_binding("x", buffer, torch.float32, torch.device("cuda", 0))


def test_ort_cuda_session_options() -> None:
    """The options the CUDA provider gets, and the run option that drops ORT's per-run stream sync."""
    import onnxruntime

    from talkrt.engines.runners.loaders import cuda_provider_options
    from talkrt.engines.runners.ort import make_run_options

    options = cuda_provider_options(torch.device("cuda", 1), 1234)
    assert options == {"device_id": "1", "has_user_compute_stream": "1", "user_compute_stream": "1234", "cudnn_conv_algo_search": "HEURISTIC"}
    assert make_run_options(onnxruntime, torch.device("cuda", 0)).get_run_config_entry("disable_synchronize_execution_providers") == "1"
    with pytest.raises(RuntimeError):  # not set on the CPU: nothing to synchronise
        make_run_options(onnxruntime, torch.device("cpu")).get_run_config_entry("disable_synchronize_execution_providers")


def test_profile_selection_from_a_real_multi_profile_build(wav2lip_onnx, tmp_path) -> None:
    """The sidecar of a TensorRT-RTX build with --add-profile picks the profile that covers the shapes."""
    pytest.importorskip("tensorrt_rtx")
    from talkrt.engines.build import BuildOptions, build_engine, read_sidecar
    from talkrt.engines.profiles import parse_profile_override, select_profile

    options = BuildOptions(
        backend="tensorrt-rtx",
        compute_capabilities=("8.6",),
        profile_overrides=(parse_profile_override("batch:1,1,1"),),
        extra_profiles=((parse_profile_override("batch:2,8,16"),),),
    )
    profiles = read_sidecar(build_engine(wav2lip_onnx, tmp_path / "two.engine", options).engine)["profiles"]
    shapes = lambda batch: {"audio_sequences": (batch, 1, 80, 16), "face_sequences": (batch, 6, 96, 96)}  # noqa: E731
    assert select_profile(profiles, shapes(1)) == 0
    assert select_profile(profiles, shapes(8)) == 1
    assert select_profile(profiles, shapes(16)) == 1
    with pytest.raises(TalkrtError, match=r"no optimization profile of w\.engine covers audio_sequences 17x1x80x16.*profile 0: audio_sequences 1x1x80x16\.\.1x1x80x16.*profile 1: .*2x1x80x16\.\.16x1x80x16.*--add-profile"):
        select_profile(profiles, shapes(17), "w.engine")
    with pytest.raises(TalkrtError, match="no optimization profile"):
        select_profile(profiles, {"audio_sequences": (1, 1, 80, 17), "face_sequences": (1, 6, 96, 96)})


def test_runner_capture_policy(wav2lip_runners) -> None:
    """Who may be captured in a torch CUDA graph: torch yes; ONNX Runtime no (it synchronises inside run)."""
    _, torch_runner, ort_runner = wav2lip_runners
    assert torch_runner.capturable and not ort_runner.capturable
