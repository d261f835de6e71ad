"""DINet and DH_live renderers in the pipeline, checked against the original inference steps re-done with cv2/numpy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from talkrt.models.dhlive.model import MouthPCA
from talkrt.models.dhlive.alignment import DHLIVE_LSTM
from talkrt.models.dinet.alignment import CTC_25HZ, DEEPSPEECH
from talkrt.runtime.align import num_video_frames
from talkrt.runtime.avatar import synthetic_avatar
from talkrt.runtime.fbank import fbank
from talkrt.runtime.pipeline import Pipeline, PipelineOptions
from talkrt.runtime.renderers import build_renderer
from talkrt.runtime.synthetic import synthetic_speech

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dhlive():
    avatar = synthetic_avatar(5, renderer="dhlive")
    renderer = build_renderer("dhlive", "torch", {}, CPU, pca=MouthPCA.random(3))
    renderer.bind(avatar, 4)
    return avatar, renderer


# ----------------------------------------------------------------------------- DH_live audio


def test_dhlive_features_equal_the_whole_utterance_lstm(dhlive):
    _, renderer = dhlive
    wav = torch.from_numpy(synthetic_speech(1.3, seed=2))
    renderer.reset()
    coefficients = renderer.features(wav)
    steps = (len(wav) + 160) // 640
    assert coefficients.shape == (6, steps) == (6, DHLIVE_LSTM.num_feature_frames(len(wav)))
    model = renderer.audio_runner.module.model  # Audio2Feature, the original's interface_wav forward
    frames = fbank(wav)[: 2 * steps][None]
    with torch.inference_mode():
        expected, _, _ = model(frames, *model.initial_state())
    torch.testing.assert_close(coefficients.T, expected[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1600, 333, 7919])
def test_dhlive_feature_stream_runs_each_lstm_step_once_and_matches(dhlive, chunk):
    """Fed in pieces, the fbank frames and LSTM steps come out as the whole utterance's, each step run once,
    each as soon as the alignment says it is final."""
    _, renderer = dhlive
    wav = torch.from_numpy(synthetic_speech(1.0, seed=5))
    one_shot = renderer.features(wav).clone()
    calls = []
    original = renderer.audio_runner.run
    renderer.audio_runner.run = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        stream, pieces = renderer.feature_stream(), []
        for end in range(chunk, len(wav) + chunk, chunk):
            pieces.append(stream.push(wav[end - chunk : end]))
            assert sum(p.shape[1] for p in pieces) == DHLIVE_LSTM.computable_feature_frames(min(end, len(wav)))
            assert stream.state_samples <= 1120
        pieces.append(stream.finish())
    finally:
        renderer.audio_runner.run = original
    torch.testing.assert_close(torch.cat(pieces, dim=1), one_shot, atol=1e-5, rtol=0)
    assert len(calls) == one_shot.shape[1]


# ----------------------------------------------------------------------------- DH_live prompt


def _reference_mouth(pca: MouthPCA, coefficients: np.ndarray) -> np.ndarray:
    """generate_input_pixels' mouth pixels: PCA image -> uint8 -> grey -> 150x100 -> mean +- 60 stretch."""
    image = (coefficients @ pca.components + pca.mean).reshape(15, 30, 3).clip(0, 255).astype(np.uint8)
    grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (150, 100)).astype(np.float32)
    mean = int(np.mean(grey))
    return ((grey - (mean - 60)) / 120 * 255.0).clip(0, 255).astype(np.uint8).reshape(-1)


def test_mouth_image_matches_the_original_steps(dhlive):
    _, renderer = dhlive
    pca = MouthPCA.random(3)
    coefficients = np.random.default_rng(0).normal(0, 2, size=(4, 6)).astype(np.float32)
    ours = renderer.mouth_images(torch.from_numpy(coefficients)).numpy()
    for row, c in zip(ours, coefficients):
        difference = np.abs(row - _reference_mouth(pca, c).astype(np.float32))
        # cv2's fixed-point resize rounds ~1 pixel in 8 one grey level differently: x 255/120 after the stretch
        assert difference.max() <= 3 and difference.mean() < 0.5


