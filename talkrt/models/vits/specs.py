"""VITS (transformers ``VitsModel``) export: encoder | length regulation | decoder, plus one full graph.

A VITS utterance has a data-dependent length: the duration predictor decides how
many spectrogram frames each token gets. A TensorRT engine wants every output
shape to follow from its input shapes, so the model is cut where the length is
decided (as airockchip's rknn MMS-TTS port does):

* ``encoder`` graph: text encoder + duration predictor. ``(input_ids,
  input_lengths, duration_noise, noise_scale_w, length_scale[, speaker_id])`` ->
  ``durations`` (frames per token, already ceil'ed and masked), the prior
  ``prior_means`` / ``prior_log_variances`` per token and ``input_mask``. Every
  output is (batch, ..., tokens).
* length regulation (``talkrt.models.vits.length.regulate_lengths``), not a graph: frame
  counts, the output mask and the prior expanded to frames, by a gather on the
  device.
* ``decoder`` graph: prior sampling, flow (reverse) and HiFi-GAN.
  ``(prior_means, prior_log_variances, latent_noise, noise_scale,
  output_mask[, speaker_id])`` (all (batch, C, frames)) -> ``waveform`` (batch, 1,
  frames * hop).
* ``full`` graph for ONNX Runtime users: all of it in one graph, data-dependent
  output length.

Noise is always an input (``duration_noise`` for the stochastic duration
predictor, ``latent_noise`` for the prior), never a random op in a graph:
TensorRT ignores RandomNormalLike's seed, and with noise as an input every
backend reproduces PyTorch exactly.

Export-hostile code is isolated here: the stochastic duration predictor's reverse
pass is rewritten around transformers' submodules with the noise as an input and
the rational-quadratic spline without boolean-mask indexing (``torch.where`` and
clamping; equal to transformers' spline), so no NonZero / ScatterND reach
TensorRT; the text encoder gets an explicit 4-D attention mask (transformers
drops an all-ones mask in Python, which a trace would bake in); the flow's
WaveNet runs without transformers' all-zeros speaker conditioning, which
TensorRT-RTX 1.7 cannot build.
"""

from __future__ import annotations

import json
import math
import os
from functools import partial
from pathlib import Path


from talkrt.errors import TalkrtError
from talkrt.export.samplers import NORMAL, Sampler, lengths_over, mask_over
from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance
from talkrt.models.vits.graphs import VitsDecoderGraph, VitsEncoderGraph, VitsFullGraph, decoder_receptive_field

FAMILY = "vits"
GRAPHS = ("encoder", "decoder", "full")
MANIFEST = "manifest.json"
OPSET = 17
# The relative-position attention branches in Python on max(tokens - 5, 0): a
# trace at 5 tokens or fewer fails at run time for longer inputs, a trace at 6 or
# more works for every length. Trace well above that.
TRACE_TOKENS = 32


# ----------------------------------------------------------------------------- specs


def _model_facts(preset: str | None, checkpoint: str | None) -> tuple[str, dict]:
    """(preset or checkpoint name, facts the specs need): from the preset's config, or by loading the checkpoint."""
    from talkrt.models.vits.model import VITS_PRESETS, load_vits, make_config

    if checkpoint is not None:
        if preset is not None:
            raise TalkrtError("give a VITS preset or a checkpoint, not both")
        model, info = load_vits(checkpoint, trust=False)
        return Path(checkpoint).name, _facts(model.config, info.add_blank)
    name = preset or "mms-tts-eng"
    if name not in VITS_PRESETS:
        raise TalkrtError(f"unknown VITS preset {name!r}; known: {', '.join(VITS_PRESETS)}")
    return name, _facts(make_config(name), add_blank=True)


def _facts(config, add_blank: bool) -> dict:
    return {
        "vocab_size": int(config.vocab_size),
        "channels": int(config.flow_size),
        "hop": int(math.prod(config.upsample_rates)),
        "sample_rate": int(config.sampling_rate),
        "num_speakers": int(config.num_speakers),
        "stochastic": bool(config.use_stochastic_duration_prediction),
        "add_blank": bool(add_blank),
        "receptive_field": decoder_receptive_field(config),
    }


def build_vits_graph(checkpoint: str | None = None, trust: bool = False, seed: int = 0, *, graph: str, preset: str | None = None, model=None):
    """The eval-mode export module of one graph, around a fresh (or the given) ``VitsModel``."""
    if model is None:
        from talkrt.models.vits.model import build_random_vits, load_vits

        model = build_random_vits(preset or "mms-tts-eng", seed=seed) if checkpoint is None else load_vits(checkpoint, trust=trust)[0]
    wrapper = {"encoder": VitsEncoderGraph, "decoder": VitsDecoderGraph, "full": VitsFullGraph}[graph](model)
    return wrapper.eval()  # export restores the wrapper's mode recursively: keep it in eval


