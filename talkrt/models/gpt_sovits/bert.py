"""Phone-level BERT features for the GPT-SoVITS v2 GPT (chinese-roberta-wwm-ext-large).

As the original computes them: a transformers ``BertForMaskedLM`` run with
``output_hidden_states``, ``hidden_states[-3]`` (the output of encoder layer
L-3, 0-based), [CLS] and [SEP] rows dropped, each character's row repeated
``word2ph[i]`` times -> (1024, n_phones). Only Chinese text has features;
English text (or phones given directly) gets zeros.

``BertPhoneFeatures`` is the exportable graph: ``input_ids`` (1, T) and
``attention_mask`` (1, T) of ``[CLS] text [SEP]`` plus ``phone_to_char``
(n_phones,), the character index of each phone (``expansion_index(word2ph)``)
-> ``features`` (n_phones, 1024), both lengths dynamic. It holds only the
embeddings and the first L-2 encoder layers: ``hidden_states[-3]`` of the full
model is exactly the last hidden state of that truncated stack (BERT has no final
norm), so the last two layers and the MLM head are left out of the graph.

Tokenization: the original calls the checkpoint's BERT tokenizer on the
normalized Chinese text, which holds only CJK characters and ``! ? … , . -``;
BERT splits every one of them into its own token, so the ids are looked up per
character in the checkpoint's ``vocab.txt`` ([UNK] when absent), with no
tokenizer dependency.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from talkrt.errors import TalkrtError
from talkrt.fileio import read_json

HIDDEN = 1024  # the GPT's bert_proj input width
# Keys a released BERT file may carry that BertForMaskedLM does not use.
_IGNORED_PREFIXES = ("bert.pooler.", "cls.seq_relationship.")
_IGNORED_KEYS = ("bert.embeddings.position_ids",)
# Tied to other weights in BertForMaskedLM; a file may omit them.
_TIED = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.bias": "cls.predictions.bias"}


def large_config():
    """The chinese-roberta-wwm-ext-large architecture (what the released GPT-SoVITS uses)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=21128, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, max_position_embeddings=512, type_vocab_size=2)


def small_config(hidden: int = HIDDEN, layers: int = 4, vocab_size: int = 64):
    """A tiny BERT for tests and random-weight exports. ``hidden`` stays 1024 by default so the
    features fit the GPT's ``bert_proj``; width is cheap next to depth here."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=128, type_vocab_size=2)


def _eager(config):
    # Plain matmul-softmax attention: traces to ONNX the same under every transformers version.
    config._attn_implementation = "eager"
    return config


def random_bert(config=None, seed: int = 0) -> nn.Module:
    """A ``BertForMaskedLM`` with random weights (``small_config()`` by default)."""
    from transformers import BertForMaskedLM

    torch.manual_seed(seed)
    return BertForMaskedLM(_eager(config or small_config())).eval()


class BertPhoneFeatures(nn.Module):
    """(input_ids (1, T), attention_mask (1, T), phone_to_char (P,)) -> features (P, hidden)."""

    def __init__(self, masked_lm: nn.Module) -> None:
        super().__init__()
        bert = masked_lm.bert
        layers = bert.encoder.layer
        if len(layers) < 3:
            raise TalkrtError(f"the BERT has {len(layers)} layers; hidden_states[-3] needs at least 3")
        self.embeddings = bert.embeddings
        self.layers = nn.ModuleList(layers[: len(layers) - 2])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, phone_to_char: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids), position_ids=positions)
        # Additive mask over keys, as transformers builds it for a padding mask.
        blocked = (1.0 - attention_mask.to(hidden.dtype))[:, None, None, :] * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            out = layer(hidden, attention_mask=blocked)
            hidden = out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple
        chars = hidden[0, 1:-1]  # drop [CLS] and [SEP]
        return chars.index_select(0, phone_to_char)


def expansion_index(word2ph: Sequence[int]) -> torch.Tensor:
    """Character index of every phone: [2, 1, 2] -> [0, 0, 1, 2, 2] (int64)."""
    counts = torch.as_tensor(list(word2ph), dtype=torch.int64)
    if (counts < 0).any():
        raise TalkrtError(f"word2ph has negative counts: {list(word2ph)}")
    return torch.repeat_interleave(torch.arange(len(counts), dtype=torch.int64), counts)


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt``: one token per line, id = line number."""
    file = Path(path)
    if file.is_dir():
        file = file / "vocab.txt"
    if not file.is_file():
        raise TalkrtError(f"BERT vocabulary not found: {file}")
    return {line.rstrip("\n"): index for index, line in enumerate(file.read_text(encoding="utf-8").splitlines())}


