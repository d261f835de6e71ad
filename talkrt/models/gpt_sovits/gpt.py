"""GPT-SoVITS v2 text-to-semantic decoder (the "GPT" half), written for export.

The module's parameters carry the names of the original ``Text2SemanticDecoder``
(the checkpoint's ``model.`` prefix stripped), so an official ``.ckpt`` loads
strictly (see ``gpt_checkpoint.py``).

Inference is split the way a TensorRT runtime needs it:

* ``prefill`` runs text + prompt in one pass and writes every layer's keys and
  values into preallocated caches of a fixed length;
* ``step`` decodes one token with static shapes: the attention mask comes from an
  integer ``position`` input, so one graph serves every step. It only reads the
  caches and returns the token's own keys and values; the caller writes them at
  slot ``position`` (``write_step``). An exported graph cannot write its inputs
  in place, and returning whole updated caches would copy both every token;
* ``sample_next`` is the original sampler without a random op: the caller passes
  uniforms and the exponential noise is derived from them.

KV cache layout (documented here once, used everywhere): ``k_cache`` and
``v_cache`` are two float tensors of shape ``(layers, batch, max_len, d_model)``,
heads not split. Slot ``s`` holds the sequence element ``s`` of ``[text; prompt;
generated]``: text at ``0..T-1``, prompt tokens at ``T..T+P-1``, the token fed to
a step at slot ``position`` (written there after the step). Slots from
``position`` on hold zeros (prefill) or rows of an earlier, longer utterance; they
are masked out, never read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

# The original forbids EOS for the first 11 decoding steps (at least ~0.4 s of audio).
EOS_MIN_STEPS = 11
# The original keeps a 4000-row sinusoid table; text and audio positions index it separately.
MAX_POSITIONS = 4000
# Width of the BERT features the original projects (chinese-roberta-wwm-ext-large hidden size).
BERT_DIM = 1024


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of the decoder; the defaults are the released v2 model (s1longer-v2.yaml)."""

    d_model: int = 512
    heads: int = 16
    layers: int = 24
    ffn_dim: int = 2048
    vocab_size: int = 1025
    phoneme_vocab_size: int = 732
    eos: int = 1024
    bert_dim: int = BERT_DIM
    max_positions: int = MAX_POSITIONS

    @classmethod
    def from_checkpoint_config(cls, config: Mapping) -> "GPTConfig":
        """Read the ``model`` section of a checkpoint's ``config`` dict (the training yaml)."""
        model = config.get("model", config)
        d_model = int(model["hidden_dim"])
        if int(model.get("embedding_dim", d_model)) != d_model:
            raise ValueError(f"embedding_dim {model['embedding_dim']} != hidden_dim {d_model}: not a layout GPT-SoVITS trains")
        # The original sizes the feed-forward as 4 * hidden_dim; the yaml's linear_units is not used.
        return cls(
            d_model=d_model,
            heads=int(model["head"]),
            layers=int(model["n_layer"]),
            ffn_dim=4 * d_model,
            vocab_size=int(model["vocab_size"]),
            phoneme_vocab_size=int(model["phoneme_vocab_size"]),
            eos=int(model["EOS"]),
        )

    def to_checkpoint_config(self) -> dict:
        """The ``config`` dict an original checkpoint would carry for these sizes."""
        return {
            "model": {
                "vocab_size": self.vocab_size,
                "phoneme_vocab_size": self.phoneme_vocab_size,
                "embedding_dim": self.d_model,
                "hidden_dim": self.d_model,
                "head": self.heads,
                "linear_units": self.ffn_dim,
                "n_layer": self.layers,
                "dropout": 0,
                "EOS": self.eos,
            }
        }

    @classmethod
    def small(cls, **overrides: int) -> "GPTConfig":
        """A few-layer model for tests: same vocabularies, narrow layers."""
        return replace(cls(d_model=64, heads=4, layers=2, ffn_dim=256, max_positions=512), **overrides)


