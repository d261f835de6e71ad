"""The GPU path's decisions, proved on the CPU where they are logic: CUDA-graph policy, the
overlapped sink, aligned staging; and the same pipeline on a GPU (marked gpu)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from talkrt.engines.runners import StagingBuffers, make_runner
from talkrt.models.registry import get_spec
from talkrt.models.wav2lip.renderer import Wav2LipRenderer
from talkrt.runtime.avatar import synthetic_avatar
from talkrt.runtime.pipeline import Pipeline, PipelineOptions, capture_plan, pipeline_from_files
from talkrt.runtime.sink import OverlappedSink
from talkrt.runtime.synthetic import synthetic_speech

CUDA = torch.device("cuda", 0)


def wav2lip_pipeline(avatar, device: str) -> Pipeline:
    """Wav2Lip with random weights in PyTorch, batch 4."""
    spec = get_spec("wav2lip")
    return Pipeline(avatar, Wav2LipRenderer(make_runner("torch", spec=spec, module=spec.build_module(None, seed=0), device=device)), PipelineOptions(batch_size=4))


class _Runner:
    def __init__(self, backend: str, capturable: bool) -> None:
        self.backend, self.capturable = backend, capturable


class _Renderer:
    def __init__(self, *runners) -> None:
        self.batch_runners = runners


@pytest.mark.parametrize(
    "device, options, runners, use, reason",
    [
        (torch.device("cpu"), PipelineOptions(), [_Runner("torch", True)], False, "not on a GPU"),
        (CUDA, PipelineOptions(cuda_graphs=False), [_Runner("torch", True)], False, "turned off"),
        (CUDA, PipelineOptions(), [_Runner("torch", True)], True, "captured at warm-up"),
        (CUDA, PipelineOptions(), [_Runner("trt", True)], True, "captured at warm-up"),  # datacenter TensorRT
        (CUDA, PipelineOptions(), [_Runner("ort", False)], False, "ONNX Runtime synchronises"),
        (CUDA, PipelineOptions(), [_Runner("trt", False)], False, "TensorRT-RTX captures its own"),
        (CUDA, PipelineOptions(), [_Runner("torch", True), _Runner("ort", False)], False, "ONNX Runtime"),
    ],
)
def test_capture_policy(device, options, runners, use, reason) -> None:
    plan = capture_plan(device, options, _Renderer(*runners))
    assert plan.use is use and reason in plan.reason


def test_real_runners_report_their_capture_facts(wav2lip_onnx) -> None:
    spec = get_spec("wav2lip")
    torch_renderer = Wav2LipRenderer(make_runner("torch", spec=spec, module=spec.build_module(None, seed=0)))
    ort_renderer = Wav2LipRenderer(make_runner("ort", wav2lip_onnx))
    assert capture_plan(CUDA, PipelineOptions(), torch_renderer).use
    assert not capture_plan(CUDA, PipelineOptions(), ort_renderer).use


def test_sink_keeps_order_and_frames_while_the_producer_reuses_its_buffer() -> None:
    received: list[tuple[int, np.ndarray]] = []

    def consume(start: int, frames: torch.Tensor) -> None:
        time.sleep(0.002)  # a slow encoder: the producer is ahead of it
        received.append((start, frames.numpy().copy()))

    sink = OverlappedSink(consume, (4, 5, 3), batch_size=3, device=torch.device("cpu"))
    reused = torch.empty(3, 4, 5, 3, dtype=torch.uint8)  # like the pipeline's frame buffer
    expected = []
    for batch in range(7):
        count = 3 if batch < 6 else 2
        reused[:count] = torch.randint(0, 255, (count, 4, 5, 3), dtype=torch.uint8)
        expected.append((3 * batch, reused[:count].numpy().copy()))
        sink.push(3 * batch, reused[:count])
    sink.close()
    assert [start for start, _ in received] == [start for start, _ in expected]
    for (_, got), (_, want) in zip(received, expected):
        np.testing.assert_array_equal(got, want)


def test_sink_runs_the_consumer_on_its_own_thread_and_reraises_its_error() -> None:
    threads = []

    def consume(start: int, frames: torch.Tensor) -> None:
        threads.append(threading.current_thread().name)
        if start == 2:
            raise OSError("disk full")

    sink = OverlappedSink(consume, (1, 1, 3), batch_size=2, device=torch.device("cpu"))
    frames = torch.zeros(2, 1, 1, 3, dtype=torch.uint8)
    with pytest.raises(OSError, match="disk full"):
        for start in range(0, 20, 2):
            sink.push(start, frames)
        sink.close()
    assert set(threads) == {"talkrt-sink"}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_video_through_the_sink_equals_the_frames(tmp_path, wav2lip_onnx, device) -> None:
    """write_video (sink thread, encoder; on a GPU the yuv420p conversion there) holds exactly
    the frames run() makes, in order."""
    av = pytest.importorskip("av")
    avatar = synthetic_avatar(num_frames=5)
    backend, models = ("ort", wav2lip_onnx) if device == "cpu" else ("torch", None)
    pipeline = pipeline_from_files(avatar, "wav2lip", backend, models, device, PipelineOptions(batch_size=3))
    audio = synthetic_speech(0.7, seed=4)
    frames = pipeline.frames(audio, 16000).numpy()
    report = pipeline.write_video(audio, 16000, tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(decoded) == len(frames) == report.frames
    # H.264 is lossy: each decoded frame is close to its own source frame and further from
    # every frame that shows another avatar frame (order kept, nothing dropped or repeated).
    shown = avatar.frame_indices(0, len(frames))
    for k, picture in enumerate(decoded):
        errors = np.array([np.abs(picture.astype(int) - f.astype(int)).mean() for f in frames])
        assert errors[k] < 6.0, (k, errors[k])  # H.264 at its default quality
        assert errors[k] < errors[shown != shown[k]].min(), k
    assert report.cuda_graph["used"] is (device == "cuda")
    assert report.stages["encode"].frames == len(frames)
    if device == "cuda":  # 4:2:0 planes cross to the host, not BGR frames
        height, width = frames.shape[1:3]
        assert report.d2h_bytes == len(frames) * height * width * 3 // 2


def test_staging_buffers_give_contiguous_copies_at_their_base() -> None:
    staging = StagingBuffers()
    long = torch.arange(2 * 3 * 50, dtype=torch.float32).view(2, 3, 50)
    first = staging.copy("x", long[..., 7:27])
    base = first.data_ptr()
    assert first.is_contiguous() and first.storage_offset() == 0
    torch.testing.assert_close(first, long[..., 7:27])
    second = staging.copy("x", long[..., 30:40])  # smaller: the same memory
    assert second.data_ptr() == base and second.storage_offset() == 0
    torch.testing.assert_close(second, long[..., 30:40])


def test_avatar_indices_are_made_on_the_device() -> None:
    avatar = synthetic_avatar(num_frames=4)
    for start, count in [(0, 20), (5, 3), (13, 9)]:
        on_device = avatar.frame_indices(start, count, torch.device("cpu"))
        assert isinstance(on_device, torch.Tensor)
        np.testing.assert_array_equal(on_device.numpy(), avatar.frame_indices(start, count))


@pytest.mark.parametrize("name", ["wav2lip", "dinet", "dhlive"])
def test_warming_the_features_changes_no_frame(name) -> None:
    """The GPU warm-up runs each renderer's features on silence; nothing of it may stay behind
    (DH_live keeps LSTM steps between calls). Proved here on the CPU, where the warm-up is the same code."""
    from talkrt.models.dhlive.model import MouthPCA
    from talkrt.runtime.renderers import build_renderer

    avatar = synthetic_avatar(3, renderer=name)
    audio = synthetic_speech(0.6, seed=4)
    options = {"pca": MouthPCA.random(3)} if name == "dhlive" else {"features": np.random.default_rng(0).normal(0, 1, size=(15, 29)).astype(np.float32)} if name == "dinet" else {}
    pipeline = Pipeline(avatar, build_renderer(name, "torch", {}, torch.device("cpu"), **options), PipelineOptions(batch_size=4))
    before = pipeline.frames(audio, 16000)
    if name != "dinet":  # features given for one utterance cannot stream
        list(pipeline.stream_chunks([audio[:3000]], 16000))  # leaves DH_live's LSTM mid-utterance
        pipeline._warm_features()
        streamed = torch.cat([b.frames.clone() for b in pipeline.stream_chunks((audio[i : i + 640] for i in range(0, len(audio), 640)), 16000)])
        assert torch.equal(streamed, before)
    pipeline._warm_features()
    assert torch.equal(pipeline.frames(audio, 16000), before)


def test_waveform_tensors_feed_the_pipeline_as_numpy_does(tmp_path) -> None:
    """A voice's output tensor goes in as it is: same frames as its numpy copy; bad ones get one clear error."""
    from talkrt.errors import TalkrtError
    from talkrt.runtime.media import probe

    avatar = synthetic_avatar(num_frames=4)
    audio = synthetic_speech(0.5, seed=3)
    pipeline = wav2lip_pipeline(avatar, "cpu")
    assert torch.equal(pipeline.frames(torch.from_numpy(audio), 16000), pipeline.frames(audio, 16000))
    report = pipeline.write_video(torch.from_numpy(audio), 16000, tmp_path / "out.mp4")
    assert report.frames == 13 and probe(tmp_path / "out.mp4")["num_frames"] == 13
    for bad, message in [(torch.zeros(2, 800), "mono"), (torch.zeros(800, dtype=torch.int16), "float"), (torch.full((800,), float("nan")), "NaN")]:
        with pytest.raises(TalkrtError, match=message):
            pipeline.frames(bad, 16000)


