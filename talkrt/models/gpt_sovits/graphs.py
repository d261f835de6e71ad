"""The GPT-SoVITS export graphs: modules whose forward takes exactly a spec's inputs.

* ``PrefillGraph``: text + prompt in one pass, the KV cache written into
  preallocated ``cache_len`` slots, and the first token sampled in the graph.
* ``StepGraph``: one cached decoding step plus the sampler, so a step takes the
  last token and gives the next one and an end flag: the whole AR loop stays on
  the device (token and seen-token mask go round as I/O; the caches are inputs,
  and the step's new K/V rows outputs that the runtime writes into them).
* ``DecoderGraph``: SoVITS ``decode`` with the prior noise given at token rate
  (tokens, 2) so one dynamic axis drives codes, noise and waveform.
* ``ReferenceGraph``: reference spectrogram (and v2Pro's speaker embedding) -> ge.
* ``LatentGraph``: HuBERT features (the hubert graph's layout) -> semantic codes,
  the prompt tokens of a reference.

Integer flags and masks are int64 (0/1), not bool: every backend binds int64,
and the validation samplers draw integers. No graph holds a random op: the
sampler's uniforms and the prior's noise are inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from talkrt.models.gpt_sovits.gpt import Text2SemanticGPT, sample_next
from talkrt.models.gpt_sovits.sovits import SovitsSynthesizer


def _with_token(seen: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """seen (B, V) bool | one-hot(token (B,)) -> int64 (B, V)."""
    columns = torch.arange(seen.shape[-1], device=seen.device)
    return (seen | (columns == token.reshape(-1, 1))).to(torch.int64)


class PrefillGraph(nn.Module):
    """(phones, bert_features, prompt_tokens, uniforms, settings) -> (next_token, stop, logits,
    k_cache_out, v_cache_out, seen_out): the prefill and the sample of decoding step 0."""

    def __init__(self, gpt: Text2SemanticGPT, cache_len: int) -> None:
        super().__init__()
        self.gpt, self.cache_len = gpt, cache_len

    def forward(
        self,
        phones: torch.Tensor,
        bert_features: torch.Tensor,
        prompt_tokens: torch.Tensor,
        uniforms: torch.Tensor,
        top_k: torch.Tensor,
        top_p: torch.Tensor,
        temperature: torch.Tensor,
        repetition_penalty: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        logits, k_cache, v_cache, _ = self.gpt.prefill(phones, bert_features, prompt_tokens, self.cache_len)
        vocab = logits.shape[-1]
        # The prompt's tokens as a mask by comparison and max, not a scatter: plain ops for TensorRT.
        hits = (prompt_tokens.unsqueeze(-1) == torch.arange(vocab, device=logits.device)).to(logits.dtype)
        seen = hits.amax(dim=1) > 0
        token, stop = sample_next(logits, seen, uniforms, 0, top_k, top_p, temperature, repetition_penalty, self.gpt.config.eos)
        return token.reshape(-1, 1), stop.to(torch.int64), logits, k_cache, v_cache, _with_token(seen, token)


class StepGraph(nn.Module):
    """(token, position, k_cache, v_cache, text_len, prefix_len, seen, uniforms, settings) ->
    (next_token, stop, logits, k_new, v_new, seen_out), all shapes static.

    ``position`` is the fed token's cache slot, ``prefix_len`` is T + P (the slot of the
    first generated token), so the logits computed here are those of decoding step
    ``position - prefix_len + 1``: the step number the EOS rule reads. ``k_new`` /
    ``v_new`` (layers, 1, 1, d) are the fed token's keys and values: the runtime writes
    them at slot ``position`` (``gpt.write_step``) before the next step."""

    def __init__(self, gpt: Text2SemanticGPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        text_len: torch.Tensor,
        prefix_len: torch.Tensor,
        seen: torch.Tensor,
        uniforms: torch.Tensor,
        top_k: torch.Tensor,
        top_p: torch.Tensor,
        temperature: torch.Tensor,
        repetition_penalty: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        logits, k_new, v_new = self.gpt.step(token, position, k_cache, v_cache, text_len)
        seen = seen != 0
        step = position - prefix_len + 1
        next_token, stop = sample_next(logits, seen, uniforms, step, top_k, top_p, temperature, repetition_penalty, self.gpt.config.eos)
        return next_token.reshape(-1, 1), stop.to(torch.int64), logits, k_new, v_new, _with_token(seen, next_token)


class DecoderGraph(nn.Module):
    """(codes (1, B, T), phones (B, n), ge (B, gin, 1), noise (B, C, T, 2), noise_scale (1,)) ->
    waveform (B, 1, T * samples_per_token). Noise frame 2t + j is ``noise[..., t, j]``: a
    (B, C, 2T) tensor viewed as (B, C, T, 2)."""

    def __init__(self, model: SovitsSynthesizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor, phones: torch.Tensor, ge: torch.Tensor, noise: torch.Tensor, noise_scale: torch.Tensor) -> torch.Tensor:
        frames = noise.reshape(noise.shape[0], noise.shape[1], -1)
        return self.model.decode(codes, phones, ge, frames, noise_scale)


class ReferenceGraph(nn.Module):
    """(ref_spectrogram (B, bins, frames)[, sv_emb (B, sv_dim)]) -> ge (B, gin, 1)."""

    def __init__(self, model: SovitsSynthesizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, ref_spectrogram: torch.Tensor, sv_emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.reference_style(ref_spectrogram, sv_emb)


class LatentGraph(nn.Module):
    """HuBERT features (B, frames, ssl_dim) at 50 Hz -> semantic codes (B, 1, frames // 2) at 25 Hz."""

    def __init__(self, model: SovitsSynthesizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.extract_latent(features.transpose(1, 2))
