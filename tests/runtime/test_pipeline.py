"""The pipeline end to end: frame counts, paste-back, runner equivalence, streaming equals offline, no host copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkrt.engines.runners import make_runner
from talkrt.models.registry import get_spec
from talkrt.models.wav2lip.renderer import Wav2LipRenderer
from talkrt.models.wav2lip.alignment import WAV2LIP_MEL
from talkrt.runtime.align import num_video_frames
from talkrt.runtime.audio import resample
from talkrt.runtime.avatar import synthetic_avatar
from talkrt.runtime.pipeline import Pipeline, PipelineOptions, pipeline_from_files
from talkrt.runtime.synthetic import synthetic_speech


@pytest.fixture(scope="module")
def avatar():
    return synthetic_avatar(num_frames=5)


@pytest.fixture(scope="module")
def ort_pipeline(avatar, wav2lip_onnx):
    return pipeline_from_files(avatar, "wav2lip", "ort", wav2lip_onnx, "cpu", PipelineOptions(batch_size=4))


def _streamed(pipeline: Pipeline, audio: np.ndarray, rate: int, chunk: int) -> tuple[torch.Tensor, int]:
    """All streamed frames, and how many input samples had been fed when the first frame came out."""
    fed = 0
    first_at = None

    def chunks():
        nonlocal fed
        for start in range(0, len(audio), chunk):
            fed = min(start + chunk, len(audio))
            yield audio[start : start + chunk]

    frames = []
    for batch in pipeline.stream_chunks(chunks(), rate):
        first_at = fed if first_at is None else first_at
        frames.append(batch.frames.clone())
    return torch.cat(frames), first_at


@pytest.mark.parametrize("seconds, fps", [(1.0, 25), (1.37, "29.97")])
def test_frame_count_is_exact(avatar, wav2lip_onnx, seconds, fps) -> None:
    audio = synthetic_speech(seconds, seed=2)
    pipeline = pipeline_from_files(avatar, "wav2lip", "ort", wav2lip_onnx, "cpu", PipelineOptions(fps=fps, batch_size=8))
    frames = pipeline.frames(audio, 16000)
    assert len(frames) == num_video_frames(len(audio), fps) == int(np.ceil(seconds * float(pipeline.fps) - 1e-9))


def test_paste_back_changes_only_the_lower_face(ort_pipeline, avatar) -> None:
    frames = ort_pipeline.frames(synthetic_speech(0.5, seed=1), 16000).numpy()
    for k, frame in enumerate(frames):
        source = avatar.frames[avatar.frame_index(k)]
        changed = np.any(frame != source, axis=2)
        x1, y1, x2, y2 = avatar.boxes[avatar.frame_index(k)]
        ys, xs = np.nonzero(changed)
        assert changed.sum() > 500  # the generated mouth is there
        assert ys.min() >= y1 + 0.3 * (y2 - y1) and ys.max() < y2 and xs.min() >= x1 and xs.max() < x2


def test_torch_and_ort_pipelines_agree(avatar, ort_pipeline) -> None:
    spec = get_spec("wav2lip")
    torch_runner = make_runner("torch", spec=spec, module=spec.build_module(None, seed=0))
    torch_pipeline = Pipeline(avatar, Wav2LipRenderer(torch_runner), PipelineOptions(batch_size=4))
    audio = synthetic_speech(0.6, seed=3)
    difference = (torch_pipeline.frames(audio, 16000).int() - ort_pipeline.frames(audio, 16000).int()).abs()
    assert difference.max() <= 1


@pytest.mark.parametrize("rate, chunk_ms", [(16000, 40), (22050, 20)])
def test_streaming_equals_offline(ort_pipeline, rate, chunk_ms) -> None:
    audio16 = synthetic_speech(1.2, seed=4)
    audio = audio16 if rate == 16000 else resample(torch.from_numpy(audio16), 16000, rate).numpy()
    offline = ort_pipeline.frames(audio, rate)
    streamed, first_at = _streamed(ort_pipeline, audio, rate, chunk=rate * chunk_ms // 1000)
    assert streamed.shape == offline.shape
    difference = (streamed.int() - offline.int()).abs()
    assert difference.max() <= 1 and (difference == 0).float().mean() > 0.999
    # The first frame leaves as soon as its window is complete: after the mel lookahead, not the whole utterance.
    lookahead = WAV2LIP_MEL.lookahead_ms(25) / 1000 * rate
    assert first_at <= lookahead + 2 * rate * chunk_ms / 1000 + 64
    assert first_at < len(audio) / 3


def test_bad_audio_is_refused(ort_pipeline) -> None:
    from talkrt.errors import TalkrtError

    with pytest.raises(TalkrtError, match="mono"):
        next(ort_pipeline.run(np.zeros((2, 100), np.float32), 16000))
    with pytest.raises(TalkrtError, match="NaN"):
        next(ort_pipeline.run(np.full(1000, np.nan, np.float32), 16000))


def test_profile_accounts_the_run(ort_pipeline) -> None:
    audio = synthetic_speech(0.8, seed=5)
    ort_pipeline.frames(audio, 16000)
    report = ort_pipeline.profiler.report(len(audio) / 16000, 25.0).to_json()
    assert report["frames"] == 20
    assert report["h2d_bytes"] >= audio.nbytes
    assert {"render", "compose", "features", "windows", "resample"} <= set(report["stages"])
    assert report["stages"]["render"]["calls"] == 5
    assert report["time_to_first_frame_ms"] > 0


@pytest.mark.gpu
def test_no_host_device_copies_between_stages(avatar) -> None:
    """On a GPU, after the audio goes up, nothing crosses between the device and the host until the sink."""
    from torch.profiler import ProfilerActivity, profile

    spec = get_spec("wav2lip")
    runner = make_runner("torch", spec=spec, module=spec.build_module(None, seed=0), device="cuda")
    pipeline = Pipeline(avatar, Wav2LipRenderer(runner), PipelineOptions(batch_size=4))
    audio = synthetic_speech(1.0, seed=6)
    batches = pipeline.run(audio, 16000)
    next(batches)  # audio upload, features, windows and the first batch
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
        for _ in batches:
            pass
        torch.cuda.synchronize()
    copies = [e.name for e in trace.events() if "Memcpy HtoD" in e.name or "Memcpy DtoH" in e.name]
    assert copies == []
    assert pipeline.cuda_graph_used


def test_streaming_tts_feeds_the_streaming_pipeline(ort_pipeline) -> None:
    """Text -> VITS chunks -> frames as soon as their windows are complete: the same frames as offline."""
    from talkrt.models.vits.model import build_random_vits
    from talkrt.models.vits.synth import VitsSynthesizer

    synthesizer = VitsSynthesizer.from_model(build_random_vits("tiny", seed=1), "cpu")
    ids = list(range(1, 30)) * 3
    whole = synthesizer.synthesize(ids, seed=5).numpy()
    chunks = [np.asarray(chunk, dtype=np.float32) for chunk in synthesizer.stream(ids, seed=5, first_chunk_frames=4, chunk_frames=8)]
    assert len(chunks) > 2 and np.abs(np.concatenate(chunks) - whole).max() < 1e-4
    rate = synthesizer.sample_rate
    offline = ort_pipeline.frames(whole, rate)
    streamed = torch.cat([batch.frames.clone() for batch in ort_pipeline.stream_chunks(iter(chunks), rate)])
    assert streamed.shape == offline.shape and (streamed.int() - offline.int()).abs().max() <= 1
