"""Loading a GPT-SoVITS GPT (s1) checkpoint: ``{"weight": Lightning state_dict, "config": yaml dict}``.

The weights carry the Lightning wrapper's ``model.`` prefix and are usually
float16 (the training code saves every tensor halved); they are cast to float32
and loaded strictly. v1 GPTs (a 512-symbol phoneme table) are refused: only the
v2 symbol set is supported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from talkrt.errors import TalkrtError
from talkrt.models.checkpoints import check_compatible, read_checkpoint
from talkrt.models.gpt_sovits.gpt import GPTConfig, Text2SemanticGPT

FAMILY = "GPT-SoVITS v2 GPT (s1)"
PREFIX = "model."
V1_PHONEME_VOCAB = 512
# Top-level modules of a SoVITS (s2) generator: used only to name a file given in the wrong place.
_SOVITS_MODULES = {"enc_p", "dec", "flow", "ref_enc", "ssl_proj", "quantizer", "enc_q"}


def _config_dict(config: object) -> Mapping | None:
    # Trusted loading may give an attribute object (HParams-like) instead of a dict.
    if isinstance(config, Mapping):
        return config
    attributes = getattr(config, "__dict__", None)
    return attributes if isinstance(attributes, Mapping) else None


def _model_section(config: Mapping) -> Mapping | None:
    model = _config_dict(config.get("model"))
    return model if model is not None and "phoneme_vocab_size" in model else None


def split_gpt_checkpoint(obj: object, source: str) -> tuple[dict[str, torch.Tensor], GPTConfig]:
    """The float32 state_dict (prefix stripped) and sizes of an already-read GPT checkpoint."""
    if not isinstance(obj, Mapping) or "weight" not in obj:
        found = sorted(map(str, obj))[:6] if isinstance(obj, Mapping) else type(obj).__name__
        raise TalkrtError(f"{source} is not a GPT-SoVITS GPT checkpoint (expected a dict with 'weight' and 'config'; found {found})")
    weight = obj["weight"]
    if not isinstance(weight, Mapping) or not weight or not all(isinstance(v, torch.Tensor) for v in weight.values()):
        raise TalkrtError(f"{source}: 'weight' is not a dict of tensors, so this is not a GPT-SoVITS GPT checkpoint")
    modules = {str(k).split(".", 1)[0] for k in weight}
    if modules & _SOVITS_MODULES:
        raise TalkrtError(f"{source} is a GPT-SoVITS SoVITS (s2, .pth) checkpoint, not a GPT one: give the GPT .ckpt here")
    config = _config_dict(obj.get("config"))
    model = _model_section(config) if config is not None else None
    if model is None:
        raise TalkrtError(f"{source} has no 'config' with a 'model' section (vocab sizes, layers), which every GPT-SoVITS GPT .ckpt carries")
    if int(model["phoneme_vocab_size"]) == V1_PHONEME_VOCAB:
        raise TalkrtError(f"{source} is a GPT-SoVITS v1 GPT (phoneme vocabulary {V1_PHONEME_VOCAB}); v1 is not supported, use a v2 GPT (732 phonemes)")
    try:
        sizes = GPTConfig.from_checkpoint_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise TalkrtError(f"{source}: config 'model' section is unusable ({type(exc).__name__}: {exc})") from None
    unprefixed = [str(k) for k in weight if not str(k).startswith(PREFIX)]
    if unprefixed:
        raise TalkrtError(f"{source}: {len(unprefixed)} weight keys lack the '{PREFIX}' prefix of a GPT .ckpt, e.g. {', '.join(unprefixed[:3])}")
    # Half-precision files are the norm; compute in float32.
    state = {k[len(PREFIX) :]: (v.float() if v.is_floating_point() else v) for k, v in weight.items()}
    return state, sizes


def load_gpt(checkpoint: str | os.PathLike | Mapping, trust: bool = False, source: str | None = None) -> Text2SemanticGPT:
    """Build the decoder a GPT .ckpt (a path or an already-read object) describes and load it strictly.

    ``trust`` allows full unpickling (the CLI's --trust-checkpoint); without it only
    tensors and plain containers are read. Returns the model in eval mode.
    """
    source = source or (str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint")
    obj = read_checkpoint(checkpoint, trust) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    state, sizes = split_gpt_checkpoint(obj, source)
    model = Text2SemanticGPT(sizes)
    check_compatible(model, state, FAMILY, source)
    model.load_state_dict(state, strict=True)
    return model.eval()
