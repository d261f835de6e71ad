"""VITS: presets against the official layouts, strict loading of original and
transformers checkpoints (key mapping, weight-norm folding), tokenizers."""

from __future__ import annotations

import json

import pytest
import torch
from fake_checkpoints import fake_state_dict, key_listing

from talkrt.errors import TalkrtError
from talkrt.models.checkpoints import map_weight_norm_names
from talkrt.models.vits.model import (
    _empty_model,
    build_random_vits,
    weight_from_norm,
    load_vits,
    make_config,
    map_original_state_dict,
    vits_info,
)
from talkrt.models.vits.text import ORIGINAL_SYMBOLS, VitsTokenizer, encode_phonemes, intersperse

pytestmark = pytest.mark.filterwarnings("ignore")


def _shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _legacy_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v"): v
        for k, v in state.items()
    }


def test_tiny_preset_builds_complete() -> None:
    model = build_random_vits("tiny", seed=1)
    info = vits_info(model)
    assert not model.training and info.source == "random" and info.add_blank and info.vocab is None
    assert (info.sample_rate, info.hop_length, info.num_speakers) == (16000, 16, 1)
    assert model.config.use_stochastic_duration_prediction and len(model.flow.flows) == 2 and len(model.duration_predictor.flows) == 3


@pytest.mark.parametrize("preset, listing", [("ljs-base", "vits_ljs_base"), ("vctk-base", "vits_vctk_base")])
def test_original_presets_match_mapped_official_layouts(preset, listing) -> None:
    """The presets of the original configs have exactly the layout an official checkpoint maps to."""
    official = {k: torch.empty(shape, device="meta") for k, (shape, _) in key_listing(listing).items()}
    mapped = map_original_state_dict(official)
    with torch.device("meta"):
        model = _empty_model(make_config(preset))
    ours = _shapes(model)
    assert {k: tuple(v.shape) for k, v in map_weight_norm_names(mapped, set(ours)).items()} == ours
    assert make_config(preset).sampling_rate == 22050


def test_original_preset_random_model_carries_the_symbol_table() -> None:
    # Narrowed so the test stays fast; the speaker and vocabulary settings are the preset's.
    small = {"hidden_size": 32, "ffn_dim": 32, "num_hidden_layers": 1, "upsample_initial_channel": 32, "posterior_encoder_num_wavenet_layers": 1, "spectrogram_bins": 9}
    info = vits_info(build_random_vits("vctk-base", seed=1, **small))
    assert info.num_speakers == 109 and info.sample_rate == 22050 and info.phonemes
    assert info.vocab == {s: i for i, s in enumerate(ORIGINAL_SYMBOLS)}


def test_mms_preset_matches_official_layout() -> None:
    official = {k: shape for k, (shape, _) in key_listing("hf_vitsmodel_default_mms_tts_eng").items()}
    with torch.device("meta"):
        model = _empty_model(make_config("mms-tts-eng"))
    ours = _shapes(model)
    renamed = map_weight_norm_names({k: torch.empty(s, device="meta") for k, s in official.items()}, set(ours))
    assert {k: tuple(v.shape) for k, v in renamed.items()} == ours
    info = vits_info(model)
    assert (info.sample_rate, info.hop_length, info.num_speakers) == (16000, 256, 1)


def test_random_build_is_seeded() -> None:
    a, b, c = build_random_vits("tiny", seed=3), build_random_vits("tiny", seed=3), build_random_vits("tiny", seed=4)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.text_encoder.embed_tokens.weight, c.text_encoder.embed_tokens.weight)


# --- original jaywalnut310 checkpoints ---------------------------------------


@pytest.fixture(scope="module")
def ljs_state() -> dict[str, torch.Tensor]:
    return fake_state_dict("vits_ljs_base", seed=1)


def _save_original(path, state) -> None:
    optimizer = {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.8, 0.99), "eps": 1e-9, "params": list(range(4))}]}
    torch.save({"model": state, "iteration": 1, "optimizer": optimizer, "learning_rate": 2e-4}, path)