def sinusoid_table(rows: int, dim: int) -> torch.Tensor:
    """The original's positional table: sin on even, cos on odd channels, float32."""
    position = torch.arange(0, rows, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(rows, dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


class TokenEmbedding(nn.Module):
    """An embedding under the original's attribute name ``word_embeddings``."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(tokens)


class SinePosition(nn.Module):
    """x + alpha * sinusoid[position]; the v2 model uses no sqrt(d) scale on x and a learned alpha."""

    def __init__(self, dim: int, rows: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        # Not in the checkpoint (the original keeps it as a plain attribute).
        self.register_buffer("table", sinusoid_table(rows, dim), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x + self.alpha * self.table[start : start + x.shape[1]]

    def at(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """x (B, 1, d) at one position given as an integer tensor (a Gather in ONNX)."""
        return x + self.alpha * self.table.index_select(0, position.reshape(1))


class SelfAttention(nn.Module):
    """Multi-head attention with the fused in_proj of nn.MultiheadAttention (same keys)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """q (B, Lq, d), k/v (B, Lk, d), bias additive, broadcastable to (B, H, Lq, Lk)."""
        batch, q_len, dim = q.shape
        head_dim = dim // self.heads
        q = q.reshape(batch, q_len, self.heads, head_dim).transpose(1, 2)
        k = k.reshape(batch, -1, self.heads, head_dim).transpose(1, 2)
        v = v.reshape(batch, -1, self.heads, head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim)) + bias
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, q_len, dim))

    def attend_cached(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """One token's attention: q/k/v (B, 1, d) over the cache (B, L, d) and the token's own k/v.

        ``bias`` (L + 1,) is additive: the cache's slots, then the token's own key. The same
        attention as ``attend`` on the cache with k/v written in, without writing the cache:
        the scores and weights of the own key are one extra column."""
        batch, _, dim = q.shape
        head_dim = dim // self.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, self.heads, head_dim).transpose(1, 2)

        q, k, v, k_cache, v_cache = heads(q), heads(k), heads(v), heads(k_cache), heads(v_cache)
        scores = torch.cat([torch.matmul(q, k_cache.transpose(-2, -1)), torch.matmul(q, k.transpose(-2, -1))], dim=-1)
        weights = torch.softmax(scores * (1.0 / math.sqrt(head_dim)) + bias, dim=-1)
        cached = k_cache.shape[2]
        out = torch.matmul(weights[..., :cached], v_cache) + torch.matmul(weights[..., cached:], v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, 1, dim))


class DecoderLayer(nn.Module):
    """Post-norm transformer layer (norm_first=False), ReLU feed-forward, as the original."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)

    def finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + attn)
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class LayerStack(nn.Module):
    """Holds the layers under ``h.layers`` like the original TransformerEncoder."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config.d_model, config.heads, config.ffn_dim) for _ in range(config.layers))


