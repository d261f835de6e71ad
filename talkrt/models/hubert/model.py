"""HuBERT and Wav2Vec2 speech encoders, through transformers.

A model comes from a local checkpoint directory (``config.json`` plus
``model.safetensors`` or ``pytorch_model.bin``, legacy ``weight_g``/``weight_v``
names included) loaded strictly, or from a named preset with random weights.
``SpeechEncoder`` wraps it for export: optional per-utterance normalisation
inside the graph, and the output of a chosen hidden layer. ``SpeechRecognizer``
wraps a CTC fine-tuned HuBERT (``HubertForCTC``, e.g. facebook/hubert-large-ls960-ft)
and reorders its logits into torchaudio's HUBERT_ASR_LARGE labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from talkrt.errors import TalkrtError
from talkrt.fileio import read_json, read_json_object

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

    @property
    def vocab_size(self) -> int | None:
        """Size of the CTC head of a fine-tuned (ForCTC) preset; None for a bare encoder."""
        return self.config.get("vocab_size")


_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False}
_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096, "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}

ENCODER_PRESETS: dict[str, EncoderPreset] = {
    preset.name: preset
    for preset in (
        EncoderPreset("chinese-hubert-base", "hubert", _BASE, True, "TencentGameMate/chinese-hubert-base"),
        EncoderPreset("chinese-hubert-large", "hubert", _LARGE, True, "config assumed like facebook/hubert-large; a checkpoint's own config.json wins"),
        EncoderPreset("hubert-base-ls960", "hubert", _BASE, True, "facebook/hubert-base-ls960"),
        EncoderPreset("wav2vec2-base-960h", "wav2vec2", _BASE, True, "facebook/wav2vec2-base-960h (its CTC head is not part of the encoder)"),
        EncoderPreset("hubert-large-ls960-ft", "hubert", {**_LARGE, "vocab_size": 32}, True, "facebook/hubert-large-ls960-ft (HubertForCTC; torchaudio HUBERT_ASR_LARGE)"),
        # Small random-weight encoders for fast tests; same structure, fewer and narrower layers.
        EncoderPreset("tiny-hubert", "hubert", {**_BASE, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}, True, "test preset"),
        EncoderPreset("tiny-wav2vec2", "wav2vec2", {**_LARGE, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}, False, "test preset (stable layer norm)"),
        EncoderPreset("tiny-hubert-asr", "hubert", {**_LARGE, "vocab_size": 32, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}, True, "test preset (HubertForCTC like hubert-large-ls960-ft)"),
    )
}

# Keys of task heads and pre-training modules that sit beside the encoder in
# ForCTC / ForPreTraining checkpoints; they are dropped, everything else must match.
_HEAD_PREFIXES = ("lm_head.", "project_hid.", "project_q.", "quantizer.", "final_proj.", "label_embs_concat", "dropout_features")


# torchaudio.pipelines.HUBERT_ASR_LARGE.get_labels(): fairseq's dictionary without
# <pad> </s> <unk>; "-" is the CTC blank (fairseq's <s>, transformers' "<pad>").
CTC_LABELS = ("-", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z")
CTC_BLANK = 0
CTC_BLANK_TOKEN = "<pad>"  # the blank's token in a transformers vocab.json (its pad token)
# facebook/hubert-large-ls960-ft's vocab: <pad> <s> </s> <unk> | E T A ... (32 entries),
# i.e. the labels above at [0] + [4..31]. A 29-entry head is already in label order.
_HF_CTC_INDEX = (0, *range(4, 32))
CTC_VOCAB_SIZES = (len(_HF_CTC_INDEX) + 3, len(CTC_LABELS))  # 32, 29


def _classes(architecture: str, ctc: bool = False):
    import transformers

    if architecture == "hubert":
        return transformers.HubertConfig, transformers.HubertForCTC if ctc else transformers.HubertModel
    if architecture == "wav2vec2":
        return transformers.Wav2Vec2Config, transformers.Wav2Vec2ForCTC if ctc else transformers.Wav2Vec2Model
    raise TalkrtError(f"unknown encoder architecture {architecture!r}; expected hubert or wav2vec2")


def build_random(preset: EncoderPreset, seed: int = 0, ctc: bool = False) -> nn.Module:
    """A preset with seeded random weights; ``ctc`` builds the ForCTC model (encoder plus ``lm_head``)."""
    from talkrt.models.random_init import random_model

    if ctc and preset.vocab_size is None:
        raise TalkrtError(f"preset {preset.name} has no CTC head (no vocab_size)")
    config_class, model_class = _classes(preset.architecture, ctc)
    config = config_class(**preset.config)
    config._attn_implementation = "eager"
    return random_model(lambda: model_class(config), seed)


def read_do_normalize(directory: Path) -> bool | None:
    """``do_normalize`` from the directory's preprocessor_config.json, or None without one."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return None
    return bool(read_json_object(path).get("do_normalize", True))


