"""GPT-SoVITS v2 SoVITS: strict loading of the official s2G*.pth layouts (v2, v2Pro, v2ProPlus,
with and without enc_q, the 05/06 headers), refusal of v1/v3/v4, the decode contract, the
spectrogram against a per-frame numpy FFT, and the decoder through ONNX Runtime."""

from __future__ import annotations

import io
import sys
import types
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from fake_checkpoints import fake_state_dict, key_listing

from talkrt.errors import TalkrtError
from talkrt.models.gpt_sovits.sovits import (
    SMALL_CONFIG,
    V2_CONFIG,
    SovitsDecoderGraph,
    build_random_sovits,
    linear_spectrogram,
)
from talkrt.models.gpt_sovits.sovits_checkpoint import (
    UnsupportedSovitsVersion,
    load_sovits,
    sovits_from_object,
)

pytestmark = pytest.mark.filterwarnings("ignore")

SMALL_PRO = replace(SMALL_CONFIG, version="v2Pro")


def _config_dict(cfg) -> dict:
    """The checkpoint's config as the training code stores it: model and data sections."""
    model = asdict(cfg)
    data = {k: model.pop(k) for k in ("sampling_rate", "filter_length", "hop_length", "win_length")}
    return {"model": model, "data": data}


def _save(obj: dict, path, header: bytes | None = None) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    assert data[:2] == b"PK"
    path.write_bytes(data if header is None else header + data[2:])


