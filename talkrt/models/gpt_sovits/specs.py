"""GPT-SoVITS v2 export: the GPT as a prefill graph and a static step graph, SoVITS as
decoder, reference and latent graphs, for v2Pro / v2ProPlus the speaker-verification graph,
plus the chinese-hubert graph of the hubert family.

Graphs (``talkrt export gpt-sovits --out-dir D`` writes them all and ``manifest.json``):

* ``gpt-sovits-prefill``: ``phones`` (1, text), ``bert_features`` (1, 1024, text),
  ``prompt_tokens`` (1, prompt) and the sampler's inputs -> ``next_token``, ``stop``,
  ``logits``, ``k_cache_out`` / ``v_cache_out`` (layers, 1, cache_len, d_model) and
  ``seen_out``. Dynamic text and prompt lengths, fixed cache length.
* ``gpt-sovits-step``: ``token``, ``position``, the caches, ``text_len``,
  ``prefix_len``, ``seen`` and the sampler's inputs -> ``next_token``, ``stop``,
  ``logits``, ``k_new`` / ``v_new`` (layers, 1, 1, d_model): the fed token's keys and
  values, which the runtime writes into the caches at ``position`` (the graph only
  reads the caches), and ``seen_out``. Static shapes: one engine for every step.
* ``gpt-sovits-decoder``: ``codes`` (1, 1, tokens), ``phones`` (1, phones), ``ge``,
  ``noise`` (1, C, tokens, 2), ``noise_scale`` -> ``waveform`` (1, 1, tokens * 1280)
  at 32 kHz.
* ``gpt-sovits-reference``: ``ref_spectrogram`` (1, 1025, frames) [+ ``sv_emb`` for
  v2Pro / v2ProPlus] -> ``ge``.
* ``gpt-sovits-latent``: ``features`` (1, frames, 768) of chinese-hubert-base ->
  ``codes`` (1, 1, frames // 2): the reference's prompt tokens.
* ``gpt-sovits-speaker`` (v2Pro / v2ProPlus only): ``features`` (1, sv_frames, 80), the
  Kaldi fbank of the 16 kHz reference -> ``sv_emb`` (1, 20480) for the reference graph
  (``speaker.speaker_spec``).

Weights: ``--checkpoint DIR`` names a directory holding one GPT ``.ckpt`` and one
SoVITS ``.pth`` (and, optionally, a transformers ``chinese-hubert-base/`` folder
for the hubert graph; for a Pro SoVITS, ``sv/pretrained_eres2netv2w24s4ep4.ckpt``);
``--random-init`` builds a preset's sizes with seeded random weights (``tiny`` and
``tiny-pro`` for tests).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from talkrt.errors import TalkrtError
from talkrt.export.samplers import NORMAL
from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance
from talkrt.models.gpt_sovits.gpt import GPTConfig
from talkrt.models.gpt_sovits.sovits import RELEASED_CONFIGS, SMALL_CONFIG, SovitsConfig
from talkrt.models.gpt_sovits.speaker import RELEASED_CONFIG as RELEASED_SPEAKER
from talkrt.models.gpt_sovits.speaker import TINY_CONFIG as TINY_SPEAKER
from talkrt.models.gpt_sovits.speaker import SpeakerConfig, SpeakerEncoder, build_speaker_encoder, speaker_spec, speaker_weights

FAMILY = "gpt-sovits"  # the graphs' family name: gpt-sovits-prefill, gpt-sovits-step, ...
PACKAGE = "gpt_sovits"  # the registry's name, written in the manifest
GRAPHS = ("prefill", "step", "decoder", "reference", "latent")
SPEAKER = "speaker"  # v2Pro / v2ProPlus only: the reference's sv_emb (speaker.py)
SPEECH_ENCODER = "hubert"  # the reference's speech encoder: the hubert family's graph, exported with the others
ALL_GRAPHS = (*GRAPHS, SPEAKER, SPEECH_ENCODER)
MANIFEST = "manifest.json"
OPSET = 17
# The exported directory's layout: 2 since the step outputs only the new K/V rows (1 wrote the whole caches).
EXPORT_FORMAT = 2
# Slots of the KV cache (text + prompt + generated): fixed at export, as the step graph's shapes are.
CACHE_LEN = 1500
TINY_CACHE_LEN = 64
HUBERT_PRESET = "chinese-hubert-base"
TINY_HUBERT_PRESET = "tiny-hubert"
HUBERT_FOLDER = "chinese-hubert-base"
# Sampling settings of the original's web UI, the defaults of the runtime.
SAMPLING = {"top_k": 15, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.35, "noise_scale": 0.5}

# The tiny SoVITS decodes the tiny GPT's tokens (1024 codes, 732 phones) and reads tiny-hubert's 64 features.
TINY_SOVITS = replace(SMALL_CONFIG, n_symbols=732, codebook_size=1024, ssl_dim=64)
# The tiny Pro SoVITS takes the tiny speaker network's embedding.
TINY_PRO_SOVITS = replace(TINY_SOVITS, version="v2Pro", sv_dim=TINY_SPEAKER.emb_dim)


@dataclass(frozen=True)
class Sizes:
    """What the specs need of a GPT + SoVITS pair."""

    gpt: GPTConfig
    sovits: SovitsConfig
    cache_len: int
    hubert_preset: str
    speaker: SpeakerConfig = RELEASED_SPEAKER  # the sv_emb network of a Pro SoVITS

    @property
    def vocab(self) -> int:
        return self.gpt.vocab_size


PRESETS: dict[str, Sizes] = {
    **{name: Sizes(GPTConfig(), config, CACHE_LEN, HUBERT_PRESET) for name, config in RELEASED_CONFIGS.items()},
    "tiny": Sizes(GPTConfig.small(), TINY_SOVITS, TINY_CACHE_LEN, TINY_HUBERT_PRESET),
    "tiny-pro": Sizes(GPTConfig.small(), TINY_PRO_SOVITS, TINY_CACHE_LEN, TINY_HUBERT_PRESET, TINY_SPEAKER),
}


# ----------------------------------------------------------------------------- weights


def checkpoint_files(directory: str | os.PathLike) -> tuple[Path, Path, Path | None]:
    """(GPT .ckpt, SoVITS .pth, chinese-hubert folder or None) in a ``--checkpoint`` directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TalkrtError(
            f"--checkpoint {directory}: GPT-SoVITS takes a directory holding the GPT .ckpt and the SoVITS .pth "
            f"(and optionally {HUBERT_FOLDER}/), not a single file"
        )
    found = {}
    for suffix, what in ((".ckpt", "GPT (s1) .ckpt"), (".pth", "SoVITS (s2G) .pth")):
        files = sorted(p for p in directory.iterdir() if p.suffix == suffix and p.is_file())
        if len(files) != 1:
            listed = ", ".join(p.name for p in files) or "none"
            raise TalkrtError(f"--checkpoint {directory} must hold exactly one {what} (found {listed})")
        found[suffix] = files[0]
    hubert = directory / HUBERT_FOLDER
    return found[".ckpt"], found[".pth"], hubert if (hubert / "config.json").is_file() else None


