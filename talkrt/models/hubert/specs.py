"""HuBERT / Wav2Vec2 export specs: (batch, samples) waveform -> (batch, frames, hidden) features,
and HuBERT CTC (hubert-asr): waveform -> (batch, frames, 29) emissions in torchaudio's label order."""

from __future__ import annotations

from talkrt.fileio import read_json_object
from functools import partial
from pathlib import Path

from talkrt.errors import TalkrtError
from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance
from talkrt.models.hubert.model import CTC_BLANK, CTC_LABELS, HOP, NORMALIZE_EPS, ENCODER_PRESETS, RECEPTIVE_FIELD, SAMPLE_RATE, EncoderPreset

# FP16 overflows in these: LayerNorm / InstanceNorm statistics over long sequences and
# the variance of the utterance normalisation.
_KEEP_FP32 = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "ReduceMean", "Pow", "Sqrt", "Softmax")


def _checkpoint_facts(checkpoint: str | None, preset: EncoderPreset) -> tuple[int, int, bool]:
    """(hidden size, layers, do_normalize): from the checkpoint directory when given, else the preset."""
    if checkpoint is None:
        return preset.hidden_size, preset.num_layers, preset.do_normalize
    from talkrt.models.hubert.model import read_do_normalize

    directory = Path(checkpoint)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise TalkrtError(f"{directory} is not a transformers checkpoint directory (no config.json)")
    config = read_json_object(config_path)
    do_normalize = read_do_normalize(directory)
    return config.get("hidden_size", 768), config.get("num_hidden_layers", 12), preset.do_normalize if do_normalize is None else do_normalize


def _waveform_input(normalize: bool) -> TensorSpec:
    norm_text = (
        f"normalised per utterance inside the graph: (x - mean) / sqrt(var + {NORMALIZE_EPS:g})"
        if normalize
        else "used as given: the graph does not normalise (the checkpoint's preprocessor has do_normalize false)"
    )
    return TensorSpec(
        "input_values",
        ("batch", "samples"),
        convention=f"mono waveform at {SAMPLE_RATE} Hz in [-1, 1], every item the same length; {norm_text}",
        value_range=(-1.0, 1.0),
    )


# What every waveform -> frames graph (encoder or CTC) shares: dims, exporter, tolerance, validation, FP16 plan.
_WAVEFORM_GRAPH = dict(
    # 0.2 s to 30 s per call; opt 2 s; batch 1 for streaming, up to 4 offline.
    dims=(Dim("batch", 1, 1, 4, trace=2), Dim("samples", 3200, 32000, 480000, trace=32000)),
    derived_dims={"frames": f"floor((samples - {RECEPTIVE_FIELD}) / {HOP}) + 1"},
    opset=18,
    exporter="dynamo",
    exporter_reason="torch's default exporter: LayerNorm and GroupNorm stay single nodes, and the weight norm is folded before export",
    tolerance=Tolerance(atol=2e-4, rtol=1e-3),
    # 400 samples is the shortest input with one frame; 12345 is odd and not a multiple of the hop.
    validation_points=({"batch": 1, "samples": RECEPTIVE_FIELD}, {"batch": 3, "samples": 12345}),
    keep_fp32_ops=_KEEP_FP32,
    keep_fp32_reason="normalisation statistics and softmax overflow or lose precision in FP16",
)


def build_encoder(
    checkpoint: str | None = None,
    trust: bool = False,
    seed: int = 0,
    *,
    preset: EncoderPreset,
    layer: int | None,
    normalize: bool,
):
    from talkrt.models.hubert.model import SpeechEncoder, build_random, load_pretrained

    model = build_random(preset, seed) if checkpoint is None else load_pretrained(checkpoint, preset.architecture, trust)
    return SpeechEncoder(model, layer, normalize)