def prefill_bias(text_len: int, audio_len: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask (L, L) of the original prefill: text rows see the text only,
    audio rows see all text and the audio up to themselves."""
    total = text_len + audio_len
    row = torch.arange(total).unsqueeze(1)
    col = torch.arange(total).unsqueeze(0)
    text_row = row < text_len
    # logical ops, not a where on booleans (ONNX Runtime has no boolean Where)
    allowed = (text_row & (col < text_len)) | (~text_row & (col <= row))
    return torch.zeros(total, total, dtype=dtype).masked_fill(~allowed, float("-inf"))


class Text2SemanticGPT(nn.Module):
    """The v2 Text2SemanticDecoder for inference: prefill, cached step, full recompute."""

    def __init__(self, config: GPTConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GPTConfig()
        self.bert_proj = nn.Linear(config.bert_dim, config.d_model)
        self.ar_text_embedding = TokenEmbedding(config.phoneme_vocab_size, config.d_model)
        self.ar_text_position = SinePosition(config.d_model, config.max_positions)
        self.ar_audio_embedding = TokenEmbedding(config.vocab_size, config.d_model)
        self.ar_audio_position = SinePosition(config.d_model, config.max_positions)
        self.h = LayerStack(config)
        self.ar_predict_layer = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def embed(self, phones: torch.Tensor, bert_features: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        """[text; audio] inputs (B, T + P, d). phones (B, T), bert_features (B, 1024, T), audio (B, P)."""
        text = self.ar_text_embedding(phones) + self.bert_proj(bert_features.transpose(1, 2))
        text = self.ar_text_position(text)
        audio = self.ar_audio_position(self.ar_audio_embedding(audio_tokens))
        return torch.cat([text, audio], dim=1)

    def _run_full(self, x: torch.Tensor, text_len: int) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        bias = prefill_bias(text_len, x.shape[1] - text_len, x.dtype).to(x.device)
        keys, values = [], []
        for layer in self.h.layers:
            q, k, v = layer.self_attn.qkv(x)
            x = layer.finish(x, layer.self_attn.attend(q, k, v, bias))
            keys.append(k)
            values.append(v)
        return x, keys, values

    def full_logits(self, phones: torch.Tensor, bert_features: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T + P, vocab) of every position, recomputed without a cache."""
        x, _, _ = self._run_full(self.embed(phones, bert_features, audio_tokens), phones.shape[1])
        return self.ar_predict_layer(x)

    def prefill(
        self, phones: torch.Tensor, bert_features: torch.Tensor, prompt_tokens: torch.Tensor, max_len: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Run text + prompt; returns (logits of the last position (B, vocab), k_cache,
        v_cache, filled length T + P). The caches have ``max_len`` slots (see the module
        docstring); the first decoding step writes slot T + P. ``prompt_tokens`` may be
        (B, 0): the original's reference-free mode."""
        filled = phones.shape[1] + prompt_tokens.shape[1]
        if filled > max_len:
            raise ValueError(f"text + prompt is {filled} positions, more than the cache's {max_len}")
        rows = self.config.max_positions
        if phones.shape[1] > rows or max_len - phones.shape[1] > rows:
            # text and audio index the sinusoid table separately; the table does not grow
            raise ValueError(f"text ({phones.shape[1]}) and audio ({max_len - phones.shape[1]}) positions must each fit the {rows}-row position table")
        x, keys, values = self._run_full(self.embed(phones, bert_features, prompt_tokens), phones.shape[1])
        logits = self.ar_predict_layer(x[:, -1])
        # Pad instead of writing in place, so an exported prefill keeps a fixed cache shape.
        pad = (0, 0, 0, max_len - filled)
        k_cache = torch.stack([F.pad(k, pad) for k in keys])
        v_cache = torch.stack([F.pad(v, pad) for v in values])
        return logits, k_cache, v_cache, filled

    def step(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        text_len: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode one token with static shapes.

        token (B, 1) int64: the last sampled token; position (1,) int64: its cache slot
        (T + P + steps so far); text_len (1,) int64: T, so the token's audio position is
        position - T. Attends the cache's slots < position and the token itself; returns
        (logits (B, vocab), k_new, v_new): the token's keys and values (layers, B, 1, d),
        which ``write_step`` puts at slot ``position``. The caches are only read.
        """
        max_len = k_cache.shape[2]
        # Columns: the cache's slots, then the token's own key (always visible).
        columns = torch.arange(max_len + 1, device=k_cache.device)
        hidden = (columns >= position) & (columns < max_len)
        bias = torch.zeros(max_len + 1, dtype=k_cache.dtype, device=k_cache.device).masked_fill(hidden, float("-inf"))
        x = self.ar_audio_position.at(self.ar_audio_embedding(token), position - text_len)
        new_k, new_v = [], []
        for index, layer in enumerate(self.h.layers):
            q, k, v = layer.self_attn.qkv(x)
            x = layer.finish(x, layer.self_attn.attend_cached(q, k, v, k_cache[index], v_cache[index], bias))
            new_k.append(k)
            new_v.append(v)
        return self.ar_predict_layer(x[:, -1]), torch.stack(new_k), torch.stack(new_v)


def write_step(k_cache: torch.Tensor, v_cache: torch.Tensor, position: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
    """Write a step's new rows (layers, B, 1, d) into the caches at slot ``position`` (1,), in place:
    one row per layer, on the device, with no host read of the position (capturable)."""
    k_cache.index_copy_(2, position, k_new)
    v_cache.index_copy_(2, position, v_new)


class GPTStep(nn.Module):
    """``step`` as a module's forward, for torch.onnx.export (inputs in the step's order)."""

    def __init__(self, gpt: Text2SemanticGPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(
        self, token: torch.Tensor, position: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, text_len: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.gpt.step(token, position, k_cache, v_cache, text_len)


def exponential_noise(uniforms: torch.Tensor) -> torch.Tensor:
    """Exp(1) noise from uniforms in (0, 1] by inverse CDF; clamped so u = 1 cannot divide by zero."""
    return (-torch.log(uniforms)).clamp_min(torch.finfo(torch.float32).tiny)


def seen_mask(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, vocab) bool: which tokens occur in ``tokens`` (B, N), the repetition penalty's input."""
    seen = torch.zeros(tokens.shape[0], vocab_size, dtype=torch.bool, device=tokens.device)
    return seen.scatter(1, tokens.long(), True) if tokens.shape[1] else seen


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor | float) -> torch.Tensor:
    """The original's rule, once per distinct seen token: negative logits times the
    penalty, others divided by it (both push the token down for penalty > 1)."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def sample_next(
    logits: torch.Tensor,
    seen: torch.Tensor,
    uniforms: torch.Tensor,
    step: torch.Tensor | int,
    top_k: torch.Tensor | int = 15,
    top_p: torch.Tensor | float = 1.0,
    temperature: torch.Tensor | float = 1.0,
    repetition_penalty: torch.Tensor | float = 1.35,
    eos: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token as the original sampler does, from given uniforms.

    logits (B, V); seen (B, V) bool: tokens already in the prompt or generated;
    uniforms (B, V) in (0, 1]; step: the decoding step (0 for the prefill's logits).
    Order as the original: EOS removed before step 11, repetition penalty, top-p
    (only when < 1), temperature, top-k (<= 0 means off), softmax, argmax(p / Exp(1)).
    Returns (token (B,) int64, stop (B,) bool); stop is the original's rule: the
    sample is EOS, or EOS is the argmax of the penalized logits.
    Everything is a tensor op with fixed shapes, so the function exports as a graph.
    """
    vocab = logits.shape[-1]
    columns = torch.arange(vocab, device=logits.device)
    step = torch.as_tensor(step, device=logits.device)
    logits = logits.masked_fill((columns == eos) & (step < EOS_MIN_STEPS), float("-inf"))
    logits = penalize_repetition(logits, seen, torch.as_tensor(repetition_penalty, dtype=logits.dtype))
    argmax_is_eos = logits.argmax(dim=-1) == eos

    top_p = torch.as_tensor(top_p, dtype=logits.dtype, device=logits.device)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    # Drop a token once the mass before and including it passes top_p; the best one always stays.
    drop_sorted = (cumulative > top_p) & (columns > 0) & (top_p < 1.0)
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    logits = logits.masked_fill(drop, float("-inf"))

    logits = logits / torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device).clamp_min(1e-5)

    top_k = torch.as_tensor(top_k, device=logits.device).long()
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))
    # Sorting again keeps ties in the order the pivot sees them; masked entries are -inf.
    pivot = torch.sort(logits, dim=-1, descending=True)[0].gather(1, (k - 1).reshape(-1, 1).expand(logits.shape[0], 1))
    logits = logits.masked_fill(logits < pivot, float("-inf"))

    probs = torch.softmax(logits, dim=-1)
    token = torch.argmax(probs / exponential_noise(uniforms), dim=-1)
    return token, (token == eos) | argmax_is_eos


