"""The v2Pro speaker-verification embedding: released key layout, strict loading, the
fbank framing, the embedding's shape and determinism, ONNX export, and a Pro voice's
sv_emb through the exported speaker graph."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from fake_checkpoints import fake_state_dict, key_listing

from talkrt.errors import TalkrtError
from talkrt.export.onnx import export_onnx
from talkrt.models.gpt_sovits.speaker import (
    RELEASED_CONFIG,
    SV_CHECKPOINT,
    SV_DIM,
    SV_FOLDER,
    TINY_CONFIG,
    SpeakerEncoder,
    load_speaker_encoder,
    num_sv_frames,
    reference_fbank,
    speaker_embedding,
    speaker_spec,
    speaker_weights,
    sv_fbank,
)
from talkrt.runtime.audio import resample

LISTING = "gpt_sovits_sv_eres2netv2w24s4ep4"
SMALL = TINY_CONFIG


@pytest.fixture(scope="module")
def released_state() -> dict[str, torch.Tensor]:
    return fake_state_dict(LISTING)


def test_full_size_model_has_exactly_the_released_keys() -> None:
    expected = key_listing(LISTING)
    state = SpeakerEncoder(RELEASED_CONFIG).state_dict()
    assert list(state) == list(expected)
    for key, tensor in state.items():
        assert (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")) == expected[key], key
    assert RELEASED_CONFIG.emb_dim == SV_DIM


@torch.no_grad()
def test_fake_released_checkpoint_loads_strictly(tmp_path, released_state) -> None:
    path = tmp_path / "pretrained_eres2netv2w24s4ep4.ckpt"
    torch.save(released_state, path)  # the released file is a plain state_dict
    model = load_speaker_encoder(path)
    assert not model.training
    for key in ("conv1.weight", "layer3.5.fuse_models.2.local_att.3.bias", "fuse34.local_att.4.running_var", "seg_1.weight"):
        assert torch.equal(model.state_dict()[key], released_state[key])
    emb = speaker_embedding(model, torch.randn(2, 4000, generator=torch.Generator().manual_seed(0)) * 0.1)
    assert emb.shape == (2, SV_DIM) and emb.dtype == torch.float32 and torch.isfinite(emb).all()


def test_half_precision_copy_loads(released_state) -> None:
    model = load_speaker_encoder({k: (v.half() if v.is_floating_point() else v) for k, v in released_state.items()})
    assert model.conv1.weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ("drop", r"1 missing, e\.g\. layer4\.2\.bns\.1\.running_mean"),
        ("add", r"1 unexpected, e\.g\. seg_2\.weight"),
        ("reshape", r"1 with another shape, e\.g\. layer3_ds\.weight"),
    ],
)
def test_wrong_keys_fail_in_one_line(tmp_path, released_state, change, pattern) -> None:
    state = dict(released_state)
    if change == "drop":
        del state["layer4.2.bns.1.running_mean"]
    elif change == "add":
        state["seg_2.weight"] = torch.zeros(192, 192)
    else:
        state["layer3_ds.weight"] = torch.zeros(2048, 1024, 1, 1)
    path = tmp_path / "sv.ckpt"
    torch.save(state, path)
    with pytest.raises(TalkrtError, match=pattern) as err:
        load_speaker_encoder(path)
    assert "\n" not in str(err.value)


def test_fbank_framing_and_too_short_input() -> None:
    wav = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    feats = sv_fbank(wav)
    assert feats.shape == (3, num_sv_frames(16000), 80) == (3, 98, 80)
    torch.testing.assert_close(sv_fbank(wav[1]), feats[1:2], atol=0, rtol=0)
    assert num_sv_frames(399) == 0 and num_sv_frames(400) == 1 and num_sv_frames(560) == 2
    with pytest.raises(TalkrtError, match="too short"):
        sv_fbank(torch.zeros(399))


@torch.no_grad()
def test_embedding_is_deterministic_and_per_item() -> None:
    torch.manual_seed(0)
    model = SpeakerEncoder(SMALL).eval()
    wav = torch.randn(2, 5000, generator=torch.Generator().manual_seed(1)) * 0.1
    first = speaker_embedding(model, wav)
    assert first.shape == (2, SMALL.emb_dim)
    assert torch.equal(first, speaker_embedding(model, wav))
    torch.testing.assert_close(speaker_embedding(model, wav[1]), first[1:2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first[0], first[1])


def test_onnx_export_matches_pytorch_at_three_lengths(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    spec = speaker_spec(SMALL)
    assert spec.name == "gpt-sovits-speaker"
    assert [p["sv_frames"] for p in spec.validation_points] == [10, 333, 1001]
    assert [(g.output, g.metric, g.threshold) for g in spec.gates] == [("sv_emb", "cosine", 0.999)]
    module = spec.build_module(None, False)
    report = export_onnx(spec, module, tmp_path / "speaker.onnx")  # validates with ONNX Runtime at every point
    assert len(report.validation) == 3 and all(r.ok for r in report.validation)
    assert (tmp_path / "speaker.onnx").is_file()


def test_sovits_weights_given_as_the_speaker_model_are_named() -> None:
    with pytest.raises(TalkrtError, match=r"looks like a gpt-sovits SoVITS \(s2\) checkpoint") as err:
        load_speaker_encoder(fake_state_dict("gpt_sovits_s2_v2pro"))
    assert "\n" not in str(err.value)


@torch.no_grad()
def test_reference_fbank_and_the_weights_place(tmp_path) -> None:
    wave32 = torch.randn(32000, generator=torch.Generator().manual_seed(2)) * 0.1
    torch.testing.assert_close(reference_fbank(wave32, 32000), sv_fbank(resample(wave32, 32000, 16000)), atol=0, rtol=0)
    with pytest.raises(TalkrtError, match=r"copy pretrained_models/sv/pretrained_eres2netv2w24s4ep4\.ckpt to .*sv") as err:
        speaker_weights(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / SV_FOLDER).mkdir()
    (tmp_path / SV_FOLDER / SV_CHECKPOINT).write_bytes(b"")
    assert speaker_weights(tmp_path) == tmp_path / SV_FOLDER / SV_CHECKPOINT


def test_a_pro_voice_computes_sv_emb_through_the_speaker_graph(tmp_path) -> None:
    """load_voice on a tiny-pro export: ONNX Runtime runs the exported speaker graph, the torch
    backend the PyTorch network of the same preset and seed; sv_emb within the spec's tolerance
    of the PyTorch network on the reference's fbank, and the style vectors agree."""
    from talkrt.models.gpt_sovits import specs
    from talkrt.models.gpt_sovits import voice as gsv
    from talkrt.runtime.media import read_audio, write_wav
    from talkrt.runtime.synthetic import synthetic_speech

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = specs.export_gpt_sovits(tmp_path, preset="tiny-pro", seed=3, validate=False)
    assert manifest["files"][specs.SPEAKER] == "speaker.onnx" and manifest["sv_dim"] == SMALL.emb_dim
    write_wav(tmp_path / gsv.REFERENCE_WAV, synthetic_speech(1.0, 22050, seed=1), 22050)
    (tmp_path / gsv.REFERENCE_TXT).write_text("hello there\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 1 s reference is shorter than the original asks for
        voice, _ = gsv.load_voice(tmp_path, "ort", "cpu")
        torch_voice, _ = gsv.load_voice(tmp_path, "torch", "cpu")
        assert specs.SPEAKER not in torch_voice.synth.runners  # the torch backend ran the PyTorch network
        del manifest["files"][specs.SPEAKER]  # as exported before the speaker graph: ONNX Runtime needs it
        (tmp_path / specs.MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(TalkrtError, match=r"has no speaker graph for the reference's speaker embedding: export it again") as err:
            gsv.load_voice(tmp_path, "ort", "cpu")
        assert "\n" not in str(err.value)
    # what the voice computed before the graph: the PyTorch network on the peak-scaled 32 kHz reference
    samples, rate = read_audio(tmp_path / gsv.REFERENCE_WAV)
    wave32 = resample(torch.from_numpy(samples), rate, 32000)
    features = reference_fbank(wave32, 32000)
    with torch.no_grad():
        expected = specs.load_speaker("tiny-pro", seed=3)(features)
    spec = speaker_spec(SMALL)
    emb = voice.synth.runners[specs.SPEAKER].run({"features": features})["sv_emb"]
    torch.testing.assert_close(emb, expected, atol=spec.tolerance.atol, rtol=spec.tolerance.rtol)
    assert voice.reference.ge.shape == (1, specs.TINY_PRO_SOVITS.gin_channels, 1) and torch.isfinite(voice.reference.ge).all()
    torch.testing.assert_close(torch_voice.reference.ge, voice.reference.ge, atol=1e-5, rtol=1e-5)