@dataclass
class Models:
    """A GPT and a SoVITS in eval mode, their sizes and where they came from."""

    gpt: object  # Text2SemanticGPT
    sovits: object  # SovitsSynthesizer
    sizes: Sizes
    source: str
    hubert_checkpoint: Path | None = None


def build_random_gpt(config: GPTConfig, seed: int = 0):
    """A Text2SemanticGPT with seeded random weights and non-unit position scales, in eval mode."""
    import torch

    from talkrt.models.gpt_sovits.gpt import Text2SemanticGPT
    from talkrt.models.random_init import random_model

    model = random_model(lambda: Text2SemanticGPT(config), seed)
    with torch.no_grad():  # alpha 1 would hide a swapped text / audio position scale
        model.ar_text_position.alpha.fill_(0.7)
        model.ar_audio_position.alpha.fill_(1.3)
    return model.eval()


def load_models(preset: str | None = None, checkpoint: str | None = None, trust: bool = False, seed: int = 0, cache_len: int | None = None) -> Models:
    """The preset's sizes with random weights (default ``v2``), or the checkpoint directory's files."""
    if checkpoint is not None:
        if preset is not None:
            raise TalkrtError("give a GPT-SoVITS preset or a checkpoint directory, not both")
        from talkrt.models.gpt_sovits.gpt_checkpoint import load_gpt
        from talkrt.models.gpt_sovits.sovits_checkpoint import load_sovits

        gpt_path, sovits_path, hubert = checkpoint_files(checkpoint)
        gpt = load_gpt(gpt_path, trust=trust)
        loaded = load_sovits(sovits_path, trust=trust)
        sizes = Sizes(gpt.config, loaded.config, cache_len or CACHE_LEN, HUBERT_PRESET)
        return Models(gpt, loaded.model.eval(), _checked(sizes), f"{gpt_path.name} + {sovits_path.name}", hubert)
    from talkrt.models.gpt_sovits.sovits import build_random_sovits

    sizes = preset_sizes(preset, cache_len)
    return Models(build_random_gpt(sizes.gpt, seed), build_random_sovits(sizes.sovits, seed), sizes, "random")