_KEEP_FP32_ENCODER = ("LayerNormalization", "Softmax", "Exp", "Log", "Softplus", "Pow", "Sqrt", "Div", "CumSum", "ReduceSum", "Ceil")
_KEEP_FP32_DECODER = ("Exp", "Pow", "ReduceSum", "Tanh")


def vits_specs(preset: str | None = None, checkpoint: str | None = None) -> dict[str, ExportSpec]:
    """The three VITS specs, keyed "encoder", "decoder", "full"."""
    name, facts = _model_facts(preset, checkpoint)
    return {graph: _spec(graph, name, facts, preset, checkpoint) for graph in GRAPHS}


def vits_specs_for_model(model, preset: str | None = None, checkpoint: str | None = None) -> dict[str, ExportSpec]:
    """The three specs of an already built ``VitsModel`` (its config decides the inputs)."""
    from talkrt.models.vits.model import vits_info

    name = preset or (Path(checkpoint).name if checkpoint else "vits")
    facts = _facts(model.config, vits_info(model).add_blank)
    return {graph: _spec(graph, name, facts, preset, checkpoint) for graph in GRAPHS}


def vits_spec(graph: str = "encoder", preset: str | None = None, checkpoint: str | None = None) -> ExportSpec:
    """One VITS spec (``talkrt.models.registry.get_spec("vits", graph="decoder", preset="tiny")``)."""
    if graph not in GRAPHS:
        raise TalkrtError(f"VITS has graphs {', '.join(GRAPHS)}, not {graph!r}")
    name, facts = _model_facts(preset, checkpoint)
    return _spec(graph, name, facts, preset, checkpoint)


