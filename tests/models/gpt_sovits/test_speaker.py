"""The v2Pro speaker-verification embedding: released key layout, strict loading, the
fbank framing, the embedding's shape and determinism, and ONNX export."""

from __future__ import annotations

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
    SpeakerConfig,
    SpeakerEncoder,
    load_speaker_encoder,
    num_sv_frames,
    reference_sv_emb,
    speaker_embedding,
    speaker_spec,
    sv_fbank,
)
from talkrt.runtime.audio import resample

LISTING = "gpt_sovits_sv_eres2netv2w24s4ep4"
# Same structure as the released network (Res2 groups, attentional fusion in stages 3-4), small enough for CPU tests.
SMALL = SpeakerConfig(num_blocks=(1, 1, 2, 1), channels=8, base_width=24, scale=4, expansion=2, embedding_size=16)


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


def test_onnx_export_matches_pytorch_at_two_lengths(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    spec = speaker_spec(SMALL)
    assert spec.name == "gpt-sovits-speaker"
    assert {tuple(p.items()) for p in spec.validation_points} == {(("sv_frames", 10),), (("sv_frames", 333),)}
    module = spec.build_module(None, False)
    report = export_onnx(spec, module, tmp_path / "speaker.onnx")  # validates with ONNX Runtime at both points
    assert len(report.validation) == 2 and all(r.ok for r in report.validation)
    assert (tmp_path / "speaker.onnx").is_file()


def test_sovits_weights_given_as_the_speaker_model_are_named() -> None:
    with pytest.raises(TalkrtError, match=r"looks like a gpt-sovits SoVITS \(s2\) checkpoint") as err:
        load_speaker_encoder(fake_state_dict("gpt_sovits_s2_v2pro"))
    assert "\n" not in str(err.value)


@torch.no_grad()
def test_reference_embedding_from_a_voice_directory(tmp_path, released_state) -> None:
    wave32 = torch.randn(32000, generator=torch.Generator().manual_seed(2)) * 0.1
    with pytest.raises(TalkrtError, match=r"copy pretrained_models/sv/pretrained_eres2netv2w24s4ep4\.ckpt to .*sv") as err:
        reference_sv_emb(tmp_path, wave32, 32000)
    assert "\n" not in str(err.value)
    (tmp_path / SV_FOLDER).mkdir()
    torch.save(released_state, tmp_path / SV_FOLDER / SV_CHECKPOINT)
    emb = reference_sv_emb(tmp_path, wave32, 32000)
    model = load_speaker_encoder(released_state)
    expected = speaker_embedding(model, resample(wave32, 32000, 16000))
    assert emb.shape == (1, SV_DIM)
    torch.testing.assert_close(emb, expected, atol=0, rtol=0)


def test_a_pro_voice_computes_sv_emb_from_its_reference(tmp_path, monkeypatch, released_state) -> None:
    """load_voice on a tiny v2Pro export: without DIR/sv/ one line saying where the weights go; with
    them the style vector uses sv_emb, and the torch backend agrees with ONNX Runtime."""
    from dataclasses import replace

    from talkrt.models.gpt_sovits import specs
    from talkrt.models.gpt_sovits import voice as gsv
    from talkrt.models.gpt_sovits.gpt import GPTConfig
    from talkrt.runtime.media import write_wav
    from talkrt.runtime.synthetic import synthetic_speech

    pro = replace(specs.TINY_SOVITS, version="v2Pro", sv_dim=SV_DIM)
    monkeypatch.setitem(specs.PRESETS, "tiny-pro", specs.Sizes(GPTConfig.small(), pro, 128, specs.TINY_HUBERT_PRESET))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        specs.export_gpt_sovits(tmp_path, preset="tiny-pro", seed=0, cache_len=128, validate=False)
    write_wav(tmp_path / gsv.REFERENCE_WAV, synthetic_speech(1.0, 22050, seed=1), 22050)
    (tmp_path / gsv.REFERENCE_TXT).write_text("hello there\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 1 s reference is shorter than the original asks for
        with pytest.raises(TalkrtError, match=r"speaker-verification weights: copy .* to .*sv/pretrained_eres2netv2w24s4ep4\.ckpt") as err:
            gsv.load_voice(tmp_path, "ort", "cpu")
        assert "\n" not in str(err.value)
        (tmp_path / SV_FOLDER).mkdir()
        torch.save(released_state, tmp_path / SV_FOLDER / SV_CHECKPOINT)
        voice, _ = gsv.load_voice(tmp_path, "ort", "cpu")
        torch_voice, _ = gsv.load_voice(tmp_path, "torch", "cpu")
    assert voice.reference.ge.shape == (1, pro.gin_channels, 1) and torch.isfinite(voice.reference.ge).all()
    torch.testing.assert_close(torch_voice.reference.ge, voice.reference.ge, atol=1e-5, rtol=1e-5)
