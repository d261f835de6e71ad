"""HuBERT and Wav2Vec2 speech encoders, through transformers.

A model comes from a local checkpoint directory (``config.json`` plus
``model.safetensors`` or ``pytorch_model.bin``, legacy ``weight_g``/``weight_v``
names included) loaded strictly, or from a named preset with random weights.
``SpeechEncoder`` wraps it for export: optional per-utterance normalisation
inside the graph, and the output of a chosen hidden layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from talkrt.errors import TalkrtError

SAMPLE_RATE = 16000
RECEPTIVE_FIELD = 400  # samples seen by one output frame of the conv front end
HOP = 320  # samples between output frames: 50 frames per second
NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


def num_frames(num_samples: int) -> int:
    """Output frames for ``num_samples`` at 16 kHz: floor((S - 400) / 320) + 1, 0 below 400."""
    return 0 if num_samples < RECEPTIVE_FIELD else (num_samples - RECEPTIVE_FIELD) // HOP + 1


@dataclass(frozen=True)
class EncoderPreset:
    name: str
    architecture: str  # "hubert" | "wav2vec2"
    config: dict = field(default_factory=dict)  # overrides of the transformers config defaults
    do_normalize: bool = True
    note: str = ""

    @property
    def hidden_size(self) -> int:
        return self.config.get("hidden_size", 768)

    @property
    def num_layers(self) -> int:
        return self.config.get("num_hidden_layers", 12)


_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False}
_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096, "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}

PRESETS: dict[str, EncoderPreset] = {
    preset.name: preset
    for preset in (
        EncoderPreset("chinese-hubert-base", "hubert", _BASE, True, "TencentGameMate/chinese-hubert-base (DH_live, GPT-SoVITS)"),
        EncoderPreset("chinese-hubert-large", "hubert", _LARGE, True, "config assumed like facebook/hubert-large; a checkpoint's own config.json wins"),
        EncoderPreset("hubert-base-ls960", "hubert", _BASE, True, "facebook/hubert-base-ls960"),
        EncoderPreset("wav2vec2-base-960h", "wav2vec2", _BASE, True, "facebook/wav2vec2-base-960h (its CTC head is not part of the encoder)"),
        # Small random-weight encoders for fast tests; same structure, fewer and narrower layers.
        EncoderPreset("tiny-hubert", "hubert", {**_BASE, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}, True, "test preset"),
        EncoderPreset("tiny-wav2vec2", "wav2vec2", {**_LARGE, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}, False, "test preset (stable layer norm)"),
    )
}

# Keys of task heads and pre-training modules that sit beside the encoder in
# ForCTC / ForPreTraining checkpoints; they are dropped, everything else must match.
_HEAD_PREFIXES = ("lm_head.", "project_hid.", "project_q.", "quantizer.", "final_proj.", "label_embs_concat", "dropout_features")


def _classes(architecture: str):
    import transformers

    if architecture == "hubert":
        return transformers.HubertConfig, transformers.HubertModel
    if architecture == "wav2vec2":
        return transformers.Wav2Vec2Config, transformers.Wav2Vec2Model
    raise TalkrtError(f"unknown encoder architecture {architecture!r}; expected hubert or wav2vec2")


def build_random(preset: EncoderPreset, seed: int = 0) -> nn.Module:
    from talkrt.models.random_init import random_model

    config_class, model_class = _classes(preset.architecture)
    config = config_class(**preset.config)
    config._attn_implementation = "eager"
    return random_model(lambda: model_class(config), seed)


def read_do_normalize(directory: Path) -> bool | None:
    """``do_normalize`` from the directory's preprocessor_config.json, or None without one."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return None
    return bool(json.loads(path.read_text()).get("do_normalize", True))


def load_pretrained(directory: str | Path, architecture: str | None = None, trust: bool = False) -> nn.Module:
    """Load a transformers HubertModel / Wav2Vec2Model checkpoint directory strictly.

    Unlike ``from_pretrained``, which initialises missing weights at random with a
    warning, every encoder weight must be in the file.
    """
    from talkrt.models.checkpoints import load_strict, read_transformers_weights

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise TalkrtError(f"{directory} is not a transformers checkpoint directory (no config.json)")
    config_dict = json.loads(config_path.read_text())
    model_type = config_dict.get("model_type", architecture)
    if architecture and model_type != architecture:
        raise TalkrtError(f"{directory} holds a {model_type} model, not {architecture}")
    config_class, model_class = _classes(model_type)
    config = config_class.from_dict(config_dict)
    config._attn_implementation = "eager"
    model = model_class(config)
    state = read_transformers_weights(directory, trust)
    # ForCTC / ForPreTraining checkpoints nest the encoder under its model type.
    prefix = f"{model_type}."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    return load_strict(model, state, model_type, trust, source=str(directory))


class SpeechEncoder(nn.Module):
    """(B, S) 16 kHz waveform -> (B, T, hidden) features of one layer.

    ``layer`` counts like transformers' ``hidden_states``: 0 is the input to the
    first transformer layer, k < N the output of layer k, and N (the default) the
    model's ``last_hidden_state``, which for pre-LN (stable layer norm) models
    includes the final LayerNorm. Layers after the chosen one are dropped, so they
    cost nothing.
    """

    def __init__(self, model: nn.Module, layer: int | None = None, normalize: bool = True) -> None:
        super().__init__()
        total = model.config.num_hidden_layers
        layer = total if layer is None else layer
        if not 0 <= layer <= total:
            raise TalkrtError(f"layer {layer} does not exist: this encoder has layers 0..{total}")
        if layer < total:
            model.encoder.layers = model.encoder.layers[:layer]
            if model.config.do_stable_layer_norm:
                # Pre-LN models apply the final LayerNorm after the last layer only.
                model.encoder.layer_norm = nn.Identity()
        self.model = model.eval()
        self.layer = layer
        self.normalize = normalize

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            # Per utterance, as Wav2Vec2FeatureExtractor(do_normalize=True) does before the model.
            mean = input_values.mean(dim=-1, keepdim=True)
            var = input_values.var(dim=-1, keepdim=True, unbiased=False)
            input_values = (input_values - mean) / torch.sqrt(var + NORMALIZE_EPS)
        return self.model(input_values).last_hidden_state