def _spec(graph: str, name: str, facts: dict, preset: str | None, checkpoint: str | None) -> ExportSpec:
    channels, hop, rate = facts["channels"], facts["hop"], facts["sample_rate"]
    stochastic, speakers = facts["stochastic"], facts["num_speakers"]
    batch = Dim("batch", 1, 1, 4, trace=2)
    tokens = Dim("tokens", 1, 64, 400, trace=TRACE_TOKENS)
    frames = Dim("frames", 1, 256, 4096, trace=200)
    noise_frames = Dim("noise_frames", 1, 1024, 16384, trace=600)
    ids = TensorSpec("input_ids", ("batch", "tokens"), "int64", "token ids, padded with 0 to the longest item" + (" (id 0 interspersed: add_blank)" if facts["add_blank"] else ""), (0, facts["vocab_size"] - 1))
    lengths = TensorSpec("input_lengths", ("batch",), "int64", "number of valid tokens per item (1..tokens); the mask is built inside the graph", (1, 64), lengths_over("tokens"))
    duration_noise = TensorSpec("duration_noise", ("batch", 2, "tokens"), convention="standard normal noise for the stochastic duration predictor (scaled by noise_scale_w inside)", value_range=(-3.0, 3.0), sampler=NORMAL)
    noise_scale_w = TensorSpec("noise_scale_w", (1,), convention="duration noise scale (0.8 in the VITS notebooks)", value_range=(0.0, 1.0))
    length_scale = TensorSpec("length_scale", (1,), convention="duration multiplier (1 / speaking rate)", value_range=(0.8, 1.5))
    noise_scale = TensorSpec("noise_scale", (1,), convention="prior noise scale (0.667 in the VITS notebooks)", value_range=(0.0, 1.0))
    speaker = (TensorSpec("speaker_id", ("batch",), "int64", "speaker index per item", (0, speakers - 1)),) if speakers > 1 else ()
    metadata = {
        "preset": name if checkpoint is None else "",
        "source": "random" if checkpoint is None else str(checkpoint),
        "sample_rate": str(rate),
        "hop": str(hop),
        "add_blank": str(facts["add_blank"]).lower(),
        "n_speakers": str(speakers),
        "channels": str(channels),
        "stochastic_duration_predictor": str(stochastic).lower(),
        "decoder_receptive_field_frames": str(facts["receptive_field"]),
    }
    build = partial(build_vits_graph, graph=graph, preset=preset)
    legacy_reason = (
        "TorchScript exporter at opset 17 (LayerNormalization stays one op), traced at "
        f"{TRACE_TOKENS} tokens: the relative-position attention branches in Python on max(tokens - 5, 0), and a trace "
        "at 6 or more tokens serves every length (validated from 1 token up). With the where-based spline the dynamo "
        "exporter also exports the encoder and decoder with the same parity, but takes 10-40 s per graph on a CPU "
        "against 1-6 s; one exporter serves all three graphs, including the full graph's data-dependent frame count"
    )
    if graph == "encoder":
        inputs = (ids, lengths, *((duration_noise, noise_scale_w) if stochastic else ()), length_scale, *speaker)
        return ExportSpec(
            family=FAMILY,
            graph="encoder",
            description=f"{name} VITS text encoder + {'stochastic ' if stochastic else ''}duration predictor: tokens -> durations and prior",
            build_module=build,
            inputs=inputs,
            outputs=(
                TensorSpec("durations", ("batch", "tokens"), convention="frames per token: ceil(exp(log_duration) * length_scale), 0 on padding", value_range=(0.0, 50.0)),
                TensorSpec("prior_means", ("batch", channels, "tokens"), convention="prior mean per token, 0 on padding"),
                TensorSpec("prior_log_variances", ("batch", channels, "tokens"), convention="prior log standard deviation per token (transformers calls it log variance), 0 on padding"),
                TensorSpec("input_mask", ("batch", 1, "tokens"), convention="1 on valid tokens, 0 on padding"),
            ),
            dims=(batch, tokens),
            opset=OPSET,
            exporter="legacy",
            exporter_reason=legacy_reason,
            tolerance=Tolerance(atol=1e-4, rtol=1e-4),
            validation_points=({"batch": 1, "tokens": 1}, {"batch": 1, "tokens": 5}, {"batch": 3, "tokens": 37}),
            keep_fp32_ops=_KEEP_FP32_ENCODER,
            keep_fp32_reason="LayerNorm statistics, softmax logits, exp(log-duration), the spline's softplus/log/sqrt and the duration sums lose range or resolution in FP16; a one-ulp change before ceil moves a whole frame",
            gates=(
                Gate("prior_means", "cosine", 0.999, description="cosine similarity to FP32 of each prior-mean channel over the tokens (minimum over channels)"),
                Gate("durations", "max_abs", 1.0, description="no token gains or loses more than one frame"),
            ),
            metadata=metadata,
        )
    if graph == "decoder":
        # the expanded prior is zero beyond each item's frames, as length regulation leaves it
        beyond_frames = Sampler("uniform", masked_by="output_mask")
        return ExportSpec(
            family=FAMILY,
            graph="decoder",
            description=f"{name} VITS prior sampling + flow (reverse) + HiFi-GAN: expanded prior -> {rate} Hz waveform",
            build_module=build,
            inputs=(
                TensorSpec("prior_means", ("batch", channels, "frames"), convention="prior mean expanded to frames (talkrt.models.vits.length.regulate_lengths), 0 beyond each item", value_range=(-1.0, 1.0), sampler=beyond_frames),
                TensorSpec("prior_log_variances", ("batch", channels, "frames"), convention="prior log standard deviation expanded to frames, 0 beyond each item", value_range=(-1.0, 0.5), sampler=beyond_frames),
                TensorSpec("latent_noise", ("batch", channels, "frames"), convention="standard normal noise, scaled by exp(prior_log_variances) * noise_scale inside", value_range=(-3.0, 3.0), sampler=NORMAL),
                noise_scale,
                TensorSpec("output_mask", ("batch", 1, "frames"), convention="1 on each item's frames, 0 beyond", sampler=mask_over("frames")),
                *speaker,
            ),
            outputs=(TensorSpec("waveform", ("batch", 1, "samples"), convention=f"mono waveform at {rate} Hz in [-1, 1], {hop} samples per frame; trim each item to frames * {hop}", value_range=(-1.0, 1.0)),),
            dims=(batch, frames),
            derived_dims={"samples": f"frames * {hop}"},
            opset=OPSET,
            exporter="legacy",
            exporter_reason=legacy_reason + "; weight norm is folded before export",
            tolerance=Tolerance(atol=2e-4, rtol=1e-3),
            validation_points=({"batch": 1, "frames": 1}, {"batch": 1, "frames": 7}, {"batch": 3, "frames": 123}),
            keep_fp32_ops=_KEEP_FP32_DECODER,
            keep_fp32_reason="exp of the prior's log-scale and the flow's sums; tanh of the waveform saturates late in FP16",
            gates=(Gate("waveform", "snr", 30.0, description="waveform SNR against FP32 in dB (TTS waveform gate)"),),
            metadata=metadata,
        )
    if graph == "full":
        inputs = (
            ids,
            lengths,
            *((duration_noise,) if stochastic else ()),
            TensorSpec("latent_noise", ("batch", channels, "noise_frames"), convention="standard normal prior noise; frame f uses column f, frames beyond the columns given get none (give about 20 per token)", value_range=(-3.0, 3.0), sampler=NORMAL),
            noise_scale,
            *((noise_scale_w,) if stochastic else ()),
            length_scale,
            *speaker,
        )
        return ExportSpec(
            family=FAMILY,
            graph="full",
            description=f"{name} VITS in one graph for ONNX Runtime: tokens -> waveform (data-dependent length)",
            build_module=build,
            inputs=inputs,
            outputs=(
                TensorSpec("waveform", ("batch", 1, "samples"), convention=f"mono waveform at {rate} Hz, padded to the longest item; trim each to sample_lengths", value_range=(-1.0, 1.0)),
                TensorSpec("sample_lengths", ("batch",), "int64", f"valid samples per item (frames * {hop})"),
            ),
            dims=(batch, tokens, noise_frames),
            derived_dims={"samples": f"data-dependent: {hop} * max over items of the summed durations"},
            opset=OPSET,
            exporter="legacy",
            exporter_reason=legacy_reason + "; the output length is data-dependent (for ONNX Runtime: TensorRT would need an output allocator)",
            tolerance=Tolerance(atol=2e-4, rtol=1e-3),
            validation_points=({"batch": 1, "tokens": 2, "noise_frames": 100}, {"batch": 2, "tokens": 37, "noise_frames": 900}),
            keep_fp32_ops=_KEEP_FP32_ENCODER + _KEEP_FP32_DECODER,
            keep_fp32_reason="as the encoder and decoder graphs",
            gates=(Gate("waveform", "snr", 30.0, description="waveform SNR against FP32 in dB"),),
            metadata=metadata,
        )
    raise TalkrtError(f"VITS has graphs {', '.join(GRAPHS)}, not {graph!r}")