@pytest.mark.parametrize("listing, speakers", [("vits_ljs_base", 1), ("vits_vctk_base", 109)])
def test_original_checkpoint_loads_strictly(tmp_path, ljs_state, listing, speakers) -> None:
    state = ljs_state if listing == "vits_ljs_base" else fake_state_dict(listing, seed=2)
    _save_original(tmp_path / "G_1000.pth", state)
    model, info = load_vits(tmp_path / "G_1000.pth")
    assert (info.source, info.sample_rate, info.hop_length, info.num_speakers) == ("original", 22050, 256, speakers)
    assert info.add_blank and info.phonemes and info.vocab["_"] == 0 and len(ORIGINAL_SYMBOLS) == 178

    # Every original key is used exactly once and every model weight is filled.
    mapped = map_original_state_dict(state)
    expected = model.state_dict()
    renamed = map_weight_norm_names(mapped, set(expected))
    assert set(renamed) == set(expected)
    n_decoder_wn = sum(1 for k in state if k.startswith("dec.") and k.endswith(".weight_g"))
    assert len(mapped) == len(state) - n_decoder_wn  # each g/v pair folds into one weight

    sd = model.state_dict()
    # Attention projections: Conv1d(k=1) squeezed to Linear.
    assert torch.equal(sd["text_encoder.encoder.layers.2.attention.q_proj.weight"], state["enc_p.encoder.attn_layers.2.conv_q.weight"][:, :, 0])
    assert torch.equal(sd["text_encoder.encoder.layers.5.attention.out_proj.bias"], state["enc_p.encoder.attn_layers.5.conv_o.bias"])
    assert torch.equal(sd["text_encoder.encoder.layers.0.attention.emb_rel_v"], state["enc_p.encoder.attn_layers.0.emb_rel_v"])
    assert torch.equal(sd["text_encoder.encoder.layers.3.final_layer_norm.bias"], state["enc_p.encoder.norm_layers_2.3.beta"])
    # SDP: ElementwiseAffine, then ConvFlow at odd original indices (Flips have no weights).
    assert torch.equal(sd["duration_predictor.flows.0.log_scale"], state["dp.flows.0.logs"])
    assert torch.equal(sd["duration_predictor.flows.1.conv_pre.weight"], state["dp.flows.1.pre.weight"])
    assert torch.equal(sd["duration_predictor.flows.4.conv_proj.bias"], state["dp.flows.7.proj.bias"])
    assert torch.equal(sd["duration_predictor.post_flows.3.conv_dds.norms_2.1.weight"], state["dp.post_flows.5.convs.norms_2.1.gamma"])
    assert torch.equal(sd["duration_predictor.conv_dds.convs_dilated.2.weight"], state["dp.convs.convs_sep.2.weight"])
    # Prior flow: coupling layers at even indices.
    assert torch.equal(sd["flow.flows.3.conv_post.weight"], state["flow.flows.6.post.weight"])
    assert torch.equal(sd["flow.flows.1.wavenet.in_layers.2.parametrizations.weight.original1"], state["flow.flows.2.enc.in_layers.2.weight_v"])
    assert torch.equal(sd["posterior_encoder.wavenet.res_skip_layers.15.parametrizations.weight.original0"], state["enc_q.enc.res_skip_layers.15.weight_g"])
    # Decoder: weight norm folded to plain weights, w = g * v / ||v|| (norm over all dims but 0).
    for orig, ours in (("dec.ups.0", "decoder.upsampler.0"), ("dec.resblocks.7.convs2.1", "decoder.resblocks.7.convs2.1")):
        g, v = state[f"{orig}.weight_g"], state[f"{orig}.weight_v"]
        norm = v.pow(2).sum(dim=tuple(range(1, v.dim())), keepdim=True).sqrt()
        torch.testing.assert_close(sd[f"{ours}.weight"], g * v / norm, rtol=1e-6, atol=0)
        assert torch.equal(sd[f"{ours}.weight"], torch._weight_norm(v, g, 0))
    assert torch.equal(sd["decoder.conv_post.weight"], state["dec.conv_post.weight"])
    if speakers > 1:
        assert torch.equal(sd["embed_speaker.weight"], state["emb_g.weight"])
        assert torch.equal(sd["decoder.cond.weight"], state["dec.cond.weight"])