def preset_sizes(preset: str | None, cache_len: int | None = None) -> Sizes:
    name = preset or "v2"
    if name not in PRESETS:
        raise TalkrtError(f"unknown GPT-SoVITS preset {name!r}; known: {', '.join(PRESETS)}")
    sizes = PRESETS[name]
    return _checked(replace(sizes, cache_len=cache_len or sizes.cache_len))


def _checked(sizes: Sizes) -> Sizes:
    if sizes.sovits.codebook_size != sizes.gpt.eos:
        raise TalkrtError(f"the GPT's EOS is {sizes.gpt.eos} but the SoVITS codebook has {sizes.sovits.codebook_size} codes: not a matching pair")
    if sizes.cache_len > sizes.gpt.max_positions:
        raise TalkrtError(f"cache length {sizes.cache_len} exceeds the GPT's {sizes.gpt.max_positions}-row position table")
    if sizes.sovits.is_pro and sizes.sovits.sv_dim != sizes.speaker.emb_dim:
        raise TalkrtError(f"the SoVITS takes a {sizes.sovits.sv_dim}-value sv_emb but the speaker network gives {sizes.speaker.emb_dim}")
    return sizes


def load_speaker(preset: str | None = None, checkpoint: str | os.PathLike | None = None, trust: bool = False, seed: int = 0) -> SpeakerEncoder:
    """A Pro voice's speaker network in eval mode: the checkpoint directory's ``sv/`` weights,
    or the preset's size with seeded random weights."""
    if checkpoint is not None:
        return build_speaker_encoder(speaker_weights(checkpoint), trust)
    return build_speaker_encoder(None, config=preset_sizes(preset).speaker, seed=seed)


def build_graph(checkpoint: str | None = None, trust: bool = False, seed: int = 0, *, graph: str, preset: str | None = None, models: Models | None = None, cache_len: int | None = None):
    """The eval-mode export module of one graph around fresh (or the given) models."""
    from talkrt.models.gpt_sovits.graphs import DecoderGraph, LatentGraph, PrefillGraph, ReferenceGraph, StepGraph

    if graph == SPEAKER:  # its own weights: the GPT and SoVITS are not needed
        return load_speaker(preset if checkpoint is None else None, checkpoint, trust, seed)
    models = models or load_models(preset if checkpoint is None else None, checkpoint, trust, seed, cache_len)
    if graph == "prefill":
        return PrefillGraph(models.gpt, models.sizes.cache_len).eval()
    if graph == "step":
        return StepGraph(models.gpt).eval()
    wrapper = {"decoder": DecoderGraph, "reference": ReferenceGraph, "latent": LatentGraph}[graph]
    return wrapper(models.sovits).eval()