def encoder_spec(
    architecture: str = "hubert",
    preset: str | None = None,
    layer: int | None = None,
    normalize: bool | None = None,
    checkpoint: str | None = None,
) -> ExportSpec:
    """The spec for one encoder; ``normalize`` None follows the checkpoint's preprocessor config or the preset."""
    preset_name = preset or ("chinese-hubert-base" if architecture == "hubert" else "wav2vec2-base-960h")
    if preset_name not in ENCODER_PRESETS:
        raise TalkrtError(f"unknown preset {preset_name!r}; known: {', '.join(ENCODER_PRESETS)}")
    chosen = ENCODER_PRESETS[preset_name]
    if chosen.architecture != architecture:
        raise TalkrtError(f"preset {preset_name} is a {chosen.architecture} model; use `talkrt export {chosen.architecture}`")
    hidden, layers, default_normalize = _checkpoint_facts(checkpoint, chosen)
    normalize = default_normalize if normalize is None else normalize
    layer = layers if layer is None else layer
    if not 0 <= layer <= layers:
        raise TalkrtError(f"--layer {layer} does not exist: {preset_name} has layers 0..{layers} (0 = before the first transformer layer)")
    return ExportSpec(
        family=architecture,
        graph="encoder",
        description=f"{preset_name} speech encoder, hidden layer {layer} of {layers}",
        build_module=partial(build_encoder, preset=chosen, layer=layer, normalize=normalize),
        inputs=(_waveform_input(normalize),),
        outputs=(
            TensorSpec("features", ("batch", "frames", hidden), convention=f"hidden layer {layer} of {layers}, {SAMPLE_RATE // HOP} frames per second"),
        ),
        **_WAVEFORM_GRAPH,
        gates=(Gate("features", "cosine", 0.995, description="cosine similarity of every feature frame to FP32 (minimum over frames)"),),
        metadata={
            "preset": preset_name,
            "layer": str(layer),
            "num_layers": str(layers),
            "hidden_size": str(hidden),
            "normalize": "inside graph" if normalize else "none",
            "sample_rate": str(SAMPLE_RATE),
            "feature_rate": str(SAMPLE_RATE // HOP),
            "hop": str(HOP),
            "receptive_field": str(RECEPTIVE_FIELD),
            "alignment": "hubert (talkrt.models.hubert.alignment.HUBERT): 2 feature frames per 25 fps video frame",
        },
    )


hubert_spec = partial(encoder_spec, "hubert")
wav2vec2_spec = partial(encoder_spec, "wav2vec2")


ASR_PRESET = "hubert-large-ls960-ft"


def build_recognizer(checkpoint: str | None = None, trust: bool = False, seed: int = 0, *, preset: EncoderPreset, normalize: bool):
    """SpeechRecognizer over a HubertForCTC: from a checkpoint directory (strict, head included) or the preset with random weights."""
    from talkrt.models.hubert.model import SpeechRecognizer, build_random, ctc_label_index, load_pretrained_ctc, read_vocab

    if checkpoint is None:
        model, index = build_random(preset, seed, ctc=True), ctc_label_index(preset.vocab_size, source=f"preset {preset.name}")
    else:
        model = load_pretrained_ctc(checkpoint, preset.architecture, trust)
        index = ctc_label_index(model.config.vocab_size, read_vocab(checkpoint), source=str(checkpoint))
    return SpeechRecognizer(model, index, normalize)


def asr_spec(preset: str | None = None, normalize: bool | None = None, checkpoint: str | None = None) -> ExportSpec:
    """HuBERT CTC (hubert-asr): waveform -> 50 Hz emissions over torchaudio HUBERT_ASR_LARGE's 29 labels.

    ``normalize`` None follows the checkpoint's preprocessor config, else the preset (True).
    """
    from talkrt.models.hubert.model import ctc_label_index, read_vocab

    preset_name = preset or ASR_PRESET
    asr_presets = [name for name, p in ENCODER_PRESETS.items() if p.vocab_size is not None and p.architecture == "hubert"]
    if preset_name not in asr_presets:
        known = "unknown preset" if preset_name not in ENCODER_PRESETS else "preset"
        raise TalkrtError(f"{known} {preset_name!r} has no HuBERT CTC head; hubert-asr presets: {', '.join(asr_presets)}")
    chosen = ENCODER_PRESETS[preset_name]
    hidden, layers, default_normalize = _checkpoint_facts(checkpoint, chosen)
    normalize = default_normalize if normalize is None else normalize
    if checkpoint is None:
        index = ctc_label_index(chosen.vocab_size, source=f"preset {preset_name}")
        source = f"{preset_name} (preset)"
    else:
        directory = Path(checkpoint)
        config = read_json_object(directory / "config.json")  # _checkpoint_facts checked it is there
        if config.get("model_type", "hubert") != "hubert":
            raise TalkrtError(f"{directory} holds a {config['model_type']} model, not hubert")
        index = ctc_label_index(config.get("vocab_size", 32), read_vocab(directory), source=str(directory))
        source = directory.resolve().name
    labels = "".join(CTC_LABELS)
    rate = SAMPLE_RATE // HOP
    return ExportSpec(
        family="hubert-asr",
        graph="hubert-asr",
        description=f"{preset_name} CTC speech recognizer: {len(CTC_LABELS)} emissions per frame in torchaudio HUBERT_ASR_LARGE order",
        build_module=partial(build_recognizer, preset=chosen, normalize=normalize),
        inputs=(_waveform_input(normalize),),
        outputs=(
            TensorSpec(
                "emissions",
                ("batch", "frames", len(CTC_LABELS)),
                convention=(
                    f"CTC logits (no log-softmax), {rate} frames per second, labels in torchaudio HUBERT_ASR_LARGE order "
                    f"{labels} with '{CTC_LABELS[CTC_BLANK]}' the blank at {CTC_BLANK}; a 25 Hz consumer takes emissions[::2]"
                ),
            ),
        ),
        **_WAVEFORM_GRAPH,
        gates=(Gate("emissions", "cosine", 0.995, description="cosine similarity of every emission frame to FP32 (minimum over frames)"),),
        metadata={
            "preset": preset_name,
            "source": source,
            "num_layers": str(layers),
            "hidden_size": str(hidden),
            "normalize": "inside graph" if normalize else "none",
            "sample_rate": str(SAMPLE_RATE),
            "feature_rate": str(rate),
            "hop": str(HOP),
            "receptive_field": str(RECEPTIVE_FIELD),
            "labels": labels,
            "blank": str(CTC_BLANK),
            "vocab_index": ",".join(map(str, index)),
            "feature": "hubert-asr-large-50hz-29",
            "alignment": "emissions[::2] gives 25 Hz, one frame per video frame at 25 fps",
        },
    )
