"""HuBERT / Wav2Vec2 encoders: official layouts, strict loading of checkpoint directories, layer choice, normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fake_checkpoints import key_listing

from talkrt.errors import TalkrtError
from talkrt.models.checkpoints import map_weight_norm_names
from talkrt.models.hubert.model import ENCODER_PRESETS, SpeechEncoder, build_random, load_pretrained, num_frames

pytestmark = pytest.mark.filterwarnings("ignore")


def _shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("preset, listing", [("chinese-hubert-base", "hubert_base_chinese"), ("chinese-hubert-large", "hubert_large_stable_ln_assumed")])
def test_presets_match_official_layouts(preset, listing) -> None:
    """The listings use legacy weight_g/weight_v names, as transformers 4.x saved them."""
    official = {k: shape for k, (shape, _) in key_listing(listing).items()}
    ours = _shapes(build_random(ENCODER_PRESETS[preset]))
    renamed = map_weight_norm_names({k: torch.empty(s) for k, s in official.items()}, set(ours))
    assert {k: tuple(v.shape) for k, v in renamed.items()} == ours


def _legacy_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in state.items()}


def _write_checkpoint_dir(directory, preset_name: str, seed: int, fmt: str, prefix: str = "", extra: dict | None = None, do_normalize: bool | None = None):
    from transformers import HubertConfig, Wav2Vec2Config

    preset = ENCODER_PRESETS[preset_name]
    model = build_random(preset, seed)
    state = {prefix + k: v for k, v in _legacy_names(model.state_dict()).items()}
    state.update(extra or {})
    directory.mkdir(parents=True, exist_ok=True)
    config_class = HubertConfig if preset.architecture == "hubert" else Wav2Vec2Config
    (directory / "config.json").write_text(json.dumps(config_class(**preset.config).to_dict()))
    if do_normalize is not None:
        (directory / "preprocessor_config.json").write_text(json.dumps({"do_normalize": do_normalize, "sampling_rate": 16000}))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "pytorch_model.bin")
    return model


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_checkpoint_directory_loads_strictly_and_matches_transformers(tmp_path, fmt) -> None:
    reference = _write_checkpoint_dir(tmp_path / "ckpt", "tiny-hubert", seed=4, fmt=fmt)
    ours = load_pretrained(tmp_path / "ckpt", "hubert")
    from transformers import HubertModel

    theirs = HubertModel.from_pretrained(str(tmp_path / "ckpt")).eval()
    wav = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(wav).last_hidden_state
        torch.testing.assert_close(ours(wav).last_hidden_state, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs(wav).last_hidden_state, expected, atol=1e-5, rtol=1e-5)


def test_ctc_checkpoint_drops_its_head(tmp_path) -> None:
    """facebook/wav2vec2-base-960h style: encoder under `wav2vec2.`, plus an lm_head."""
    extra = {"lm_head.weight": torch.zeros(32, 64), "lm_head.bias": torch.zeros(32)}
    reference = _write_checkpoint_dir(tmp_path / "ctc", "tiny-wav2vec2", seed=2, fmt="safetensors", prefix="wav2vec2.", extra=extra)
    ours = load_pretrained(tmp_path / "ctc", "wav2vec2")
    for key, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_incomplete_checkpoint_is_refused(tmp_path) -> None:
    _write_checkpoint_dir(tmp_path / "ckpt", "tiny-hubert", seed=0, fmt="bin")
    state = torch.load(tmp_path / "ckpt" / "pytorch_model.bin")
    del state["encoder.layers.1.final_layer_norm.weight"]
    torch.save(state, tmp_path / "ckpt" / "pytorch_model.bin")
    with pytest.raises(TalkrtError, match=r"ckpt does not match hubert: 1 missing, e\.g\. encoder\.layers\.1\.final_layer_norm\.weight \(64,\)"):
        load_pretrained(tmp_path / "ckpt", "hubert")


def test_wrong_architecture_and_missing_config(tmp_path) -> None:
    _write_checkpoint_dir(tmp_path / "w2v", "tiny-wav2vec2", seed=0, fmt="bin")
    with pytest.raises(TalkrtError, match="holds a wav2vec2 model, not hubert"):
        load_pretrained(tmp_path / "w2v", "hubert")
    with pytest.raises(TalkrtError, match="no config.json"):
        load_pretrained(tmp_path, "hubert")


@pytest.mark.parametrize("preset", ["tiny-hubert", "tiny-wav2vec2"])
def test_layer_choice_equals_transformers_hidden_states(preset) -> None:
    """Post-LN (HuBERT base) and pre-LN (stable layer norm) encoders both count layers like hidden_states."""
    wav = torch.randn(1, 6000, generator=torch.Generator().manual_seed(1))
    full = build_random(ENCODER_PRESETS[preset], seed=3)
    with torch.no_grad():
        outputs = full(wav, output_hidden_states=True)
        # The last layer is last_hidden_state (after a pre-LN model's final LayerNorm).
        expected = [*outputs.hidden_states[:-1], outputs.last_hidden_state]
        for layer, reference in enumerate(expected):
            encoder = SpeechEncoder(build_random(ENCODER_PRESETS[preset], seed=3), layer=layer, normalize=False)
            torch.testing.assert_close(encoder(wav), reference, atol=1e-5, rtol=1e-5)
            assert len(encoder.model.encoder.layers) == layer


def test_normalization_matches_the_feature_extractor() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    wav = (np.random.default_rng(0).standard_normal(7777) * 0.3 + 0.05).astype(np.float32)
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
    prepared = extractor(wav, sampling_rate=16000, return_tensors="pt").input_values
    model = build_random(ENCODER_PRESETS["tiny-hubert"], seed=0)
    with torch.no_grad():
        expected = model(prepared).last_hidden_state
        ours = SpeechEncoder(model, normalize=True)(torch.from_numpy(wav)[None])
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("samples, frames", [(400, 1), (719, 1), (720, 2), (16000, 49), (61334, 191), (960000, 2999)])
def test_frame_count(samples, frames) -> None:
    """floor((S - 400) / 320) + 1; 3.833375 s at 16 kHz gives 191 frames."""
    assert num_frames(samples) == frames
    if samples <= 61334:
        encoder = SpeechEncoder(build_random(ENCODER_PRESETS["tiny-hubert"]), layer=0)
        with torch.no_grad():
            assert encoder(torch.zeros(1, samples) + 0.01 * torch.randn(1, samples)).shape == (1, frames, 64)


def test_bad_layer() -> None:
    with pytest.raises(TalkrtError, match="layer 3 does not exist"):
        SpeechEncoder(build_random(ENCODER_PRESETS["tiny-hubert"]), layer=3)