def _model_from_directory(directory: Path, architecture: str | None, ctc: bool) -> tuple[str, nn.Module]:
    """(model type, the uninitialised model) described by the directory's config.json."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise TalkrtError(f"{directory} is not a transformers checkpoint directory (no config.json)")
    config_dict = read_json_object(config_path)
    model_type = config_dict.get("model_type", architecture)
    if architecture and model_type != architecture:
        raise TalkrtError(f"{directory} holds a {model_type} model, not {architecture}")
    config_class, model_class = _classes(model_type, ctc)
    config = config_class.from_dict(config_dict)
    config._attn_implementation = "eager"
    if ctc:
        ctc_label_index(config.vocab_size, read_vocab(directory), source=str(directory))  # refuse before reading weights
    return model_type, model_class(config)


def load_pretrained(directory: str | Path, architecture: str | None = None, trust: bool = False) -> nn.Module:
    """Load a transformers HubertModel / Wav2Vec2Model checkpoint directory strictly.

    Unlike ``from_pretrained``, which initialises missing weights at random with a
    warning, every encoder weight must be in the file.
    """
    from talkrt.models.checkpoints import load_strict, read_transformers_weights

    directory = Path(directory)
    model_type, model = _model_from_directory(directory, architecture, ctc=False)
    state = read_transformers_weights(directory, trust)
    # ForCTC / ForPreTraining checkpoints nest the encoder under its model type.
    prefix = f"{model_type}."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    return load_strict(model, state, model_type, trust, source=str(directory))


def load_pretrained_ctc(directory: str | Path, architecture: str | None = "hubert", trust: bool = False) -> nn.Module:
    """Load a transformers HubertForCTC / Wav2Vec2ForCTC directory strictly, CTC head (``lm_head``) included.

    The vocab is checked first (see ``ctc_label_index``); legacy weight-norm names
    are mapped by ``load_strict`` as for encoders.
    """
    from talkrt.models.checkpoints import load_strict, read_transformers_weights

    directory = Path(directory)
    model_type, model = _model_from_directory(directory, architecture, ctc=True)
    state = read_transformers_weights(directory, trust)
    if "lm_head.weight" not in state:
        raise TalkrtError(f"{directory} has no CTC head (no lm_head.weight): it holds an encoder; `talkrt export {model_type}` exports encoders")
    return load_strict(model, state, f"{model_type} (ForCTC)", trust, source=str(directory))


def read_vocab(directory: str | Path) -> dict[str, int] | None:
    """token -> index from the directory's vocab.json (a transformers CTC tokenizer's), or None without one."""
    path = Path(directory) / "vocab.json"
    if not path.is_file():
        return None
    vocab = read_json(path)
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise TalkrtError(f"{path} is not a token -> index map")
    return vocab


def ctc_label_index(vocab_size: int, vocab: Mapping[str, int] | None = None, source: str = "checkpoint") -> tuple[int, ...]:
    """Indices of a CTC head's logits that give ``CTC_LABELS`` in order.

    With a vocab (vocab.json) they are looked up by token, the blank being the
    pad token ``<pad>`` (or ``-``); without one, a 32-entry head is taken to be
    facebook/hubert-large-ls960-ft's layout and a 29-entry head is used as is.
    """
    if vocab_size not in CTC_VOCAB_SIZES:
        raise TalkrtError(
            f"{source}: a CTC head of {vocab_size} classes is not supported; "
            f"supported: {CTC_VOCAB_SIZES[0]} (facebook/hubert-large-ls960-ft) or {CTC_VOCAB_SIZES[1]} (torchaudio HUBERT_ASR_LARGE order)"
        )
    if vocab is None:
        return _HF_CTC_INDEX if vocab_size == CTC_VOCAB_SIZES[0] else tuple(range(vocab_size))
    blank = CTC_BLANK_TOKEN if CTC_BLANK_TOKEN in vocab else CTC_LABELS[CTC_BLANK]
    tokens = (blank, *CTC_LABELS[1:])
    missing = [t for t in tokens if t not in vocab]
    if missing:
        shown = ", ".join(repr(CTC_BLANK_TOKEN if t == CTC_LABELS[CTC_BLANK] else t) for t in missing)
        raise TalkrtError(f"{source}/vocab.json lacks {shown}: it must hold the CTC blank {CTC_BLANK_TOKEN!r}, '|' and the letters A-Z and \"'\"")
    index = tuple(vocab[t] for t in tokens)
    outside = [f"{t!r}={i}" for t, i in zip(tokens, index) if not 0 <= i < vocab_size]
    if outside:
        raise TalkrtError(f"{source}/vocab.json maps {', '.join(outside)} outside the {vocab_size} classes of its CTC head")
    if len(set(index)) != len(index):
        raise TalkrtError(f"{source}/vocab.json gives two CTC labels the same index")
    return index


def normalize_utterance(input_values: torch.Tensor) -> torch.Tensor:
    """Per utterance (last axis), as Wav2Vec2FeatureExtractor(do_normalize=True) does before the model."""
    mean = input_values.mean(dim=-1, keepdim=True)
    var = input_values.var(dim=-1, keepdim=True, unbiased=False)
    return (input_values - mean) / torch.sqrt(var + NORMALIZE_EPS)


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
            input_values = normalize_utterance(input_values)
        return self.model(input_values).last_hidden_state


class SpeechRecognizer(nn.Module):
    """(B, S) 16 kHz waveform -> (B, T, 29) CTC emissions in ``CTC_LABELS`` order, 50 frames per second.

    ``model`` is a ForCTC model; its logits are reordered by a constant index
    (``ctc_label_index``), held as a non-persistent buffer so the state_dict is
    the model's own under ``model.``. The emissions are raw logits, as torchaudio's
    HUBERT_ASR_LARGE model returns them (no log-softmax).
    """

    def __init__(self, model: nn.Module, index: Sequence[int], normalize: bool = True) -> None:
        super().__init__()
        if len(index) != len(CTC_LABELS):
            raise TalkrtError(f"a CTC label index needs {len(CTC_LABELS)} entries, got {len(index)}")
        self.model = model.eval()
        self.normalize = normalize
        self.register_buffer("index", torch.tensor(list(index), dtype=torch.long), persistent=False)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            input_values = normalize_utterance(input_values)
        return self.model(input_values).logits.index_select(-1, self.index)