def character_ids(text: str, vocab: dict[str, int]) -> torch.Tensor:
    """(1, len(text) + 2) ids of ``[CLS] c1 ... cn [SEP]``, one token per character."""
    missing = [t for t in ("[CLS]", "[SEP]", "[UNK]") if t not in vocab]
    if missing:
        raise TalkrtError(f"the BERT vocabulary has no {', '.join(missing)}")
    unk = vocab["[UNK]"]
    ids = [vocab["[CLS]"], *(vocab.get(c, vocab.get(c.lower(), unk)) for c in text), vocab["[SEP]"]]
    return torch.tensor([ids], dtype=torch.int64)


@torch.no_grad()
def phone_features(
    model: BertPhoneFeatures | None,
    vocab: dict[str, int] | None,
    norm_text: str,
    word2ph: Sequence[int] | None,
    n_phones: int,
    language: str = "zh",
) -> torch.Tensor:
    """(hidden, n_phones) features for one text, as the original's ``get_bert_inf``: BERT rows
    repeated by ``word2ph`` for Chinese, zeros otherwise."""
    if language != "zh" or word2ph is None:
        width = HIDDEN if model is None else model.embeddings.word_embeddings.embedding_dim
        return torch.zeros(width, n_phones)
    if model is None or vocab is None:
        raise TalkrtError("Chinese text needs the BERT model and its vocabulary")
    if len(word2ph) != len(norm_text):
        raise TalkrtError(f"word2ph has {len(word2ph)} entries for {len(norm_text)} characters")
    if sum(word2ph) != n_phones:
        raise TalkrtError(f"word2ph sums to {sum(word2ph)}, not the {n_phones} phones")
    ids = character_ids(norm_text, vocab)
    return model(ids, torch.ones_like(ids), expansion_index(word2ph)).T


def load_bert(directory: str | os.PathLike) -> nn.Module:
    """A transformers checkpoint directory (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``) as ``BertForMaskedLM``, loaded strictly: a missing, unknown or
    mis-shaped key is one error line. Tolerated: the pooler / next-sentence head and the
    ``position_ids`` buffer that some releases carry, and omitted tied MLM weights."""
    from transformers import BertConfig, BertForMaskedLM

    folder = Path(directory)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise TalkrtError(f"{folder} is not a BERT checkpoint directory (no config.json)")
    settings = read_json(config_file)
    if settings.get("model_type", "bert") != "bert":
        raise TalkrtError(f"{folder} holds a {settings.get('model_type')!r} model, not a BERT")
    config = _eager(BertConfig.from_dict(settings))
    state = _read_weights(folder)
    state = {k: v for k, v in state.items() if k not in _IGNORED_KEYS and not k.startswith(_IGNORED_PREFIXES)}
    for key, source in _TIED.items():
        if key not in state and source in state:
            state[key] = state[source]
    model = BertForMaskedLM(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", extra), ("mis-shaped", shapes)):
            if keys:
                parts.append(f"{len(keys)} {name} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise TalkrtError(f"{folder} does not match its config.json as a BertForMaskedLM: {'; '.join(parts)}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model.eval()


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file))
    if bin_file.is_file():
        try:
            state = torch.load(bin_file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TalkrtError(f"cannot read {bin_file} as a state dict: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from exc
        if not isinstance(state, dict):
            raise TalkrtError(f"{bin_file} does not hold a state dict")
        return state
    raise TalkrtError(f"{folder} has no model.safetensors or pytorch_model.bin")


def feature_extractor(directory: str | os.PathLike | None = None, seed: int = 0) -> tuple[BertPhoneFeatures, dict[str, int] | None]:
    """The exportable feature graph and its vocabulary: from a checkpoint directory, or random
    weights on ``small_config()`` (no vocabulary) when ``directory`` is None."""
    if directory is None:
        return BertPhoneFeatures(random_bert(seed=seed)).eval(), None
    return BertPhoneFeatures(load_bert(directory)).eval(), read_vocab(directory)


def example_inputs(n_chars: int, word2ph: Sequence[int] | None = None, vocab_size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs for tracing / validating ``BertPhoneFeatures``: ids of ``[CLS] + n_chars + [SEP]``,
    an all-ones mask, and the expansion of ``word2ph`` (2 phones per character by default)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (1, n_chars + 2), generator=generator, dtype=torch.int64)
    counts = list(word2ph) if word2ph is not None else [2] * n_chars
    return ids, torch.ones_like(ids), expansion_index(counts)
