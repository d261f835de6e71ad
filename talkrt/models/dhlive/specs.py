"""DH_live export specs: the renderer as two graphs, the audio LSTM per video frame.

``dhlive-render`` (``DINet_five_Ref(6, 30)``, 256x256 crops):

* ``reference`` graph, once per avatar: ``reference`` (B, 30, 256, 256) ->
  ``ref_in_feature`` and ``ref_trans_feature`` (B, 256, 64, 64 each), the two
  tensors the original ``ref_input`` caches on the module.
* ``generator`` graph, per frame: ``source`` (B, 6, 256, 256) plus the two cached
  features -> ``image`` (B, 3, 256, 256). Running the two graphs in sequence is
  the original ``forward``. The runtime binds the same cached features for every
  frame of an avatar (tile them when B > 1).

AdaAT's 5-D grid_sample is the exact 4-D rewrite (``talkrt.models.dinet.adaat``): one
4-D ``GridSample`` node, which exists from opset 16 and changes meaning at opset
20 (N-D, renamed modes), so the renderer stays at opset 17. GridSample is kept
in FP32 in FP16 builds: its sampling coordinates are in [-1, 1] over 64 pixels,
and FP16 coordinates move samples by a sizeable fraction of a feature pixel.

``dhlive-audio`` (``Audio2Feature``): one 25 fps video frame per call, two 80-bin
fbank frames in, 6 PCA coefficients out, the 2-layer LSTM state (h, c) as inputs
and outputs. T is fixed to one video frame: the original reshapes with
``int(T / 2)``, which a trace bakes in, and streaming calls one frame at a time
anyway (``AudioModel.interface_frame``).
"""

from __future__ import annotations

from talkrt.errors import TalkrtError
from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance
from talkrt.models.dhlive.model import (
    FBANK_BINS,
    FBANK_FRAMES_PER_VIDEO_FRAME,
    FEATURE_SIZE,
    FPS,
    IMAGE_SIZE,
    LSTM_HIDDEN,
    LSTM_LAYERS,
    N_COEFFS,
    REF_CHANNELS,
    REF_FEATURE_CHANNELS,
    SAMPLE_RATE,
    SOURCE_CHANNELS,
)

RENDER_FAMILY = "dhlive-render"
AUDIO_FAMILY = "dhlive-audio"
RENDER_GRAPHS = ("generator", "reference")
RENDER_OPSET = 17  # GridSample is 4-D only (and named as exported) in opsets 16-19
AUDIO_OPSET = 17

# The mouth region of the 256x256 crop, (row start, row stop), (col start, col stop).
# DH_live's source image is the face crop with a polygon filled black: the lower
# face oval (jaw, INDEX_FACE_OVAL[3:-3]) closed by the nose edge (INDEX_NOSE_EDGE).
# crop_face centres a square of 1.2 x the lower-face size between the nose bridge
# and the chin, so that polygon spans roughly rows 96 (below the nose) to 240
# (chin) and columns 32 to 224 (jaw corner to jaw corner) for a frontal face. The
# generator synthesises those pixels; the rest is mostly copied from the source.
MOUTH_ROWS = (96, 240)
MOUTH_COLS = (32, 224)

_BGR = "BGR in [0, 1] (cv2 channel order, /255)"


def build_dhlive_render(checkpoint: str | None = None, trust: bool = False, seed: int = 0, *, graph: str = "generator"):
    """The eval-mode export module of one renderer graph (random weights when ``checkpoint`` is None)."""
    from talkrt.models.dhlive.model import DHLiveGenerator, DHLiveReferenceEncoder, DINetFiveRef, load_dhlive_render
    from talkrt.models.random_init import random_model

    model = random_model(DINetFiveRef, seed) if checkpoint is None else load_dhlive_render(checkpoint, trust)
    wrapper = DHLiveGenerator(model) if graph == "generator" else DHLiveReferenceEncoder(model)
    return wrapper.eval()


