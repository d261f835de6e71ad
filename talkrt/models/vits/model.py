"""VITS text-to-speech models, through transformers' ``VitsModel``.

A model comes from one of three places:

* a named preset with seeded random weights (``build_random_vits``), for tests
  and the demo;
* a transformers checkpoint directory (MMS-TTS: ``config.json`` plus
  ``model.safetensors`` / ``pytorch_model.bin`` and ``vocab.json``), loaded
  strictly: every weight must be in the file;
* an original jaywalnut310/vits generator checkpoint (``pretrained_ljs.pth``,
  ``pretrained_vctk.pth``, ``G_*.pth``), whose keys are mapped one by one onto
  ``VitsModel``. The original loader is lenient (missing keys keep their random
  init); this one is not: every key of the file must be used and every weight of
  the model filled.

``vits_info`` says what the runtime needs to drive a model: sample rate, hop,
speakers and how text becomes ids.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from talkrt.errors import TalkrtError
from talkrt.fileio import read_json_object

FAMILY = "vits"

# VitsConfig keyword overrides. The VitsConfig defaults are facebook/mms-tts-eng.
_ORIGINAL_BASE: dict = {
    # jaywalnut310/vits configs/ljs_base.json "model" section, as VitsConfig.
    # The stochastic duration predictor always uses hidden_size channels (the
    # original overrides its filter_channels argument with in_channels);
    # duration_predictor_filter_channels (256) only sizes the plain predictor.
    "vocab_size": 178,
    "hidden_size": 192,
    "ffn_dim": 768,
    "ffn_kernel_size": 3,
    "num_hidden_layers": 6,
    "num_attention_heads": 2,
    "window_size": 4,
    "flow_size": 192,
    "spectrogram_bins": 513,
    "upsample_initial_channel": 512,
    "upsample_rates": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "use_stochastic_duration_prediction": True,
    "duration_predictor_filter_channels": 256,
    "duration_predictor_num_flows": 4,
    "duration_predictor_kernel_size": 3,
    "prior_encoder_num_flows": 4,
    "prior_encoder_num_wavenet_layers": 4,
    "posterior_encoder_num_wavenet_layers": 16,
    "wavenet_kernel_size": 5,
    "wavenet_dilation_rate": 1,
    "sampling_rate": 22050,
    "noise_scale": 0.667,
    "noise_scale_duration": 0.8,
}

VITS_PRESETS: dict[str, dict] = {
    "mms-tts-eng": {},
    "ljs-base": dict(_ORIGINAL_BASE),
    "ljs-nosdp": {**_ORIGINAL_BASE, "use_stochastic_duration_prediction": False},
    "vctk-base": {**_ORIGINAL_BASE, "num_speakers": 109, "speaker_embedding_size": 256},
    # Small random-weight model for fast tests: every sub-module present
    # (stochastic duration predictor, flows, posterior encoder), hop 16.
    "tiny": {
        "hidden_size": 32,
        "ffn_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "window_size": 4,
        "flow_size": 16,
        "spectrogram_bins": 33,
        "upsample_initial_channel": 32,
        "upsample_rates": [4, 4],
        "upsample_kernel_sizes": [8, 8],
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3], [1, 3]],
        "duration_predictor_filter_channels": 32,
        "duration_predictor_num_flows": 2,
        "prior_encoder_num_flows": 2,
        "prior_encoder_num_wavenet_layers": 2,
        "posterior_encoder_num_wavenet_layers": 2,
        "wavenet_kernel_size": 3,
    },
}

# The presets whose inputs are the original 178-symbol (IPA phoneme) table.
_ORIGINAL_PRESETS = ("ljs-base", "ljs-nosdp", "vctk-base")


@dataclass(frozen=True)
class VitsInfo:
    sample_rate: int
    hop_length: int  # waveform samples per spectrogram frame = prod(upsample_rates)
    num_speakers: int
    add_blank: bool  # intersperse id 0 between the symbols
    vocab: dict[str, int] | None  # symbol -> id, None when unknown (random MMS-style weights)
    source: str  # "random" | "transformers" | "original"
    phonemes: bool = False  # inputs are IPA phonemes (original checkpoints, phonemizing MMS vocabularies)
    normalize: bool = True  # MMS tokenizer: lowercase and drop characters outside the vocabulary
    language: str | None = None


def _config_class():
    from transformers import VitsConfig

    return VitsConfig


def _model_class():
    from transformers import VitsModel

    return VitsModel


def _empty_model(config):
    """A ``VitsModel`` whose weights are about to be overwritten: skip the (slow) init."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return _model_class()(config)