def test_fold_weight_norm_matches_torch() -> None:
    layer = torch.nn.utils.weight_norm(torch.nn.ConvTranspose1d(8, 4, 6, stride=3))
    with torch.no_grad():
        layer.weight_g.uniform_(0.5, 2.0)
    torch.testing.assert_close(weight_from_norm(layer.weight_g, layer.weight_v), torch._weight_norm(layer.weight_v, layer.weight_g, 0))


def test_original_nosdp_and_json_config(tmp_path, ljs_state) -> None:
    """ljs_nosdp: plain duration predictor detected from the dp keys; an original config json is honoured."""
    generator = torch.Generator().manual_seed(5)
    state = {k: v for k, v in ljs_state.items() if not k.startswith("dp.")}
    shapes = {"conv_1.weight": (256, 192, 3), "conv_2.weight": (256, 256, 3), "proj.weight": (1, 256, 1), "proj.bias": (1,)}
    shapes.update({f"{n}.{p}": (256,) for n in ("conv_1", "conv_2") for p in ("bias",)})
    shapes.update({f"{n}.{p}": (256,) for n in ("norm_1", "norm_2") for p in ("gamma", "beta")})
    state.update({f"dp.{k}": torch.randn(shape, generator=generator) for k, shape in shapes.items()})
    _save_original(tmp_path / "nosdp.pth", state)
    model, info = load_vits(tmp_path / "nosdp.pth")
    assert not model.config.use_stochastic_duration_prediction
    assert torch.equal(model.duration_predictor.norm_2.bias, state["dp.norm_2.beta"])

    config = {
        "train": {"segment_size": 8192},
        "data": {"sampling_rate": 16000, "filter_length": 1024, "hop_length": 256, "add_blank": False, "n_speakers": 0},
        "model": {
            "inter_channels": 192, "hidden_channels": 192, "filter_channels": 768, "n_heads": 2, "n_layers": 6, "kernel_size": 3,
            "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
            "upsample_rates": [8, 8, 2, 2], "upsample_initial_channel": 512, "upsample_kernel_sizes": [16, 16, 4, 4],
            "n_layers_q": 3, "use_spectral_norm": False, "use_sdp": False,
        },
    }
    (tmp_path / "nosdp.json").write_text(json.dumps(config))
    model, info = load_vits(tmp_path / "nosdp.pth", config=tmp_path / "nosdp.json")
    assert (info.sample_rate, info.add_blank) == (16000, False)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "truncated"),
        ("missing", "missing"),
        ("extra", "no VitsModel counterpart"),
        ("wrong_family", "not a VITS generator checkpoint"),
        ("misshaped", "another shape"),
    ],
)
def test_damaged_original_checkpoints_fail_in_one_line(tmp_path, ljs_state, damage, message) -> None:
    state = dict(ljs_state)
    path = tmp_path / "G.pth"
    if damage == "missing":
        del state["flow.flows.4.enc.in_layers.1.weight_v"], state["flow.flows.4.enc.in_layers.1.weight_g"]
    elif damage == "extra":
        state["dp.flows.2.m"] = torch.zeros(2, 1)
    elif damage == "misshaped":
        state["enc_p.encoder.ffn_layers.2.conv_2.bias"] = torch.zeros(7)
    elif damage == "wrong_family":
        state = {k: torch.zeros(shape) for k, (shape, _) in key_listing("wav2lip").items()}
    _save_original(path, state)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TalkrtError) as error:
        load_vits(path)
    text = str(error.value)
    assert message in text and "\n" not in text, text


# --- transformers directories --------------------------------------------------