def build_dhlive_audio(checkpoint: str | None = None, trust: bool = False, seed: int = 0):
    """The eval-mode per-frame ``Audio2Feature`` (random weights when ``checkpoint`` is None)."""
    from talkrt.models.dhlive.model import Audio2Feature, Audio2FeatureFrame, load_dhlive_audio
    from talkrt.models.random_init import random_model

    model = random_model(Audio2Feature, seed) if checkpoint is None else load_dhlive_audio(checkpoint, trust)
    return Audio2FeatureFrame(model).eval()


def _feature(name: str, what: str) -> TensorSpec:
    return TensorSpec(name, ("batch", REF_FEATURE_CHANNELS, FEATURE_SIZE, FEATURE_SIZE), convention=what, value_range=(0.0, 2.0))


_REF_IN = "ref_in_conv(reference) (the original's ref_in_feature): from the reference graph, fixed per avatar"
_REF_TRANS = "appearance_conv_list[0](ref_in_feature) (the original's ref_trans_feature0): from the reference graph, fixed per avatar"


def render_spec(graph: str = "generator") -> ExportSpec:
    """One renderer graph: ``get_spec("dhlive-render", graph="reference")``."""
    from functools import partial

    if graph not in RENDER_GRAPHS:
        raise TalkrtError(f"dhlive-render has graphs {', '.join(RENDER_GRAPHS)}, not {graph!r}")
    metadata = {
        "image_size": str(IMAGE_SIZE),
        "n_ref": "5",
        "mouth_region": f"rows {MOUTH_ROWS[0]}:{MOUTH_ROWS[1]}, cols {MOUTH_COLS[0]}:{MOUTH_COLS[1]}",
        "source": "kleinlee/DH_live@642192e talkingface/models/DINet.py DINet_five_Ref(6, 30), checkpoint/render.pth",
    }
    build = partial(build_dhlive_render, graph=graph)
    exporter_reason = (
        "TorchScript exporter at opset 17: AdaAT's exact 4-D rewrite exports as one GridSample node, "
        "BatchNorm folds into the convolutions, and export takes a few seconds"
    )
    if graph == "reference":
        return ExportSpec(
            family=RENDER_FAMILY,
            graph="reference",
            description="DH_live renderer reference encoder, once per avatar: 5 references -> cached feature maps",
            build_module=build,
            inputs=(
                TensorSpec(
                    "reference",
                    ("batch", REF_CHANNELS, IMAGE_SIZE, IMAGE_SIZE),
                    convention=f"5 x (face crop, its landmark drawing), 6 channels each, {_BGR}",
                ),
            ),
            outputs=(_feature("ref_in_feature", _REF_IN), _feature("ref_trans_feature", _REF_TRANS)),
            dims=(Dim("batch", 1, 1, 4, trace=2),),
            opset=RENDER_OPSET,
            exporter="legacy",
            exporter_reason=exporter_reason,
            tolerance=Tolerance(atol=1e-4, rtol=1e-3),
            validation_points=({"batch": 1}, {"batch": 3}),
            gates=(
                Gate("ref_in_feature", "snr", 30.0, description="SNR of ref_in_feature against FP32 in dB"),
                Gate("ref_trans_feature", "snr", 30.0, description="SNR of ref_trans_feature against FP32 in dB"),
            ),
            metadata=metadata,
        )
    return ExportSpec(
        family=RENDER_FAMILY,
        graph="generator",
        description="DH_live renderer per frame: masked face + mouth prompt + cached reference features -> face crop, 256x256",
        build_module=build,
        inputs=(
            TensorSpec(
                "source",
                ("batch", SOURCE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE),
                convention=f"{_BGR}; channels 0-2 the face crop with the lower face (nose edge to jaw) filled black, "
                "3-5 the prompt: the PCA mouth image warped onto the face plus nose and eye lines",
            ),
            _feature("ref_in_feature", _REF_IN),
            _feature("ref_trans_feature", _REF_TRANS),
        ),
        outputs=(TensorSpec("image", ("batch", 3, IMAGE_SIZE, IMAGE_SIZE), convention=f"{_BGR}; the original blends its 20-pixel border with the target crop"),),
        dims=(Dim("batch", 1, 1, 8, trace=2),),
        opset=RENDER_OPSET,
        exporter="legacy",
        exporter_reason=exporter_reason,
        tolerance=Tolerance(atol=1e-4, rtol=1e-3),
        validation_points=({"batch": 1}, {"batch": 3}),
        keep_fp32_ops=("GridSample",),
        keep_fp32_reason="AdaAT's sampling grid: FP16 coordinates in [-1, 1] over a 64-pixel feature map move samples by up to a tenth of a pixel",
        gates=(
            Gate(
                "image",
                "psnr",
                40.0,
                region=((None, None), MOUTH_ROWS, MOUTH_COLS),
                description=f"PSNR against FP32 of the mouth region (rows {MOUTH_ROWS[0]}:{MOUTH_ROWS[1]}, cols {MOUTH_COLS[0]}:{MOUTH_COLS[1]}: the lower face the source leaves black)",
            ),
            Gate("image", "psnr", 35.0, description="PSNR of the whole 256x256 crop against FP32"),
        ),
        metadata=metadata,
    )