def make_config(preset: str = "mms-tts-eng", **overrides):
    """A ``VitsConfig`` for a preset, with keyword overrides; eager attention."""
    if preset not in VITS_PRESETS:
        raise TalkrtError(f"unknown VITS preset {preset!r}; expected one of {', '.join(VITS_PRESETS)}")
    config = _config_class()(**{**VITS_PRESETS[preset], **overrides})
    config._attn_implementation = "eager"
    return config


def _attach_info(model, **fields) -> None:
    # A plain attribute (not a buffer or parameter), so state_dict stays unchanged.
    object.__setattr__(model, "_talkrt_vits_info", dict(fields))


def build_random_vits(preset: str = "mms-tts-eng", seed: int = 0, **overrides):
    """A ``transformers.VitsModel`` of ``preset`` with seeded random weights, in eval mode."""
    from talkrt.models.random_init import random_model

    config = make_config(preset, **overrides)
    model = random_model(lambda: _model_class()(config), seed)
    vocab = None
    phonemes = False
    if preset in _ORIGINAL_PRESETS and config.vocab_size == 178:
        from talkrt.models.vits.text import ORIGINAL_SYMBOLS

        vocab = {s: i for i, s in enumerate(ORIGINAL_SYMBOLS)}
        phonemes = True
    _attach_info(model, add_blank=True, vocab=vocab, source="random", phonemes=phonemes)
    return model.eval()


def vits_info(model) -> VitsInfo:
    """What the runtime needs to drive ``model`` (a ``VitsModel``)."""
    config = model.config
    extra = getattr(model, "_talkrt_vits_info", None) or {"source": "random", "add_blank": True, "vocab": None}
    return VitsInfo(
        sample_rate=int(config.sampling_rate),
        hop_length=int(math.prod(config.upsample_rates)),
        num_speakers=int(config.num_speakers),
        add_blank=bool(extra.get("add_blank", True)),
        vocab=extra.get("vocab"),
        source=str(extra.get("source", "random")),
        phonemes=bool(extra.get("phonemes", False)),
        normalize=bool(extra.get("normalize", True)),
        language=extra.get("language"),
    )


# ---------------------------------------------------------------------------
# Loading


def load_vits(path: str | os.PathLike, trust: bool = False, config: str | os.PathLike | None = None):
    """Load a VITS model strictly; returns ``(VitsModel, VitsInfo)``.

    ``path`` is a transformers checkpoint directory or an original jaywalnut310
    generator checkpoint file. ``config`` is the original repository's json
    config (``configs/ljs_base.json``...) for original checkpoints trained with
    other hyper-parameters; without it the architecture is inferred from the keys.
    """
    path = Path(path)
    if path.is_dir():
        if config is not None:
            raise TalkrtError(f"{path} is a transformers directory: its own config.json is used, do not pass a config")
        model = _load_transformers_dir(path, trust)
    elif path.is_file():
        model = _load_original(path, trust, config)
    else:
        raise TalkrtError(f"VITS checkpoint not found: {path}")
    return model, vits_info(model)