# ----------------------------------------------------------------------------- export


def export_vits(
    out_dir: str | os.PathLike,
    preset: str | None = None,
    checkpoint: str | None = None,
    trust: bool = False,
    seed: int = 0,
    *,
    graphs: tuple[str, ...] = GRAPHS,
    validate: bool = True,
    step=lambda _: None,
) -> dict:
    """Export the VITS graphs into ``out_dir`` (validated against PyTorch) and write ``manifest.json``.

    Returns the manifest: file names per graph, sample_rate, hop, add_blank,
    num_speakers, vocab (when known), channels, the decoder's receptive field and
    where the weights came from (preset + seed, or checkpoint).
    """
    from talkrt.export.onnx import export_onnx
    from talkrt.fileio import write_text_atomic
    from talkrt.models.vits.model import build_random_vits, load_vits, vits_info

    unknown = set(graphs) - set(GRAPHS)
    if unknown:
        raise TalkrtError(f"VITS has graphs {', '.join(GRAPHS)}, not {', '.join(sorted(unknown))}")
    if checkpoint is not None and preset is not None:
        raise TalkrtError("give a VITS preset or a checkpoint, not both")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        preset = preset or "mms-tts-eng"
        model = build_random_vits(preset, seed=seed)
    else:
        model = load_vits(checkpoint, trust=trust)[0]
    info = vits_info(model)
    specs = vits_specs_for_model(model, preset, None if checkpoint is None else str(checkpoint))
    files = {}
    for graph in graphs:
        spec = specs[graph]
        module = build_vits_graph(graph=graph, model=model)
        path = out_dir / f"{graph}.onnx"
        export_onnx(spec, module, path, validate=validate, step=step)
        files[graph] = path.name
    manifest = {
        "family": FAMILY,
        "files": files,
        "sample_rate": info.sample_rate,
        "hop": info.hop_length,
        "add_blank": info.add_blank,
        "num_speakers": info.num_speakers,
        "channels": int(model.config.flow_size),
        "stochastic_duration_predictor": bool(model.config.use_stochastic_duration_prediction),
        "decoder_receptive_field_frames": decoder_receptive_field(model.config),
        "vocab": info.vocab,
        "vocab_size": int(model.config.vocab_size),
        "phonemes": info.phonemes,
        "source": info.source,
        "preset": preset,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "seed": seed if checkpoint is None else None,
        "opset": OPSET,
    }
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