# ------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
def test_a_waveform_on_the_gpu_is_not_copied_in() -> None:
    avatar = synthetic_avatar(num_frames=4)
    audio = synthetic_speech(0.5, seed=3)
    pipeline = wav2lip_pipeline(avatar, "cuda")
    from_host = pipeline.frames(audio, 16000)
    assert pipeline.profiler.report(0.5, 25.0).h2d_bytes == audio.nbytes
    on_device = pipeline.frames(torch.from_numpy(audio).cuda(), 16000)
    assert pipeline.profiler.report(0.5, 25.0).h2d_bytes == 0
    assert torch.equal(on_device, from_host)


def assert_within_one_level(frames: torch.Tensor, reference: torch.Tensor) -> None:
    """GPU libraries choose kernels by shape and by the workspace they may take (cuBLAS and cuFFT by
    the length of audio received so far; cuDNN by the memory free, which warm-up and capture change),
    so float results differ in the last bits: frames may differ by one level, in a few pixels, never more."""
    assert frames.shape == reference.shape
    difference = (frames.int() - reference.int()).abs()
    assert difference.max() <= 1
    assert (difference > 0).float().mean() < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["dinet", "dhlive"])
def test_dinet_and_dhlive_on_cuda_match_the_cpu(name) -> None:
    """Captured on the GPU, streaming equals offline there, and the frames match the CPU's within 2 levels."""
    from talkrt.models.dhlive.model import MouthPCA
    from talkrt.runtime.renderers import build_renderer

    avatar = synthetic_avatar(3, renderer=name)
    audio = synthetic_speech(0.4, seed=5)
    options = {"pca": MouthPCA.random(3)} if name == "dhlive" else {"features": np.random.default_rng(0).normal(0, 1, size=(10, 29)).astype(np.float32)}
    frames = {}
    for device in ("cuda", "cpu"):
        pipeline = Pipeline(avatar, build_renderer(name, "torch", {}, torch.device(device), **options), PipelineOptions(batch_size=4))
        frames[device] = pipeline.frames(audio, 16000)
        if device == "cuda":
            assert pipeline.cuda_graph_used, pipeline.capture.reason
            streamed = torch.cat([b.frames.cpu() for b in pipeline.stream_chunks((audio[i : i + 640] for i in range(0, len(audio), 640)), 16000)])
            assert_within_one_level(streamed, frames["cuda"])
    assert (frames["cuda"].int() - frames["cpu"].int()).abs().max() <= 2