def _load_transformers_dir(directory: Path, trust: bool):
    from talkrt.models.checkpoints import load_strict, read_transformers_weights

    config_path = directory / "config.json"
    if not config_path.is_file():
        raise TalkrtError(f"{directory} is not a transformers checkpoint directory (no config.json)")
    config_dict = read_json_object(config_path)
    model_type = config_dict.get("model_type")
    if model_type not in (None, "vits"):
        raise TalkrtError(f"{directory} holds a {model_type} model, not vits")
    try:
        config = _config_class().from_dict(config_dict)
    except Exception as exc:
        raise TalkrtError(f"{config_path} is not a valid VITS config ({str(exc).splitlines()[0][:160]})") from exc
    config._attn_implementation = "eager"
    model = _empty_model(config)
    state = read_transformers_weights(directory, trust)
    load_strict(model, state, FAMILY, trust, source=str(directory))

    vocab = None
    if (directory / "vocab.json").is_file():
        raw = read_json_object(directory / "vocab.json")
        vocab = {str(k): int(v) for k, v in raw.items()}
    tokenizer_config = read_json_object(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    _attach_info(
        model,
        add_blank=bool(tokenizer_config.get("add_blank", True)),
        vocab=vocab,
        source="transformers",
        phonemes=bool(tokenizer_config.get("phonemize", False)),
        normalize=bool(tokenizer_config.get("normalize", True)),
        language=tokenizer_config.get("language"),
    )
    return model.eval()


# --- original jaywalnut310 checkpoints ---------------------------------------

# Module renames, applied to the key with its top-level prefix already replaced.
_TEXT_ENCODER_LAYER = re.compile(r"^text_encoder\.encoder\.(attn_layers|norm_layers_1|norm_layers_2|ffn_layers)\.(\d+)\.(.+)$")
_ATTN_NAMES = {"conv_q": "q_proj", "conv_k": "k_proj", "conv_v": "v_proj", "conv_o": "out_proj"}
_SDP_NAMES = {"pre": "conv_pre", "proj": "conv_proj", "convs": "conv_dds", "post_pre": "post_conv_pre", "post_proj": "post_conv_proj", "post_convs": "post_conv_dds"}
_DDS_NAMES = {"convs_sep": "convs_dilated", "convs_1x1": "convs_pointwise"}
_COUPLING_NAMES = {"pre": "conv_pre", "enc": "wavenet", "post": "conv_post"}
_POSTERIOR_NAMES = {"pre": "conv_pre", "enc": "wavenet", "proj": "conv_proj"}
_TOP_LEVEL = {"enc_p": "text_encoder", "dec": "decoder", "enc_q": "posterior_encoder", "flow": "flow", "dp": "duration_predictor", "emb_g": "embed_speaker"}


def _norm_param(name: str) -> str:
    """Original LayerNorm parameters gamma/beta -> weight/bias."""
    return {"gamma": "weight", "beta": "bias"}.get(name, name)


def _map_dds(rest: str) -> str:
    # convs_sep.N.* -> convs_dilated.N.*, norms_1.N.gamma -> norms_1.N.weight
    head, _, tail = rest.partition(".")
    head = _DDS_NAMES.get(head, head)
    parts = tail.split(".")
    parts[-1] = _norm_param(parts[-1]) if head.startswith("norms_") else parts[-1]
    return head + "." + ".".join(parts)


def _map_conv_flow(rest: str) -> str:
    # ConvFlow: pre / convs / proj
    head, _, tail = rest.partition(".")
    if head == "convs":
        return "conv_dds." + _map_dds(tail)
    return {"pre": "conv_pre", "proj": "conv_proj"}[head] + "." + tail


def _map_sdp_flows(kind: str, rest: str) -> str:
    # original flows: [ElementwiseAffine, ConvFlow, Flip, ConvFlow, Flip, ...]
    # transformers flows: [ElementwiseAffine, ConvFlow, ConvFlow, ...]
    index, _, tail = rest.partition(".")
    i = int(index)
    if i == 0:
        return f"{kind}.0." + {"m": "translate", "logs": "log_scale"}[tail]
    if i % 2 == 0:
        raise KeyError(rest)  # a Flip has no weights
    return f"{kind}.{i // 2 + 1}." + _map_conv_flow(tail)


def _map_original_key(key: str, sdp: bool = True) -> str:
    """The transformers ``VitsModel`` key of one original VITS key (KeyError if none).

    ``sdp``: the checkpoint has a stochastic duration predictor (else the plain
    one, whose ``dp.proj``/``dp.conv_1``... keep their names)."""
    top, _, rest = key.partition(".")
    if top not in _TOP_LEVEL:
        raise KeyError(key)
    if top == "emb_g":
        if rest != "weight":
            raise KeyError(key)
        return "embed_speaker.weight"
    if top == "enc_p":
        if rest.startswith("emb."):
            return "text_encoder.embed_tokens." + rest[len("emb.") :]
        if rest.startswith("proj."):
            return "text_encoder.project." + rest[len("proj.") :]
        match = _TEXT_ENCODER_LAYER.match("text_encoder." + rest)
        if not match:
            raise KeyError(key)
        group, index, tail = match.groups()
        layer = f"text_encoder.encoder.layers.{index}."
        if group == "attn_layers":
            module, _, param = tail.partition(".")
            if module in ("emb_rel_k", "emb_rel_v") and not param:
                return layer + "attention." + module
            return layer + "attention." + _ATTN_NAMES[module] + "." + param
        if group == "ffn_layers":
            return layer + "feed_forward." + tail
        norm = "layer_norm" if group == "norm_layers_1" else "final_layer_norm"
        return layer + norm + "." + _norm_param(tail)
    if top == "dec":
        head, _, tail = rest.partition(".")
        if head == "ups":
            return "decoder.upsampler." + tail
        if head in ("conv_pre", "conv_post", "resblocks", "cond"):
            return "decoder." + rest
        raise KeyError(key)
    if top == "enc_q":
        head, _, tail = rest.partition(".")
        return "posterior_encoder." + _POSTERIOR_NAMES[head] + "." + tail
    if top == "flow":
        # flow.flows: [Coupling, Flip, Coupling, Flip, ...] -> [Coupling, Coupling, ...]
        head, _, tail = rest.partition(".")
        if head != "flows":
            raise KeyError(key)
        index, _, tail = tail.partition(".")
        i = int(index)
        if i % 2:
            raise KeyError(key)
        module, _, param = tail.partition(".")
        return f"flow.flows.{i // 2}." + _COUPLING_NAMES[module] + "." + param
    # dp: stochastic (pre/proj/convs/cond/flows/post_*) or plain (conv_1/norm_1/conv_2/norm_2/proj/cond)
    head, _, tail = rest.partition(".")
    if not sdp:
        if head in ("conv_1", "conv_2", "proj", "cond"):
            return f"duration_predictor.{head}.{tail}"
        if head in ("norm_1", "norm_2"):
            return f"duration_predictor.{head}." + _norm_param(tail)
        raise KeyError(key)
    if head in ("flows", "post_flows"):
        return "duration_predictor." + _map_sdp_flows(head, tail)
    if head in ("convs", "post_convs"):
        return "duration_predictor." + _SDP_NAMES[head] + "." + _map_dds(tail)
    if head in ("pre", "proj", "cond", "post_pre", "post_proj"):
        return "duration_predictor." + _SDP_NAMES.get(head, head) + "." + tail
    raise KeyError(key)


# Decoder convolutions carry weight norm in the original, plain weights in transformers.
_DECODER_WEIGHT_NORM = re.compile(r"^dec\.(ups\.\d+|resblocks\.\d+\.convs[12]\.\d+|conv_pre|conv_post)\.weight_[gv]$")


def weight_from_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``torch.nn.utils.weight_norm(dim=0)``'s weight: g * v / ||v||, the norm over all dims but 0."""
    # The same kernel the original's weight-norm hook runs, so the fold is bit-exact.
    return torch._weight_norm(v, g.reshape(-1, *([1] * (v.dim() - 1))), 0).detach().clone()


def map_original_state_dict(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map every key of an original VITS generator state_dict onto ``VitsModel`` keys.

    Conv1d(k=1) attention projections are squeezed to Linear weights; the decoder's
    weight norm is folded into plain weights; other weight-norm pairs keep the
    legacy ``weight_g``/``weight_v`` names (``load_strict`` renames them). Raises a
    one-line TalkrtError naming the first keys that have no counterpart.
    """
    mapped: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    pending_g: dict[str, torch.Tensor] = {}
    pending_v: dict[str, torch.Tensor] = {}
    sdp = not any(k.startswith("dp.conv_1.") for k in state)
    for key, value in state.items():
        if _DECODER_WEIGHT_NORM.match(key):
            base = key[: -len(".weight_g")]
            (pending_g if key.endswith("_g") else pending_v)[base] = value
            continue
        try:
            new_key = _map_original_key(key, sdp)
        except (KeyError, ValueError):
            unmapped.append(key)
            continue
        if re.search(r"\.attention\.(q|k|v|out)_proj\.weight$", new_key):
            if value.dim() != 3 or value.shape[-1] != 1:
                raise TalkrtError(f"{source}: {key} has shape {tuple(value.shape)}, expected a (C, C, 1) Conv1d weight")
            value = value[:, :, 0]
        if new_key in mapped:
            raise TalkrtError(f"{source}: two keys map to {new_key}")
        mapped[new_key] = value
    for base in sorted(set(pending_g) | set(pending_v)):
        if base not in pending_g or base not in pending_v:
            unmapped.append(base + (".weight_v" if base in pending_g else ".weight_g"))
            continue
        g, v = pending_g[base], pending_v[base]
        if g.dim() != v.dim() or g.shape[0] != v.shape[0]:
            raise TalkrtError(f"{source}: {base}.weight_g {tuple(g.shape)} does not fit weight_v {tuple(v.shape)}")
        mapped[_map_original_key(base + ".weight")] = weight_from_norm(g, v)
    if unmapped:
        raise TalkrtError(
            f"{source} is not an original VITS generator checkpoint: {len(unmapped)} keys have no VitsModel counterpart, e.g. "
            + ", ".join(unmapped[:4])
        )
    return mapped


def _count_indexed(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    indices = {int(m.group(1)) for k in state if (m := regex.match(k))}
    return max(indices) + 1 if indices else 0


def infer_original_config(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """VitsConfig overrides read off the shapes of an original generator state_dict."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise TalkrtError(f"{source} is not an original VITS generator checkpoint (no {key})")
        return tuple(state[key].shape)

    vocab_size, hidden = shape("enc_p.emb.weight")
    n_layers = _count_indexed(state, r"^enc_p\.encoder\.attn_layers\.(\d+)\.")
    rel = shape("enc_p.encoder.attn_layers.0.emb_rel_k") if "enc_p.encoder.attn_layers.0.emb_rel_k" in state else None
    heads = hidden // rel[2] if rel else 2
    window = (rel[1] - 1) // 2 if rel else None
    ffn_out, _, ffn_kernel = shape("enc_p.encoder.ffn_layers.0.conv_1.weight")
    flow_size = shape("enc_p.proj.weight")[0] // 2
    upsample_initial = shape("dec.conv_pre.weight")[0]
    n_ups = _count_indexed(state, r"^dec\.ups\.(\d+)\.")
    up_kernels = [shape(f"dec.ups.{i}.weight_v")[2] for i in range(n_ups)]
    n_res = _count_indexed(state, r"^dec\.resblocks\.(\d+)\.")
    per_stage = n_res // n_ups if n_ups else 0
    res_kernels = [shape(f"dec.resblocks.{j}.convs1.0.weight_v")[2] for j in range(per_stage)]
    res_dilations = [[1, 3, 5][: _count_indexed(state, rf"^dec\.resblocks\.{j}\.convs1\.(\d+)\.")] for j in range(per_stage)]
    n_flows = _count_indexed(state, r"^flow\.flows\.(\d+)\.") // 2 + 1 if any(k.startswith("flow.flows.") for k in state) else 0
    flow_wn = _count_indexed(state, r"^flow\.flows\.0\.enc\.in_layers\.(\d+)\.")
    wn_kernel = shape("flow.flows.0.enc.in_layers.0.weight_v")[2]
    post_wn = _count_indexed(state, r"^enc_q\.enc\.in_layers\.(\d+)\.")
    spec_bins = shape("enc_q.pre.weight")[1]
    sdp = not any(k.startswith("dp.conv_1.") for k in state)
    overrides = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "ffn_dim": ffn_out,
        "ffn_kernel_size": ffn_kernel,
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "flow_size": flow_size,
        "spectrogram_bins": spec_bins,
        "upsample_initial_channel": upsample_initial,
        "upsample_kernel_sizes": up_kernels,
        "resblock_kernel_sizes": res_kernels,
        "resblock_dilation_sizes": res_dilations,
        "use_stochastic_duration_prediction": sdp,
        "prior_encoder_num_flows": n_flows,
        "prior_encoder_num_wavenet_layers": flow_wn,
        "posterior_encoder_num_wavenet_layers": post_wn,
        "wavenet_kernel_size": wn_kernel,
    }
    if window is not None:
        overrides["window_size"] = window
    if sdp:
        overrides["duration_predictor_num_flows"] = (_count_indexed(state, r"^dp\.flows\.(\d+)\.") - 1) // 2 + 1 if "dp.flows.1.pre.weight" in state else 0
        overrides["duration_predictor_kernel_size"] = shape("dp.convs.convs_sep.0.weight")[2]
    else:
        filt, _, kernel = shape("dp.conv_1.weight")
        overrides["duration_predictor_filter_channels"] = filt
        overrides["duration_predictor_kernel_size"] = kernel
    if "emb_g.weight" in state:
        speakers, gin = shape("emb_g.weight")
        overrides["num_speakers"] = speakers
        overrides["speaker_embedding_size"] = gin
    # Upsample rates are not visible in the shapes; HiFi-GAN uses kernel = 2 * rate
    # for the original configs ([16,16,4,4] -> [8,8,2,2]).
    overrides["upsample_rates"] = [k // 2 for k in up_kernels]
    return overrides


def config_from_original_json(path: str | os.PathLike, n_vocab: int | None = None) -> dict:
    """VitsConfig overrides from an original repository config (``configs/*.json``)."""
    path = Path(path)
    if not path.is_file():
        raise TalkrtError(f"VITS config not found: {path}")
    data = read_json_object(path)
    model = data.get("model")
    if not isinstance(model, dict):
        raise TalkrtError(f"{path} is not an original VITS config (no 'model' section)")
    data_section = data.get("data", {}) or {}
    try:
        overrides = {
            "hidden_size": model["hidden_channels"],
            "flow_size": model.get("inter_channels", model["hidden_channels"]),
            "ffn_dim": model["filter_channels"],
            "num_attention_heads": model["n_heads"],
            "num_hidden_layers": model["n_layers"],
            "ffn_kernel_size": model["kernel_size"],
            "upsample_rates": list(model["upsample_rates"]),
            "upsample_initial_channel": model["upsample_initial_channel"],
            "upsample_kernel_sizes": list(model["upsample_kernel_sizes"]),
            "resblock_kernel_sizes": list(model["resblock_kernel_sizes"]),
            "resblock_dilation_sizes": [list(d) for d in model["resblock_dilation_sizes"]],
            "use_stochastic_duration_prediction": bool(model.get("use_sdp", True)),
            "speaker_embedding_size": model.get("gin_channels", 0) if data_section.get("n_speakers", 0) > 0 else 0,
            "num_speakers": max(int(data_section.get("n_speakers", 0)), 1),
            "sampling_rate": int(data_section.get("sampling_rate", 22050)),
            "spectrogram_bins": int(data_section.get("filter_length", 1024)) // 2 + 1,
        }
    except KeyError as exc:
        raise TalkrtError(f"{path} is not an original VITS config (its 'model' section has no {exc.args[0]})") from None
    if model.get("resblock", "1") != "1":
        raise TalkrtError(f"{path} uses HiFi-GAN resblock type {model.get('resblock')!r}; VitsModel supports only type '1'")
    if n_vocab is not None:
        overrides["vocab_size"] = n_vocab
    return {**_ORIGINAL_BASE, **overrides}


def _load_original(path: Path, trust: bool, config_json: str | os.PathLike | None):
    from talkrt.models.checkpoints import extract_state_dict, load_strict, read_checkpoint, strip_module_prefix
    from talkrt.models.registry import guess_family

    source = str(path)
    state = strip_module_prefix(extract_state_dict(read_checkpoint(path, trust), source))
    if "enc_p.emb.weight" not in state or not any(k.startswith("dec.") for k in state):
        if any(k.startswith("text_encoder.") for k in state):
            raise TalkrtError(f"{source} holds transformers VitsModel weights: pass the directory with its config.json instead")
        guess = guess_family(state)
        looks = f" (it looks like a {guess} checkpoint)" if guess else ""
        raise TalkrtError(f"{source} is not a VITS generator checkpoint{looks}: no enc_p.emb.weight / dec.* keys")
    vocab_size = int(state["enc_p.emb.weight"].shape[0])
    if config_json is not None:
        overrides = config_from_original_json(config_json, n_vocab=vocab_size)
    else:
        overrides = {**_ORIGINAL_BASE, **infer_original_config(state, source)}
    try:
        config = _config_class()(**overrides)
    except Exception as exc:
        raise TalkrtError(f"{source}: cannot build a VitsConfig ({str(exc).splitlines()[0][:160]})") from exc
    config._attn_implementation = "eager"
    mapped = map_original_state_dict(state, source)
    model = _empty_model(config)
    load_strict(model, mapped, FAMILY, trust, source=source)

    vocab = None
    phonemes = False
    if vocab_size == 178:
        from talkrt.models.vits.text import ORIGINAL_SYMBOLS

        vocab = {s: i for i, s in enumerate(ORIGINAL_SYMBOLS)}
        phonemes = True
    add_blank = True
    if config_json is not None:
        add_blank = bool(read_json_object(Path(config_json)).get("data", {}).get("add_blank", True))
    _attach_info(model, add_blank=add_blank, vocab=vocab, source="original", phonemes=phonemes, normalize=False)
    return model.eval()
