"""VITS runtime: length regulation, the synthesizer API, streaming, backends from a manifest."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from talkrt.errors import TalkrtError
from talkrt.models.vits.specs import export_vits
from talkrt.models.vits.model import build_random_vits
from talkrt.models.vits.length import expand_prior, regulate_lengths
from talkrt.models.vits.synth import VitsSynthesizer, build_vits_engines

TOKENS = [5, 17, 3, 22, 9, 31, 2, 14, 27, 6, 11, 35, 8, 19, 4, 25, 13, 30, 7, 16, 1, 21, 12, 33, 10, 24, 18, 29, 15, 36]


def attention_matrix_expansion(durations: torch.Tensor, input_mask: torch.Tensor, prior: torch.Tensor):
    """The dense reference: VITS' hard monotonic alignment as a (frames x tokens) 0/1 matrix
    (generate_path in jaywalnut310/vits, the same construction in transformers), times the prior."""
    frame_lengths = torch.clamp_min(durations.sum(-1), 1).long()
    frames = int(frame_lengths.max())
    output_mask = (torch.arange(frames)[None, :] < frame_lengths[:, None]).float()
    cumulative = torch.cumsum(durations, -1)  # (batch, tokens)
    below = (torch.arange(frames, dtype=durations.dtype)[None, None, :] < cumulative[:, :, None]).float()  # (batch, tokens, frames)
    path = below - nn.functional.pad(below, [0, 0, 1, 0])[:, :-1]  # frame f is in token t's span
    path = path * input_mask[:, :, None] * output_mask[:, None, :]
    return path.transpose(1, 2) @ prior.transpose(1, 2), output_mask, frame_lengths  # (batch, frames, C)


def test_length_regulation_equals_the_attention_matrix_expansion() -> None:
    generator = torch.Generator().manual_seed(0)
    durations = torch.randint(0, 6, (4, 40), generator=generator).float()
    input_mask = torch.ones(4, 40)
    input_mask[1, 25:] = 0  # padding
    input_mask[2, 3:] = 0
    durations *= input_mask
    durations[2] = 0  # no frames at all: clamped to one silent frame
    durations[3, :10] = 0  # zero-length tokens
    prior = torch.randn(4, 7, 40, generator=generator) * input_mask[:, None]
    regulation = regulate_lengths(durations)
    expected, output_mask, frame_lengths = attention_matrix_expansion(durations, input_mask, prior)
    assert torch.equal(regulation.frame_lengths, frame_lengths)
    assert torch.equal(regulation.output_mask[:, 0], output_mask)
    assert torch.equal(expand_prior(prior, regulation), expected.transpose(1, 2))  # exact, not close
    assert regulation.frame_lengths[2] == 1 and not expand_prior(prior, regulation)[2].any()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vits-tiny")
    export_vits(out, preset="tiny", seed=0, graphs=("encoder", "decoder"))
    return out


@pytest.fixture(scope="module")
def ort_synthesizer(tiny_dir):
    return VitsSynthesizer.from_manifest(tiny_dir, backend="ort")


def test_synthesize_api_seeds_and_batches(ort_synthesizer) -> None:
    synthesizer = ort_synthesizer
    assert (synthesizer.sample_rate, synthesizer.hop_length, synthesizer.channels, synthesizer.receptive_field) == (16000, 16, 16, 15)
    first = synthesizer.synthesize(TOKENS, seed=1)
    assert first.dtype == torch.float32 and first.dim() == 1 and first.numel() % 16 == 0
    assert torch.equal(synthesizer.synthesize(torch.tensor(TOKENS), seed=1), first)
    other = synthesizer.synthesize(TOKENS, seed=2)
    common = min(other.numel(), first.numel())
    assert not torch.equal(other[:common], first[:common])
    quiet = synthesizer.synthesize(TOKENS, noise_scale=0.0, noise_scale_w=0.0, seed=3)
    assert torch.equal(quiet, synthesizer.synthesize(TOKENS, noise_scale=0.0, noise_scale_w=0.0, seed=4))  # no noise, no seed dependence
    slower = synthesizer.synthesize(TOKENS, noise_scale=0.0, noise_scale_w=0.0, length_scale=2.0)
    assert slower.numel() > 1.8 * quiet.numel()
    batch = synthesizer.synthesize([TOKENS, TOKENS[:7]], seed=1)
    assert isinstance(batch, list) and len(batch) == 2
    output = synthesizer.infer([TOKENS, TOKENS[:7]], seed=1)
    assert [w.numel() for w in batch] == output.sample_lengths.tolist() and output.waveform.shape[1] == max(output.sample_lengths.tolist())
    with pytest.raises(TalkrtError, match="at least one token"):
        synthesizer.synthesize([])
    with pytest.raises(TalkrtError, match="duration_noise"):
        synthesizer.synthesize(TOKENS, duration_noise=torch.zeros(1, 2, 3))


def test_torch_backend_from_manifest_equals_onnx_runtime(tiny_dir, ort_synthesizer) -> None:
    reference = VitsSynthesizer.from_manifest(tiny_dir, backend="torch")
    for seed in (0, 1):
        expected = reference.infer([TOKENS, TOKENS[:11]], seed=seed)
        actual = ort_synthesizer.infer([TOKENS, TOKENS[:11]], seed=seed)
        assert torch.equal(actual.sample_lengths, expected.sample_lengths)
        assert float((actual.waveform - expected.waveform).abs().max()) < 1e-4


def test_torch_backend_in_half_precision_follows_float32() -> None:
    """FP16 PyTorch modules: the masks the graphs build follow the weights' dtype (a float32 mask
    would promote the activations and fail at the next half-precision layer)."""
    model = build_random_vits("tiny", seed=0)
    expected = VitsSynthesizer.from_model(model).synthesize(TOKENS, noise_scale=0.0, noise_scale_w=0.0)
    half = VitsSynthesizer.from_model(model, torch_dtype=torch.float16).synthesize(TOKENS, noise_scale=0.0, noise_scale_w=0.0)
    assert half.dtype == torch.float32 and half.shape == expected.shape
    assert 0 < float((half - expected).abs().max()) < 0.05 * float(expected.abs().max())


class DecodeRecorder:
    """Records the frame count of every decoder call of a real runner (and when it happened)."""

    def __init__(self, runner) -> None:
        self.runner, self.frames, self.times = runner, [], []

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def run(self, inputs, outputs=None):
        result = self.runner.run(inputs, outputs)
        self.frames.append(int(inputs["output_mask"].shape[-1]))
        self.times.append(time.perf_counter())
        return result


@pytest.mark.parametrize("first, chunk", [(1, 1), (4, 16), (16, 64), (100, 7)])
def test_stream_stitches_to_the_one_shot_waveform(ort_synthesizer, first, chunk) -> None:
    tokens = TOKENS * 3
    one_shot = ort_synthesizer.synthesize(tokens, seed=5)
    chunks = list(ort_synthesizer.stream(tokens, seed=5, first_chunk_frames=first, chunk_frames=chunk))
    assert chunks[0].numel() == min(first * 16, one_shot.numel())
    assert all(c.numel() == chunk * 16 for c in chunks[1:-1])
    stitched = torch.cat(chunks)
    assert stitched.shape == one_shot.shape
    assert float((stitched - one_shot).abs().max()) < 1e-4


@pytest.mark.parametrize("chunk_ms", [7, 40, 120])
def test_speak_stream_joins_to_speak(tiny_dir, ort_synthesizer, chunk_ms) -> None:
    """The voice's streaming entry: float32 tensors on the voice's device, the first about
    chunk_ms long, the later ones at least twice the decoder's margin; joined, ``speak``'s waveform
    for the same seed (within the stitching's 1e-4, as the synthesizer's own stream above)."""
    from talkrt.models.vits.synth import read_manifest
    from talkrt.models.vits.voice import speak, speak_stream

    manifest = read_manifest(tiny_dir)
    text = "hello there, how are you today? fine, thank you."
    whole, rate, _ = speak(text, ort_synthesizer, manifest, seed=4)
    chunks, stream_rate = speak_stream(text, ort_synthesizer, manifest, seed=4, chunk_ms=chunk_ms)
    chunks = list(chunks)
    assert stream_rate == rate == 16000 and ort_synthesizer.hop_length == 16  # one decoder frame per ms
    assert all(c.dtype == torch.float32 and c.dim() == 1 and c.device == torch.device(ort_synthesizer.device) for c in chunks)
    assert chunks[0].numel() == min(chunk_ms * 16, whole.numel())
    steady = max(chunk_ms, 2 * ort_synthesizer.receptive_field) * 16
    assert len(chunks) > 1 and all(c.numel() == steady for c in chunks[1:-1])
    joined = torch.cat(chunks)
    assert joined.shape == whole.shape and float((joined - whole).abs().max()) < 1e-4
    other = torch.cat(list(speak_stream(text, ort_synthesizer, manifest, seed=5, chunk_ms=chunk_ms)[0]))
    common = min(other.numel(), joined.numel())
    assert not torch.equal(other[:common], joined[:common])  # the seed reaches the synthesis


def test_speak_stream_checks_the_text_before_any_synthesis(tiny_dir, ort_synthesizer) -> None:
    from talkrt.models.vits.synth import read_manifest
    from talkrt.models.vits.voice import speak_stream

    manifest = read_manifest(tiny_dir)
    recorder = DecodeRecorder(ort_synthesizer.decoder)
    ort_synthesizer.decoder = recorder
    try:
        for text, message in [("  ", "no characters this voice can speak"), ("hello @", "@")]:
            with pytest.raises(TalkrtError, match=message):
                speak_stream(text, ort_synthesizer, manifest)  # raised at the call, not at the first chunk
        with pytest.raises(TalkrtError, match="chunk_ms must be positive"):
            speak_stream("hello", ort_synthesizer, manifest, chunk_ms=0)
        chunks, _ = speak_stream("hello", ort_synthesizer, manifest)
        assert recorder.frames == []  # nothing is synthesized until a chunk is drawn
        next(chunks)
        assert len(recorder.frames) == 1
    finally:
        ort_synthesizer.decoder = recorder.runner


def test_first_chunk_is_ready_after_one_short_decode(tiny_dir) -> None:
    synthesizer = VitsSynthesizer.from_manifest(tiny_dir, backend="ort")
    recorder = DecodeRecorder(synthesizer.decoder)
    synthesizer.decoder = recorder
    tokens = TOKENS * 6
    frames = synthesizer.infer(tokens, seed=0).frame_lengths.item()
    recorder.frames.clear()
    iterator = synthesizer.stream(tokens, seed=0, first_chunk_frames=8, chunk_frames=64)
    start = time.perf_counter()
    next(iterator)
    first_audio = time.perf_counter() - start
    assert recorder.frames == [8 + synthesizer.receptive_field] and recorder.frames[0] < frames / 4
    rest = list(iterator)
    total = time.perf_counter() - start
    assert sum(recorder.frames) >= frames and len(rest) == -(-(frames - 8) // 64)
    assert first_audio < total


def test_margin_covers_the_measured_receptive_field() -> None:
    """Perturb the noise of one frame: every output sample that changes lies within the margin."""
    model = build_random_vits("tiny", seed=0)
    synthesizer = VitsSynthesizer.from_model(model)
    encoded = synthesizer.encode(TOKENS * 2, generator=torch.Generator().manual_seed(0))
    frames, hop = encoded.frames, synthesizer.hop_length
    noise = torch.randn(1, 16, frames, generator=torch.Generator().manual_seed(1))
    base = synthesizer.decode(encoded, noise_scale=1.0, latent_noise=noise)[0]
    reach = 0
    for frame in (frames // 3, frames // 2):
        nudged = noise.clone()
        nudged[:, :, frame] += 1.0
        changed = ((synthesizer.decode(encoded, noise_scale=1.0, latent_noise=nudged)[0] - base).abs() > 1e-7).nonzero()[:, 0]
        assert changed.numel() > 0
        left = frame * hop - int(changed.min())
        right = int(changed.max()) - (frame * hop + hop - 1)
        reach = max(reach, -(-max(left, right) // hop))
    assert 0 < reach <= synthesizer.receptive_field
    # and a margin below the measured reach no longer stitches exactly
    one_shot = synthesizer.synthesize(TOKENS * 2, seed=2)
    short = torch.cat(list(synthesizer.stream(TOKENS * 2, seed=2, first_chunk_frames=8, chunk_frames=8, margin_frames=reach // 3)))
    assert float((short - one_shot).abs().max()) > 1e-4


def test_tensorrt_rtx_engines_from_the_manifest(tiny_dir, tmp_path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    from talkrt.engines.build import BuildOptions

    with pytest.raises(TalkrtError, match="talkrt build "):
        VitsSynthesizer.from_manifest(tiny_dir, backend="trt")
    manifest = build_vits_engines(tiny_dir, BuildOptions(backend="tensorrt-rtx"))
    assert manifest["engines"] == {"encoder": "encoder.engine", "decoder": "decoder.engine"}
    assert json.loads((tiny_dir / "manifest.json").read_text())["engines"] == manifest["engines"]
    assert (tiny_dir / "encoder.engine.json").is_file() and (tiny_dir / "decoder.engine").is_file()
    if not torch.cuda.is_available():
        with pytest.raises(TalkrtError, match="needs a CUDA GPU"):
            VitsSynthesizer.from_manifest(tiny_dir, backend="trt")
    else:  # on a GPU the engines must reproduce ONNX Runtime
        engines = VitsSynthesizer.from_manifest(tiny_dir, backend="trt", device="cuda")
        reference = VitsSynthesizer.from_manifest(tiny_dir, backend="ort")
        expected = reference.synthesize(TOKENS, seed=3, noise_scale=0.0, noise_scale_w=0.0)
        actual = engines.synthesize(TOKENS, seed=3, noise_scale=0.0, noise_scale_w=0.0).cpu()
        assert actual.shape == expected.shape and float((actual - expected).abs().max()) < 1e-3