def _inputs(cfg, tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg.codebook_size, (1, 1, tokens), generator=g)
    phones = torch.randint(0, cfg.n_symbols, (1, max(2, tokens // 2 + 3)), generator=g)
    spec = linear_spectrogram(0.3 * torch.randn(1, 32000, generator=g))
    noise = torch.randn(1, cfg.inter_channels, 2 * tokens, generator=g)
    sv = torch.randn(1, cfg.sv_dim, generator=g)
    return codes, phones, spec, noise, sv


# ----------------------------------------------------------------------------- official layouts


@pytest.mark.parametrize(
    "listing, version, keep_enc_q",
    [
        ("gpt_sovits_s2_v2", "v2", True),  # pretrained s2G2333k.pth keeps enc_q
        ("gpt_sovits_s2_v2", "v2", False),  # user weights drop it
        ("gpt_sovits_s2_v2pro", "v2Pro", False),
        ("gpt_sovits_s2_v2proplus", "v2ProPlus", True),
    ],
)
def test_official_listing_loads_strictly(listing: str, version: str, keep_enc_q: bool) -> None:
    state = fake_state_dict(listing)
    assert any(k.startswith("enc_q.") for k in state)
    weights = {k: v.half() for k, v in state.items() if keep_enc_q or not k.startswith("enc_q.")}  # savee writes fp16
    loaded = sovits_from_object({"weight": weights, "config": {"model": {"version": version}}, "info": "8epoch_96iteration"}, listing)
    assert loaded.version == version and loaded.had_enc_q == keep_enc_q and loaded.info == "8epoch_96iteration"
    model_state = loaded.model.state_dict()
    expected = {k for k in key_listing(listing) if not k.startswith("enc_q.")}
    assert set(model_state) == expected
    for key in ("dec.ups.0.weight_v", "enc_p.text_embedding.weight", "quantizer.vq.layers.0._codebook.embed", "ref_enc.fc.fc.weight"):
        assert model_state[key].dtype == torch.float32
        assert torch.equal(model_state[key], state[key].half().float())
    assert loaded.model.config.is_pro == (version != "v2")


def test_config_sections_set_the_architecture() -> None:
    """The s2.json model section (with its training-only keys) builds the released v2 shape."""
    section = {
        "inter_channels": 192, "hidden_channels": 192, "filter_channels": 768, "n_heads": 2, "n_layers": 6, "kernel_size": 3,
        "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
        "upsample_rates": [10, 8, 2, 2, 2], "upsample_initial_channel": 512, "upsample_kernel_sizes": [16, 16, 8, 2, 2],
        "n_layers_q": 3, "use_spectral_norm": False, "gin_channels": 512, "semantic_frame_rate": "25hz", "freeze_quantizer": True,
    }
    from talkrt.models.gpt_sovits.sovits import config_from_checkpoint

    cfg = config_from_checkpoint({"model": section, "data": {"sampling_rate": 32000, "hop_length": 640}}, "v2")
    assert cfg == V2_CONFIG
    with pytest.raises(TalkrtError, match="resblock"):
        config_from_checkpoint({"model": {**section, "resblock": "2"}}, "v2")


def test_missing_or_extra_key_fails_in_one_line() -> None:
    model = build_random_sovits(SMALL_CONFIG)
    state = dict(model.state_dict())
    config = _config_dict(SMALL_CONFIG)
    missing = {k: v for k, v in state.items() if k != "flow.flows.2.enc.in_layers.0.weight_g"}
    with pytest.raises(TalkrtError) as err:
        sovits_from_object({"weight": missing, "config": config}, "user.pth")
    assert "\n" not in str(err.value) and "missing" in str(err.value) and "flow.flows.2.enc.in_layers.0.weight_g" in str(err.value)
    extra = {**state, "dec.extra.weight": torch.zeros(3)}
    with pytest.raises(TalkrtError) as err:
        sovits_from_object({"weight": extra, "config": config}, "user.pth")
    assert "\n" not in str(err.value) and "unexpected" in str(err.value) and "dec.extra.weight" in str(err.value)
    with pytest.raises(TalkrtError, match="no 'weight'"):
        sovits_from_object({"config": config}, "user.pth")


# ----------------------------------------------------------------------------- files and headers


@pytest.mark.parametrize("header, version", [(b"05", "v2Pro"), (b"06", "v2ProPlus")])
def test_pro_header_files_load(tmp_path, header: bytes, version: str) -> None:
    cfg = replace(SMALL_PRO, version=version)
    model = build_random_sovits(cfg, seed=3)
    path = tmp_path / "user_e8_s96.pth"
    weights = {k: v.half() for k, v in model.state_dict().items()}
    _save({"weight": weights, "config": _config_dict(cfg), "info": "8epoch_96iteration"}, path, header)
    with pytest.raises(Exception):  # what a plain torch.load makes of the file
        torch.load(path, weights_only=True)
    loaded = load_sovits(path)
    assert loaded.version == version and loaded.config == cfg and not loaded.had_enc_q
    codes, phones, spec, noise, sv = _inputs(cfg, 4)
    with torch.no_grad():
        reference = build_random_sovits(cfg, seed=3).half().float()  # the same weights after the file's fp16 round trip
        expected = reference.decode(codes, phones, reference.reference_style(spec, sv), noise, 0.5)
        actual = loaded.model.decode(codes, phones, loaded.model.reference_style(spec, sv), noise, 0.5)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)


def test_hparams_config_loads_without_trust(tmp_path) -> None:
    """Training writes its config as a utils.HParams object: read as data, no pickle trust needed."""
    module = types.ModuleType("utils")

    class HParams:
        def __init__(self, **kwargs):
            for key, value in kwargs.items():
                setattr(self, key, HParams(**value) if isinstance(value, dict) else value)

    HParams.__module__, HParams.__qualname__ = "utils", "HParams"
    module.HParams = HParams
    model = build_random_sovits(SMALL_CONFIG)
    path = tmp_path / "user.pth"
    sys.modules["utils"] = module
    try:
        _save({"weight": model.state_dict(), "config": HParams(**_config_dict(SMALL_CONFIG))}, path)
    finally:
        del sys.modules["utils"]
    loaded = load_sovits(path)
    assert loaded.version == "v2" and loaded.config == SMALL_CONFIG
    assert load_sovits(path, trust=True).config == SMALL_CONFIG


def test_header_file_with_other_objects_needs_trust(tmp_path) -> None:
    import argparse

    model = build_random_sovits(SMALL_PRO)
    path = tmp_path / "user.pth"
    _save({"weight": model.state_dict(), "config": _config_dict(SMALL_PRO), "info": argparse.Namespace(epoch=8)}, path, b"05")
    with pytest.raises(TalkrtError) as err:
        load_sovits(path)
    assert "\n" not in str(err.value) and "header 05" in str(err.value) and "--trust-checkpoint" in str(err.value)
    assert load_sovits(path, trust=True).version == "v2Pro"


def test_header_and_weights_must_agree(tmp_path) -> None:
    model = build_random_sovits(SMALL_CONFIG)
    path = tmp_path / "odd.pth"
    _save({"weight": model.state_dict(), "config": _config_dict(SMALL_CONFIG)}, path, b"05")
    with pytest.raises(TalkrtError, match="header 05 says v2Pro"):
        load_sovits(path)


def _v1_weights() -> dict:
    return {"enc_p.text_embedding.weight": torch.zeros(322, 192), "ref_enc.spectral.0.fc.weight": torch.zeros(128, 1025), "dec.conv_pre.weight": torch.zeros(512, 192, 7)}


def _cfm_weights(lora: bool = False) -> dict:
    weights = {"cfm.estimator.transformer_blocks.0.attn.to_k.weight": torch.zeros(8, 8), "bridge.0.weight": torch.zeros(512, 192, 1), "wns1.enc.in_layers.0.bias": torch.zeros(4)}
    if lora:
        weights = {"cfm.estimator.transformer_blocks.0.attn.to_k.lora_A.default.weight": torch.zeros(8, 16)}
    return weights


@pytest.mark.parametrize(
    "obj, header, named",
    [
        ({"weight": _v1_weights(), "config": {"model": {}}}, None, "v1"),
        ({"weight": _cfm_weights(), "config": {"model": {"version": "v3"}}}, None, "v3"),
        ({"weight": _cfm_weights(), "config": {"model": {"version": "v4"}}}, None, "v4"),
        ({"weight": _cfm_weights(), "config": {"model": {}}}, None, "v3/v4"),
        ({"weight": _cfm_weights(lora=True), "config": {"model": {}}, "lora_rank": 32}, b"03", "v3 LoRA"),
        ({"weight": _cfm_weights(lora=True), "config": {"model": {}}, "lora_rank": 8}, b"04", "v4 LoRA"),
        ({"weight": _cfm_weights(), "config": {"model": {}}}, b"02", "v3"),
    ],
)
def test_other_versions_are_refused_by_name(tmp_path, obj: dict, header: bytes | None, named: str) -> None:
    path = tmp_path / "s2G.pth"
    _save(obj, path, header)
    with pytest.raises(UnsupportedSovitsVersion) as err:
        load_sovits(path)
    message = str(err.value)
    assert "\n" not in message and f"GPT-SoVITS {named} SoVITS checkpoint" in message and "supports v2, v2Pro, v2ProPlus" in message


# ----------------------------------------------------------------------------- decode contract


@pytest.mark.parametrize("tokens", [1, 3, 8])
def test_decode_length_is_1280_samples_per_token(tokens: int) -> None:
    """Two 50 Hz frames per 25 Hz token, 640 samples per frame at 32 kHz (the original gives 37 -> 47360)."""
    model = build_random_sovits(SMALL_CONFIG)
    codes, phones, spec, noise, _ = _inputs(SMALL_CONFIG, tokens)
    with torch.no_grad():
        wave = model.decode(codes, phones, model.reference_style(spec), noise, 0.5)
    assert wave.shape == (1, 1, tokens * 2 * 640) and SMALL_CONFIG.samples_per_token == 1280
    assert torch.isfinite(wave).all() and wave.abs().max() <= 1


def test_decode_is_deterministic_and_noise_scale_zero_ignores_noise() -> None:
    model = build_random_sovits(SMALL_PRO)
    codes, phones, spec, noise, sv = _inputs(SMALL_PRO, 6)
    other = torch.randn(noise.shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ge = model.reference_style(spec, sv)
        first = model.decode(codes, phones, ge, noise, 0.5)
        again = model.decode(codes, phones, ge, noise, 0.5)
        moved = model.decode(codes, phones, ge, other, 0.5)
        silent_a = model.decode(codes, phones, ge, noise, 0.0)
        silent_b = model.decode(codes, phones, ge, other, 0.0)
    assert torch.equal(first, again)
    assert (first - moved).abs().max() > 1e-5
    assert torch.equal(silent_a, silent_b)
    with pytest.raises(TalkrtError, match="sv_emb"):
        model.reference_style(spec)


def test_extract_latent_picks_the_nearest_code() -> None:
    model = build_random_sovits(SMALL_CONFIG)
    features = torch.randn(1, SMALL_CONFIG.ssl_dim, 14, generator=torch.Generator().manual_seed(4))
    codes = model.extract_latent(features)
    assert codes.shape == (1, 1, 7)
    projected = model.ssl_proj(features)[0].T  # (frames, dim)
    nearest = torch.cdist(projected, model.quantizer.embed).argmin(dim=1)
    assert torch.equal(codes[0, 0], nearest)
    # decode's lookup gives back those codebook rows
    assert torch.equal(model.quantizer.decode(codes)[0].T, model.quantizer.embed[nearest])


# ----------------------------------------------------------------------------- spectrogram


def _numpy_spectrogram(wave: np.ndarray, n_fft: int = 2048, hop: int = 640) -> np.ndarray:
    """Frame by frame: reflect pad, periodic Hann, real FFT, magnitude with 1e-8 under the root."""
    pad = (n_fft - hop) // 2
    padded = np.pad(wave.astype(np.float64), (pad, pad), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = 1 + (len(padded) - n_fft) // hop
    columns = [np.fft.rfft(padded[i * hop : i * hop + n_fft] * window) for i in range(frames)]
    return np.sqrt(np.abs(np.stack(columns, axis=1)) ** 2 + 1e-8)


@pytest.mark.parametrize("samples", [2048 + 640 * 7 + 123, 32000])
def test_spectrogram_matches_per_frame_fft(samples: int) -> None:
    wave = 0.5 * torch.randn(1, samples, generator=torch.Generator().manual_seed(samples))
    ours = linear_spectrogram(wave)[0].numpy()
    reference = _numpy_spectrogram(wave[0].numpy())
    assert ours.shape == reference.shape == (1025, samples // 640)
    np.testing.assert_allclose(ours, reference, atol=2e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- ONNX


def test_decoder_exports_with_a_dynamic_token_axis(tmp_path) -> None:
    from talkrt.export.onnx import fold_weight_norm
    from talkrt.export.validate import onnx_session

    model = build_random_sovits(SMALL_PRO, seed=5)
    reference = build_random_sovits(SMALL_PRO, seed=5)  # the same weights, weight norm kept
    graph = SovitsDecoderGraph(fold_weight_norm(model)).eval()
    assert not any(k.endswith(("weight_g", "weight_v")) for k in graph.state_dict())

    def inputs(tokens: int, seed: int):
        codes, phones, spec, noise, sv = _inputs(SMALL_PRO, tokens, seed)
        with torch.no_grad():
            ge = reference.reference_style(spec, sv)
        return codes, phones, ge, noise, torch.tensor([0.5])

    names = ["codes", "phones", "ge", "noise", "noise_scale"]
    path = tmp_path / "sovits_decoder.onnx"
    with torch.no_grad():
        torch.onnx.export(
            graph,
            inputs(6, 0),
            str(path),
            input_names=names,
            output_names=["waveform"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"codes": {2: "tokens"}, "phones": {1: "phones"}, "noise": {2: "frames"}, "waveform": {2: "samples"}},
        )
    session = onnx_session(path)
    for tokens, seed in ((3, 1), (11, 2)):
        args = inputs(tokens, seed)
        with torch.no_grad():
            expected = reference.decode(*args[:4], args[4]).numpy()
        (actual,) = session.run(None, {n: a.numpy() for n, a in zip(names, args)})
        assert actual.shape == (1, 1, tokens * 1280)
        np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-3)