# ----------------------------------------------------------------------------- specs


def _sampler_inputs(vocab: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("uniforms", (1, vocab), convention="uniform draws in (0, 1], one per token id: the sampler picks argmax(p / -log(u))", value_range=(1e-6, 1.0)),
        TensorSpec("top_k", (1,), "int64", "keep the k most likely tokens (0: off); the original's default 15", (0, 30)),
        TensorSpec("top_p", (1,), convention="nucleus mass kept (1: off)", value_range=(0.6, 1.0)),
        TensorSpec("temperature", (1,), convention="logit temperature (floored at 1e-5)", value_range=(0.6, 1.4)),
        TensorSpec("repetition_penalty", (1,), convention="applied once to each token already in the prompt or output; the original's default 1.35", value_range=(1.0, 1.6)),
    )


def _gpt_outputs(sizes: Sizes, graph: str) -> tuple[TensorSpec, ...]:
    """The prefill's and the step's outputs: the same but for the KV cache (whole from the prefill, the new rows from a step)."""
    cfg = sizes.gpt
    if graph == "prefill":
        cache = (cfg.layers, 1, sizes.cache_len, cfg.d_model)
        kv = (
            TensorSpec("k_cache_out", cache, convention="keys per layer and cache slot (heads not split); slots past the filled length are never read"),
            TensorSpec("v_cache_out", cache, convention="values, laid out as k_cache_out"),
        )
    else:
        rows = (cfg.layers, 1, 1, cfg.d_model)
        kv = (
            TensorSpec("k_new", rows, convention="the fed token's keys per layer: the runtime writes them into k_cache at slot position before the next step"),
            TensorSpec("v_new", rows, convention="the fed token's values, written into v_cache as k_new into k_cache"),
        )
    return (
        TensorSpec("next_token", (1, 1), "int64", f"the sampled semantic token (EOS = {cfg.eos})"),
        TensorSpec("stop", (1,), "int64", "1 when decoding ends here: the sample is EOS or EOS is the argmax of the penalised logits; this step's token is then dropped"),
        TensorSpec("logits", (1, cfg.vocab_size), convention="raw logits of this decoding step (before the sampler's rules)"),
        *kv,
        TensorSpec("seen_out", (1, cfg.vocab_size), "int64", "1 for each token in the prompt or output so far, next_token included: the next step's seen"),
    )


_GPT_FP32 = ("LayerNormalization", "Softmax", "CumSum", "Log", "Div", "TopK", "ReduceMax", "ArgMax")
_GPT_FP32_REASON = (
    "LayerNorm statistics and attention softmax lose range in FP16; the sampler's softmax, cumulative mass, "
    "-log(u) and the division that picks a token turn small errors into a different token"
)
_GPT_GATES = (Gate("logits", "cosine", 0.999, description="cosine similarity of the step's logits to FP32 (token agreement over a run is checked by the runtime tests)"),)


def _metadata(sizes: Sizes, name: str, checkpoint: str | None) -> dict[str, str]:
    cfg = sizes.sovits
    return {
        "preset": name if checkpoint is None else "",
        "source": "random" if checkpoint is None else str(checkpoint),
        "sample_rate": str(cfg.sampling_rate),
        "samples_per_token": str(cfg.samples_per_token),
        "cache_len": str(sizes.cache_len),
        "eos": str(sizes.gpt.eos),
        "sovits_version": cfg.version,
    }


def gpt_sovits_specs(preset: str | None = None, checkpoint: str | None = None, sizes: Sizes | None = None) -> dict[str, ExportSpec]:
    """Every GPT-SoVITS spec, keyed by graph (``speaker`` only for v2Pro / v2ProPlus); ``sizes``
    (from already loaded models) spares loading them again."""
    name = preset or ("v2" if checkpoint is None else Path(checkpoint).name)
    if sizes is None:
        sizes = preset_sizes(preset) if checkpoint is None else load_models(None, checkpoint).sizes
    graphs = (*GRAPHS, SPEAKER) if sizes.sovits.is_pro else GRAPHS
    return {graph: _spec(graph, sizes, name, preset, checkpoint) for graph in graphs}