def test_prompt_matches_a_full_frame_scatter_crop_and_resize(dhlive):
    avatar, renderer = dhlive
    coefficients = torch.randn(2, 6)
    frames = torch.tensor([1, 3])
    prompts = renderer.prompts(frames, coefficients).numpy()
    extras = avatar.extras
    canvas_h, canvas_w = extras["mouth_canvas"]
    for prompt, k, pixels in zip(prompts, frames.tolist(), renderer.mouth_images(coefficients).numpy()):
        x1, y1, x2, y2 = avatar.boxes[k]
        # the original: write the grid pixels into a frame-sized image in order, crop the box, cv2.resize to 256
        full = np.zeros(avatar.frames.shape[1:3], np.uint8)
        index = extras["mouth_index"][k]
        kept = index < canvas_h * canvas_w
        rows, cols = index[kept] // canvas_w + y1, index[kept] % canvas_w + x1
        full[rows, cols] = pixels[kept]
        expected = cv2.resize(full[y1:y2, x1:x2], (256, 256)).astype(np.float32)
        lines = extras["prompt_lines"][k]
        drawn = lines.any(-1)
        expected = np.where(drawn[..., None], lines, expected[..., None])
        ours = prompt.transpose(1, 2, 0)
        difference = np.abs(ours - expected)[:-2, :-2]  # the last rows/cols: cv2 repeats the crop edge, we read the canvas
        assert difference.max() <= 2 and (ours[..., 0] > 0).sum() > 500


def test_dhlive_render_blends_the_generator_output_inside_the_border(dhlive):
    avatar, renderer = dhlive
    frames = torch.tensor([0, 2, 4])
    faces = renderer.render(frames, torch.randn(3, 6, 1)).clone()
    inputs = {name: tensor[:3] for name, tensor in renderer.inputs.items()}
    with torch.inference_mode():
        generated = renderer.runner.module(inputs["source"], inputs["ref_in_feature"], inputs["ref_trans_feature"])
    np.testing.assert_array_equal(inputs["source"][:, :3].numpy() * 255, avatar.extras["sources"][[0, 2, 4]].transpose(0, 3, 1, 2).astype(np.float32))
    interior = (slice(None), slice(None), slice(20, -20), slice(20, -20))
    torch.testing.assert_close(faces[interior] * 255, (generated * 255).clamp(0, 255).trunc()[interior], atol=1e-3, rtol=0)
    target = torch.from_numpy(avatar.crops[[0, 2, 4]]).permute(0, 3, 1, 2).float()
    assert torch.allclose(faces[:, :, 0, 128] * 255, target[:, :, 0, 128] * 247 / 255 + (generated[:, :, 0, 128] * 255).clamp(0, 255).trunc() * 8 / 255, atol=1e-3)


def test_dhlive_pipeline_streaming_equals_offline():
    avatar = synthetic_avatar(3, renderer="dhlive")
    renderer = build_renderer("dhlive", "torch", {}, CPU)
    pipeline = Pipeline(avatar, renderer, PipelineOptions(batch_size=4))
    audio = synthetic_speech(0.3, seed=1)
    offline = pipeline.frames(audio, 16000)
    assert len(offline) == num_video_frames(len(audio), 25)
    streamed = torch.cat([b.frames.clone() for b in pipeline.stream_chunks((audio[i : i + 640] for i in range(0, len(audio), 640)), 16000)])
    assert torch.equal(streamed, offline)
    # only the face box changes
    x1, y1, x2, y2 = avatar.boxes[0]
    outside = offline[0].numpy().copy()
    outside[y1:y2, x1:x2] = avatar.frames[0][y1:y2, x1:x2]
    np.testing.assert_array_equal(outside, avatar.frames[0])


# ----------------------------------------------------------------------------- DINet


def _dinet_reference_frame(avatar, model, features: np.ndarray, t: int, k: int) -> np.ndarray:
    """MRzzm/DINet inference.py for one output frame: RGB crop /255, mouth zeroed, 5 refs, window of the
    edge-padded features, forward, resize to the box, paste the top 3r rows."""
    x1, y1, x2, y2 = avatar.boxes[k]
    crop = avatar.crops[k][:, :, ::-1] / 255.0
    crop = crop.copy()
    crop[128:384, 32:288] = 0
    refs = np.concatenate([avatar.crops[i][:, :, ::-1] / 255.0 for i in avatar.extras["reference_indices"]], 2)
    padded = np.pad(features, ((2, 2), (0, 0)), mode="edge")
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()  # noqa: E731
    window = torch.from_numpy(padded[t : t + 5].T.copy())[None].float()
    with torch.inference_mode():
        face = model(as_tensor(crop), as_tensor(refs), window)[0].permute(1, 2, 0).numpy() * 255
    resized = cv2.resize(face, (x2 - x1, y2 - y1))
    frame = avatar.frames[k][:, :, ::-1].copy()
    rows = (y2 - y1) * 12 // 13
    frame[y1 : y1 + rows, x1:x2] = resized[:rows]
    return frame[:, :, ::-1]