@pytest.mark.gpu
def test_graph_replay_matches_eager_frames() -> None:
    avatar = synthetic_avatar(num_frames=5)
    audio = synthetic_speech(1.3, seed=8)  # 33 frames: four full batches of 8 and a padded one
    spec = get_spec("wav2lip")
    results = {}
    for graphs in (True, False):
        runner = make_runner("torch", spec=spec, module=spec.build_module(None, seed=0), device="cuda")
        pipeline = Pipeline(avatar, Wav2LipRenderer(runner), PipelineOptions(batch_size=8, cuda_graphs=graphs))
        assert pipeline.cuda_graph_used is graphs, pipeline.capture.reason
        results[graphs] = pipeline.frames(audio, 16000)
    assert len(results[True]) == 33
    assert_within_one_level(results[True], results[False])


@pytest.mark.gpu
def test_cuda_streaming_equals_cuda_offline_and_cpu() -> None:
    avatar = synthetic_avatar(num_frames=5)
    audio = synthetic_speech(1.1, seed=9)
    cuda = wav2lip_pipeline(avatar, "cuda")
    offline = cuda.frames(audio, 16000)
    streamed = torch.cat([b.frames.cpu() for b in cuda.stream_chunks((audio[i : i + 640] for i in range(0, len(audio), 640)), 16000)])
    assert_within_one_level(streamed, offline)
    cpu = wav2lip_pipeline(avatar, "cpu")
    difference = (cpu.frames(audio, 16000).int() - offline.int()).abs()
    assert difference.max() <= 2  # float kernels differ between devices; uint8 frames within 2 levels