def gpt_sovits_spec(graph: str = "step", preset: str | None = None, checkpoint: str | None = None) -> ExportSpec:
    """One spec (``talkrt.models.registry.get_spec("gpt-sovits", graph="step", preset="tiny")``)."""
    if graph not in (*GRAPHS, SPEAKER):
        raise TalkrtError(f"GPT-SoVITS has graphs {', '.join((*GRAPHS, SPEAKER))}, not {graph!r}")
    specs = gpt_sovits_specs(preset, checkpoint)
    if graph not in specs:
        raise TalkrtError(f"the {graph} graph is for v2Pro / v2ProPlus; this SoVITS is {specs['reference'].metadata['sovits_version']}")
    return specs[graph]


def _spec(graph: str, sizes: Sizes, name: str, preset: str | None, checkpoint: str | None) -> ExportSpec:
    gpt, sov = sizes.gpt, sizes.sovits
    vocab, cache_len = gpt.vocab_size, sizes.cache_len
    metadata = _metadata(sizes, name, checkpoint)
    build = partial(build_graph, graph=graph, preset=preset, cache_len=cache_len)
    common = {"family": FAMILY, "graph": graph, "build_module": build, "opset": OPSET, "exporter": "legacy", "metadata": metadata}
    phones_range = (0, gpt.phoneme_vocab_size - 1)
    if graph == "prefill":
        # text + prompt must leave at least one slot to decode into
        text = Dim("text", 1, max(2, cache_len // 16), cache_len * 4 // 15, trace=max(3, cache_len // 8))
        prompt = Dim("prompt", 1, max(2, cache_len // 8), cache_len * 2 // 5, trace=max(3, cache_len // 6))
        return ExportSpec(
            **common,
            description=f"{name} GPT-SoVITS GPT prefill: phones + BERT + prompt tokens -> first token and a {cache_len}-slot KV cache",
            inputs=(
                TensorSpec("phones", (1, "text"), "int64", "phone ids of prompt text + target text (v2 symbol table)", phones_range),
                TensorSpec("bert_features", (1, gpt.bert_dim, "text"), convention="BERT features per phone (zeros for non-Chinese phones)", value_range=(-1.0, 1.0), sampler=NORMAL),
                TensorSpec("prompt_tokens", (1, "prompt"), "int64", "the reference's semantic tokens (gpt-sovits-latent); at least one", (0, gpt.eos - 1)),
                *_sampler_inputs(vocab),
            ),
            outputs=_gpt_outputs(sizes, "prefill"),
            dims=(text, prompt),
            exporter_reason=(
                "TorchScript exporter at opset 17: the cache padding and the prefill mask follow the traced text and prompt "
                "lengths as shape arithmetic; validated at lengths 1 to the maximum"
            ),
            tolerance=Tolerance(atol=1e-4, rtol=1e-4),
            validation_points=({"text": 1, "prompt": 1}, {"text": 5, "prompt": 2}, {"text": text.max, "prompt": prompt.max}),
            keep_fp32_ops=_GPT_FP32,
            keep_fp32_reason=_GPT_FP32_REASON,
            gates=_GPT_GATES,
        )
    if graph == "step":
        cache = (gpt.layers, 1, cache_len, gpt.d_model)
        quarter = max(1, cache_len // 4)
        return ExportSpec(
            **common,
            description=f"{name} GPT-SoVITS GPT decoding step with the sampler: token + {cache_len}-slot cache -> next token, end flag and the token's new cache rows",
            inputs=(
                TensorSpec("token", (1, 1), "int64", "the last sampled token", (0, gpt.eos)),
                TensorSpec("position", (1,), "int64", f"its cache slot: prefix_len + steps so far (< {cache_len})", (cache_len // 2, cache_len - 1)),
                TensorSpec("k_cache", cache, convention="the prefill's k_cache_out with each earlier step's k_new written at its position; slots >= position are not read", value_range=(-1.0, 1.0), sampler=NORMAL),
                TensorSpec("v_cache", cache, convention="the prefill's v_cache_out with each earlier step's v_new written at its position", value_range=(-1.0, 1.0), sampler=NORMAL),
                TensorSpec("text_len", (1,), "int64", "number of phones T (the token's audio position is position - T)", (1, quarter)),
                TensorSpec("prefix_len", (1,), "int64", "T + P: the slot of the first generated token (the sampling step is position - prefix_len + 1)", (quarter + 1, cache_len // 2)),
                TensorSpec("seen", (1, vocab), "int64", "seen_out of the prefill or the previous step (repetition penalty)", (0, 1)),
                *_sampler_inputs(vocab),
            ),
            outputs=_gpt_outputs(sizes, "step"),
            dims=(),
            exporter_reason="TorchScript exporter at opset 17, static shapes: the attention mask comes from the position input",
            tolerance=Tolerance(atol=1e-4, rtol=1e-4),
            # static: each point is a fresh draw of positions, caches and sampler settings
            validation_points=({}, {}, {}),
            keep_fp32_ops=_GPT_FP32,
            keep_fp32_reason=_GPT_FP32_REASON,
            gates=_GPT_GATES,
        )
    if graph == "decoder":
        tokens = Dim("tokens", 1, 250, 1500, trace=37)
        phones = Dim("phones", 1, 64, 512, trace=23)
        rate, per_token = sov.sampling_rate, sov.samples_per_token
        return ExportSpec(
            **common,
            description=f"{name} GPT-SoVITS SoVITS {sov.version} decoder: semantic tokens + phones + style -> {rate} Hz waveform",
            inputs=(
                TensorSpec("codes", (1, 1, "tokens"), "int64", "semantic tokens from the GPT (EOS dropped)", (0, sov.codebook_size - 1)),
                TensorSpec("phones", (1, "phones"), "int64", "phone ids of the target text only", (0, sov.n_symbols - 1)),
                TensorSpec("ge", (1, sov.gin_channels, 1), convention="style vector from gpt-sovits-reference", value_range=(-1.0, 1.0), sampler=NORMAL),
                TensorSpec("noise", (1, sov.inter_channels, "tokens", 2), convention="standard normal prior noise, two 50 Hz frames per token (a (1, C, 2 * tokens) tensor viewed as (1, C, tokens, 2))", value_range=(-3.0, 3.0), sampler=NORMAL),
                TensorSpec("noise_scale", (1,), convention="prior noise scale (0.5 in the original)", value_range=(0.0, 1.0)),
            ),
            outputs=(TensorSpec("waveform", (1, 1, "samples"), convention=f"mono waveform at {rate} Hz in [-1, 1], {per_token} samples per token", value_range=(-1.0, 1.0)),),
            dims=(tokens, phones),
            derived_dims={"samples": f"tokens * {per_token}"},
            exporter_reason="TorchScript exporter at opset 17: relative-position attention is built from aranges over the traced lengths; weight norm is folded before export",
            tolerance=Tolerance(atol=2e-4, rtol=1e-3),
            validation_points=({"tokens": 1, "phones": 1}, {"tokens": 6, "phones": 40}, {"tokens": 90, "phones": 7}),
            keep_fp32_ops=("LayerNormalization", "Softmax", "Exp", "Pow", "ReduceSum", "Tanh"),
            keep_fp32_reason="channel LayerNorm and attention softmax; exp of the prior's log-scale; tanh of the waveform saturates late in FP16",
            gates=(Gate("waveform", "snr", 30.0, description="waveform SNR against FP32 in dB (TTS waveform gate)"),),
        )
    if graph == "reference":
        frames = Dim("ref_frames", 2, 250, 1000, trace=41)
        bins = sov.filter_length // 2 + 1
        sv = (TensorSpec("sv_emb", (1, sov.sv_dim), convention="speaker-verification embedding of the reference (v2Pro / v2ProPlus)", value_range=(-1.0, 1.0), sampler=NORMAL),) if sov.is_pro else ()
        return ExportSpec(
            **common,
            description=f"{name} GPT-SoVITS SoVITS {sov.version} style encoder: reference spectrogram -> ge",
            inputs=(TensorSpec("ref_spectrogram", (1, bins, "ref_frames"), convention=f"linear magnitude spectrogram of the 32 kHz reference (n_fft {sov.filter_length}, hop {sov.hop_length}; sovits.linear_spectrogram)", value_range=(0.0, 4.0)), *sv),
            outputs=(TensorSpec("ge", (1, sov.gin_channels, 1), convention="style vector for gpt-sovits-decoder"),),
            dims=(frames,),
            exporter_reason="TorchScript exporter at opset 17: the time average is a sum over the traced frame count",
            tolerance=Tolerance(atol=1e-4, rtol=1e-4),
            validation_points=({"ref_frames": 2}, {"ref_frames": 7}, {"ref_frames": 300}),
            keep_fp32_ops=("Softmax", "Softplus", "Tanh", "ReduceSum", "Div"),
            keep_fp32_reason="attention softmax, Mish's softplus/tanh and the time average",
            gates=(Gate("ge", "cosine", 0.999, description="cosine similarity of the style vector to FP32"),),
        )
    if graph == SPEAKER:
        spec = speaker_spec(sizes.speaker)
        return replace(spec, build_module=build, metadata={**metadata, **spec.metadata}, description=f"{name} {spec.description}")
    if graph == "latent":
        frames = Dim("ssl_frames", 2, 300, 1000, trace=40)
        return ExportSpec(
            **common,
            description=f"{name} GPT-SoVITS SoVITS quantizer: 50 Hz HuBERT features -> 25 Hz semantic tokens (the reference's prompt tokens)",
            inputs=(TensorSpec("features", (1, "ssl_frames", sov.ssl_dim), convention=f"last hidden state of {sizes.hubert_preset} (the hubert graph's output), 50 frames per second", value_range=(-1.0, 1.0), sampler=NORMAL),),
            outputs=(TensorSpec("codes", (1, 1, "codes"), "int64", "semantic tokens: prompt_tokens for the prefill are codes[0]"),),
            dims=(frames,),
            derived_dims={"codes": "floor(ssl_frames / 2)"},
            exporter_reason="TorchScript exporter at opset 17: a strided conv and a nearest-code argmax",
            tolerance=Tolerance(atol=0.0, rtol=0.0),
            validation_points=({"ssl_frames": 2}, {"ssl_frames": 9}, {"ssl_frames": 301}),
            # every float op: FP16 rounding of the projection or the distances picks other codes (checked: 135 apart at v2 sizes)
            keep_fp32_ops=("Conv", "Transpose", "Reshape", "Pow", "ReduceSum", "MatMul", "Mul", "Add", "Sub", "Neg", "ArgMax"),
            keep_fp32_reason="the whole graph: a strided conv and the distances to the codebook are cheap, and any FP16 rounding picks other codes",
            gates=(Gate("codes", "max_abs", 0.0, description="every code as in FP32"),),
        )
    raise TalkrtError(f"GPT-SoVITS has graphs {', '.join(GRAPHS)}, not {graph!r}")


# ----------------------------------------------------------------------------- export


def export_gpt_sovits(
    out_dir: str | os.PathLike,
    preset: str | None = None,
    checkpoint: str | None = None,
    trust: bool = False,
    seed: int = 0,
    *,
    graphs: tuple[str, ...] = ALL_GRAPHS,
    validate: bool = True,
    cache_len: int | None = None,
    step=lambda _: None,
) -> dict:
    """Export the GPT-SoVITS graphs (validated against PyTorch) into ``out_dir`` and write ``manifest.json``.

    ``hubert`` (the reference's feature extractor) is the hubert family's graph:
    with a checkpoint directory it is exported from its ``chinese-hubert-base/``
    folder and skipped (manifest ``files`` without it) when there is none; with
    random weights it is the preset's hubert with random weights. ``speaker`` (v2Pro /
    v2ProPlus only) comes from the checkpoint directory's ``sv/`` weights (refused without
    them: no other command exports it) or is the preset's speaker network with random weights.
    """
    from talkrt.export.onnx import export_onnx
    from talkrt.fileio import write_text_atomic

    unknown = set(graphs) - set(ALL_GRAPHS)
    if unknown:
        raise TalkrtError(f"GPT-SoVITS has graphs {', '.join(ALL_GRAPHS)}, not {', '.join(sorted(unknown))}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = load_models(preset, checkpoint, trust, seed, cache_len)
    specs = gpt_sovits_specs(preset, None if checkpoint is None else str(checkpoint), sizes=models.sizes)
    if SPEAKER in specs and SPEAKER in graphs and checkpoint is not None:
        speaker_weights(checkpoint)  # a missing sv/ file is refused now, not after the long exports
    files = {}
    for graph, spec in specs.items():
        if graph not in graphs:
            continue
        path = out_dir / f"{graph}.onnx"
        module = build_graph(checkpoint, trust, seed, graph=graph, preset=preset, models=models)
        export_onnx(spec, module, path, validate=validate, step=step)
        files[graph] = path.name
    hubert_note = None
    if SPEECH_ENCODER in graphs:
        hubert_note = _export_hubert(out_dir, models, checkpoint is None, trust, seed, validate, step)
        if hubert_note is None:
            files[SPEECH_ENCODER] = f"{SPEECH_ENCODER}.onnx"
    sizes, sov = models.sizes, models.sizes.sovits
    manifest = {
        "family": PACKAGE,
        "format": EXPORT_FORMAT,
        "files": files,
        "sample_rate": sov.sampling_rate,
        "samples_per_token": sov.samples_per_token,
        "cache_len": sizes.cache_len,
        "vocab_size": sizes.gpt.vocab_size,
        "eos": sizes.gpt.eos,
        "phoneme_vocab_size": sizes.gpt.phoneme_vocab_size,
        "bert_dim": sizes.gpt.bert_dim,
        "max_positions": sizes.gpt.max_positions,
        "sovits_version": sov.version,
        "inter_channels": sov.inter_channels,
        "gin_channels": sov.gin_channels,
        "ssl_dim": sov.ssl_dim,
        "sv_dim": sov.sv_dim if sov.is_pro else None,
        "spectrogram": {"n_fft": sov.filter_length, "hop": sov.hop_length, "win": sov.win_length},
        "hubert_preset": sizes.hubert_preset,
        "hubert_missing": hubert_note,
        "sampling": dict(SAMPLING),
        "source": models.source,
        "preset": (preset or "v2") if checkpoint is None else None,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "seed": seed if checkpoint is None else None,
        "opset": OPSET,
    }
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _export_hubert(out_dir: Path, models: Models, random: bool, trust: bool, seed: int, validate: bool, step) -> str | None:
    """The hubert family's encoder graph (last hidden layer) as ``hubert.onnx``; None when written,
    else why not. Reached through the registry: that family owns the model and its spec."""
    from talkrt.export.onnx import export_onnx
    from talkrt.models.registry import get_spec

    if not random and models.hubert_checkpoint is None:
        return f"no {HUBERT_FOLDER}/ folder in the checkpoint directory: export it with `talkrt export hubert --checkpoint DIR --out {out_dir / 'hubert.onnx'}`"
    source = None if random else str(models.hubert_checkpoint)
    spec = get_spec(SPEECH_ENCODER, preset=models.sizes.hubert_preset, checkpoint=source)
    module = spec.build_module(None, seed=seed) if random else spec.build_module(source, trust)
    export_onnx(spec, module, out_dir / f"{SPEECH_ENCODER}.onnx", validate=validate, step=step)
    return None