def audio_spec() -> ExportSpec:
    """The per-frame ``Audio2Feature`` with the LSTM state as inputs and outputs: ``get_spec("dhlive-audio")``."""
    state = (LSTM_LAYERS, "batch", LSTM_HIDDEN)
    return ExportSpec(
        family=AUDIO_FAMILY,
        graph=AUDIO_FAMILY,
        description="DH_live Audio2Feature, one 25 fps video frame: 2 fbank frames + LSTM state -> 6 PCA mouth coefficients + next state",
        build_module=build_dhlive_audio,
        inputs=(
            TensorSpec(
                "fbank",
                ("batch", FBANK_FRAMES_PER_VIDEO_FRAME, FBANK_BINS),
                convention="kaldi fbank, 80 bins, 50 ms window, 20 ms shift, snip_edges=False, dither 0, on int16/32768 audio at 16 kHz; "
                "frames 2t and 2t+1 for video frame t",
                value_range=(-15.0, 5.0),
            ),
            TensorSpec("h0", state, convention="LSTM hidden state (layers, batch, 192); zeros at the start of an utterance", value_range=(-1.0, 1.0)),
            TensorSpec("c0", state, convention="LSTM cell state (layers, batch, 192); zeros at the start of an utterance", value_range=(-2.0, 2.0)),
        ),
        outputs=(
            TensorSpec("coefficients", ("batch", N_COEFFS), convention="PCA coefficients: mouth image = coefficients . components[:6] + mean, 15x30x3"),
            TensorSpec("hn", state, convention="next LSTM hidden state: feed back as h0"),
            TensorSpec("cn", state, convention="next LSTM cell state: feed back as c0"),
        ),
        dims=(Dim("batch", 1, 1, 4, trace=2),),
        opset=AUDIO_OPSET,
        exporter="legacy",
        exporter_reason="TorchScript exporter at opset 17: nn.LSTM becomes one ONNX LSTM node with the state as graph inputs and outputs",
        tolerance=Tolerance(atol=1e-5, rtol=1e-4),
        validation_points=({"batch": 1}, {"batch": 3}),
        keep_fp32_ops=("LSTM",),
        keep_fp32_reason="the recurrent state is fed back every frame, so FP16 rounding would accumulate over an utterance",
        gates=(
            Gate("coefficients", "cosine", 0.999, description="cosine similarity to FP32 of each frame's 6 coefficients (minimum over the batch)"),
            Gate("hn", "snr", 30.0, description="SNR of the next hidden state against FP32 in dB"),
        ),
        metadata={
            "sample_rate": str(SAMPLE_RATE),
            "fps": str(FPS),
            "feature": "kaldi-fbank-80-50ms-20ms",
            "fbank_frames_per_video_frame": str(FBANK_FRAMES_PER_VIDEO_FRAME),
            "drop_leading_frames": "4 (interface_wav drops the first 4 outputs of an utterance)",
            "source": "kleinlee/DH_live@642192e talkingface/models/audio2bs_lstm.py Audio2Feature, checkpoint/audio.pkl",
        },
    )