class GPTSampler(nn.Module):
    """``sample_next`` as a module's forward for export; the settings are inputs, EOS is fixed."""

    def __init__(self, eos: int = 1024) -> None:
        super().__init__()
        self.eos = eos

    def forward(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor,
        uniforms: torch.Tensor,
        step: torch.Tensor,
        top_k: torch.Tensor,
        top_p: torch.Tensor,
        temperature: torch.Tensor,
        repetition_penalty: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_next(logits, seen, uniforms, step, top_k, top_p, temperature, repetition_penalty, self.eos)


@torch.no_grad()
def generate(
    model: Text2SemanticGPT,
    phones: torch.Tensor,
    bert_features: torch.Tensor,
    prompt_tokens: torch.Tensor,
    uniforms: torch.Tensor,
    top_k: int = 15,
    top_p: float = 1.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.35,
    max_new_tokens: int = 1500,
    early_stop_num: int = -1,
) -> torch.Tensor:
    """Decode semantic tokens for one utterance (batch 1): prefill, then cached steps.

    ``uniforms`` (steps, 1, vocab) gives the randomness of each step; decoding runs at
    most min(max_new_tokens, steps) steps. Stops as the original: on EOS (the step's
    token is dropped), after ``early_stop_num`` new tokens when that is not -1 (the
    token that passes it is kept), or at the step limit. Returns the new tokens (1, N).
    """
    if phones.shape[0] != 1:
        raise ValueError("generate decodes one utterance at a time (batch 1)")
    steps = min(max_new_tokens, uniforms.shape[0])
    text_len, prompt_len = phones.shape[1], prompt_tokens.shape[1]
    vocab = model.config.vocab_size
    logits, k_cache, v_cache, filled = model.prefill(phones, bert_features, prompt_tokens, text_len + prompt_len + steps)
    seen = seen_mask(prompt_tokens, vocab)
    text_len_t = torch.tensor([text_len])
    new_tokens: list[torch.Tensor] = []
    for index in range(steps):
        token, stop = sample_next(
            logits, seen, uniforms[index], index, top_k, top_p, temperature, repetition_penalty, model.config.eos
        )
        if bool(stop[0]):
            break
        new_tokens.append(token)
        if early_stop_num != -1 and len(new_tokens) > early_stop_num:
            break
        seen = seen.scatter(1, token.reshape(1, 1), True)
        if index + 1 < steps:
            position = torch.tensor([filled + index])
            logits, k_new, v_new = model.step(token.reshape(1, 1), position, k_cache, v_cache, text_len_t)
            write_step(k_cache, v_cache, position, k_new, v_new)
    if not new_tokens:
        return torch.zeros(1, 0, dtype=torch.long)
    return torch.stack(new_tokens, dim=1)