def test_dinet_pipeline_follows_inference_py():
    avatar = synthetic_avatar(3, renderer="dinet")
    audio = synthetic_speech(0.12, seed=3)
    count = DEEPSPEECH.num_feature_frames(len(audio))
    features = np.random.default_rng(0).normal(0, 1, size=(count, 29)).astype(np.float32)
    renderer = build_renderer("dinet", "torch", {}, CPU, features=features)
    frames = Pipeline(avatar, renderer, PipelineOptions(batch_size=4)).frames(audio, 16000).numpy()
    assert len(frames) == num_video_frames(len(audio), 25) == count
    model = renderer.runner.module
    for t in range(len(frames)):
        expected = _dinet_reference_frame(avatar, model, features, t, avatar.frame_index(t)).astype(np.int16)
        difference = np.abs(frames[t].astype(np.int16) - expected)
        x1, y1, x2, y2 = avatar.boxes[avatar.frame_index(t)]
        seam = (y2 - y1) * 12 // 13 + y1
        difference[seam - 1 : seam + 1] = 0  # the compositor feathers the paste edge over one row
        assert difference.max() <= 2, (t, difference.max())
        assert (difference > 1).mean() < 0.002


def test_dinet_ctc_features_are_the_mapper_of_every_second_emission():
    renderer = build_renderer("dinet", "torch", {}, CPU)
    wav = torch.from_numpy(synthetic_speech(0.5, seed=4))
    features = renderer.features(wav)
    source = renderer.feature_source
    assert features.shape == (29, CTC_25HZ.num_feature_frames(len(wav)))
    with torch.inference_mode():
        emissions = source.asr.module(wav[None])
        expected = source.mapper.module(emissions[:, ::2])[0].T
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_dinet_features_of_another_length_are_refused():
    from talkrt.errors import TalkrtError

    renderer = build_renderer("dinet", "torch", {}, CPU, features=np.zeros((80, 29), np.float32))
    with pytest.raises(TalkrtError, match="the DINet features cover 3.20 s"):
        renderer.features(torch.zeros(16000))
    with pytest.raises(TalkrtError, match="must be \\(frames, 29\\)"):
        build_renderer("dinet", "torch", {}, CPU, features=np.zeros((80, 28), np.float32))


def test_dinet_streams_its_transformer_features_on_the_sliding_context():
    """HuBERT-ASR attends to its whole input, so DINet used to wait for the end of the utterance;
    on the declared sliding context its frames come while the audio is still arriving."""
    from talkrt.runtime.feature_stream import SlidingContextFeatures

    avatar = synthetic_avatar(3, renderer="dinet")
    renderer = build_renderer("dinet", "torch", {}, CPU)
    assert isinstance(renderer.feature_stream(), SlidingContextFeatures) and renderer.alignment.context == CTC_25HZ.context
    pipeline = Pipeline(avatar, renderer, PipelineOptions(batch_size=4))
    audio = synthetic_speech(0.6, seed=5)
    utterance, chunk, frames_before_end, first_at = pipeline.utterance(16000), 640, 0, None
    for start in range(0, len(audio), chunk):
        for batch in utterance.push(audio[start : start + chunk]):
            first_at = start + chunk if first_at is None else first_at
            frames_before_end += len(batch.frames)
    frames_at_end = sum(len(batch.frames) for batch in utterance.finish())
    assert frames_before_end + frames_at_end == num_video_frames(len(audio), 25)
    assert frames_before_end >= num_video_frames(len(audio), 25) - 10  # the last step and its lookahead wait for the end
    lookahead = CTC_25HZ.lookahead_ms(25) * 16
    assert first_at is not None and first_at <= lookahead + chunk
    assert utterance.state_sizes()["feature_samples"] <= CTC_25HZ.context.left + 5 * 640 + 400 + CTC_25HZ.context.lookahead + chunk