def _write_transformers_dir(directory, model, vocab: dict[str, int], fmt: str = "safetensors", tokenizer_config: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = _legacy_names(model.state_dict())
    (directory / "config.json").write_text(model.config.to_json_string())
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "pytorch_model.bin")


_VOCAB = {c: i for i, c in enumerate(["_", " ", "'", "-", *"abcdefghijklmnopqrstuvwxyz", *"0123456789"])}  # 40 > 38 ids


def _waveform(model, ids: list[int]) -> torch.Tensor:
    model.noise_scale = 0.0
    model.noise_scale_duration = 0.0
    torch.manual_seed(0)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).waveform


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_transformers_directory_loads_strictly_and_matches(tmp_path, fmt) -> None:
    vocab = dict(list(_VOCAB.items())[:38])
    source = build_random_vits("tiny", seed=7)
    _write_transformers_dir(tmp_path / "mms", source, vocab, fmt, {"add_blank": True, "normalize": True, "phonemize": False, "language": "eng"})
    model, info = load_vits(tmp_path / "mms")
    assert (info.source, info.sample_rate, info.hop_length, info.add_blank, info.language) == ("transformers", 16000, 16, True, "eng")
    assert info.vocab == vocab and not info.phonemes
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    ids = VitsTokenizer(vocab).encode("Hello world")
    wave = _waveform(model, ids)
    assert wave.shape[1] > 0 and wave.shape[1] % info.hop_length == 0
    torch.testing.assert_close(wave, _waveform(source, ids), rtol=0, atol=0)


def test_damaged_transformers_directory_fails_in_one_line(tmp_path) -> None:
    source = build_random_vits("tiny", seed=7)
    _write_transformers_dir(tmp_path / "mms", source, _VOCAB)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "mms" / "model.safetensors"))
    del state["decoder.upsampler.1.weight"]
    save_file(state, str(tmp_path / "mms" / "model.safetensors"))
    with pytest.raises(TalkrtError, match="missing") as error:
        load_vits(tmp_path / "mms")
    assert "decoder.upsampler.1.weight" in str(error.value) and "\n" not in str(error.value)

    (tmp_path / "mms" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(TalkrtError, match="safetensors"):
        load_vits(tmp_path / "mms")
    with pytest.raises(TalkrtError, match="not found"):
        load_vits(tmp_path / "nowhere")


# --- text ------------------------------------------------------------------------


def test_original_symbol_table() -> None:
    assert len(ORIGINAL_SYMBOLS) == 178
    assert ORIGINAL_SYMBOLS[0] == "_" and ORIGINAL_SYMBOLS[16] == " " and ORIGINAL_SYMBOLS[17] == "A" and ORIGINAL_SYMBOLS[69] == "ɑ"
    assert ORIGINAL_SYMBOLS[-1] == "ᵻ" and ORIGINAL_SYMBOLS[175] == "\u0329"
    ids = encode_phonemes("hə", add_blank=True)
    assert ids == [0, ORIGINAL_SYMBOLS.index("h"), 0, ORIGINAL_SYMBOLS.index("ə"), 0]
    assert encode_phonemes("ˈɑː", add_blank=False) == [156, 69, 158]
    assert intersperse([]) == [0]


@pytest.mark.parametrize("add_blank", [True, False])
def test_mms_tokenizer_matches_transformers(tmp_path, add_blank) -> None:
    from transformers import VitsTokenizer as HFVitsTokenizer

    vocab = {"k": 0, " ": 1, "'": 2, "-": 3, **{c: 4 + i for i, c in enumerate("abcdefghijlmnopqrstuvwxyz")}, "Q": 30}
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(vocab, ensure_ascii=False))
    reference = HFVitsTokenizer(str(path), add_blank=add_blank, normalize=True, phonemize=False)
    ours = VitsTokenizer.from_file(path, add_blank=add_blank)
    for text in ["Hello, World!", "  it's a well-known FACT.  ", "Qatar q é ñ 42", "k", ""]:
        assert ours.encode(text) == reference(text).input_ids, text
