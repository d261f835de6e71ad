"""DINet export specs: the 416x320 generator and DINet_optimized's feature mapper."""

from __future__ import annotations

from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance
from talkrt.models.dinet.asr import SOURCE_FEATURE
from talkrt.models.dinet.model import AUDIO_DIM, AUDIO_PAD, AUDIO_WINDOW, FACE_HEIGHT, FACE_WIDTH, FEATURE_RATE, MOUTH_COLS, MOUTH_ROWS, REFERENCE_FRAMES

EXPORTER = "dynamo"
OPSET = 18


def build_dinet(checkpoint: str | None = None, trust: bool = False, seed: int = 0):
    """The eval-mode generator from ``clip_training_DINet_256mouth.pth``, or with random weights when ``checkpoint`` is None."""
    from talkrt.models.dinet.model import load_dinet, random_dinet

    return random_dinet(seed) if checkpoint is None else load_dinet(checkpoint, trust)


def build_mapper(checkpoint: str | None = None, trust: bool = False, seed: int = 0):
    """DINet_optimized's ``wav2vecDS.pt`` mapper, or with random weights when ``checkpoint`` is None."""
    from talkrt.models.dinet.model import load_mapper, random_mapper

    return random_mapper(seed) if checkpoint is None else load_mapper(checkpoint, trust)


_MOUTH = f"rows {MOUTH_ROWS[0]}:{MOUTH_ROWS[1]}, cols {MOUTH_COLS[0]}:{MOUTH_COLS[1]}"


def dinet_spec() -> ExportSpec:
    face = ("batch", 3, FACE_HEIGHT, FACE_WIDTH)
    return ExportSpec(
        family="dinet",
        graph="dinet",
        description=f"DINet generator (clip_training_DINet_256mouth): masked face + {REFERENCE_FRAMES} references + DeepSpeech window -> face, {FACE_HEIGHT}x{FACE_WIDTH}",
        build_module=build_dinet,
        inputs=(
            TensorSpec("source_image", face, convention=f"RGB in [0, 1], face crop {FACE_HEIGHT}x{FACE_WIDTH} (HxW) with the mouth region ({_MOUTH}) set to 0"),
            TensorSpec(
                "reference_images",
                ("batch", 3 * REFERENCE_FRAMES, FACE_HEIGHT, FACE_WIDTH),
                convention=f"{REFERENCE_FRAMES} unmasked reference crops, RGB in [0, 1], concatenated on channels; fixed per video",
            ),
            TensorSpec(
                "audio_window",
                ("batch", AUDIO_DIM, AUDIO_WINDOW),
                convention=f"{FEATURE_RATE} Hz DeepSpeech logits ({AUDIO_DIM} dims), frames t-{AUDIO_PAD}..t+{AUDIO_PAD} of an edge-padded sequence, channels first",
                value_range=(-3.0, 3.0),
            ),
        ),
        outputs=(TensorSpec("generated_face", face, convention=f"RGB in [0, 1], {FACE_HEIGHT}x{FACE_WIDTH}"),),
        # The released size is heavy (~19 M parameters at 416x320): real-time batches are small.
        dims=(Dim("batch", 1, 1, 8, trace=2),),
        opset=OPSET,
        exporter=EXPORTER,
        exporter_reason=(
            "torch's default exporter folds every BatchNorm and exports AdaAT's single 4-D grid_sample as GridSample "
            "with mode 'bilinear' at opset 18; opset 20 would rename it 'linear', which older TensorRT parsers silently "
            "read as nearest (tooling 3.1). The original 5-D grid_sample is rewritten exactly (models.adaat), so no N-D GridSample is needed"
        ),
        tolerance=Tolerance(atol=1e-4, rtol=1e-3),
        # traced at 2; 1 and 3 catch a batch baked into a reshape
        validation_points=({"batch": 1}, {"batch": 3}),
        keep_fp32_ops=("GridSample",),
        keep_fp32_reason="AdaAT's warp coordinates in [-1, 1] lose sub-pixel precision in FP16 (kept until measured)",
        gates=(
            Gate(
                "generated_face",
                "psnr",
                40.0,
                region=((None, None), MOUTH_ROWS, MOUTH_COLS),
                description=f"PSNR of the mouth region ({_MOUTH}) against FP32",
            ),
            Gate("generated_face", "psnr", 35.0, description="PSNR of the whole face against FP32"),
        ),
        metadata={
            "face_size": f"{FACE_HEIGHT}x{FACE_WIDTH}",
            "mouth_region": _MOUTH,
            "reference_frames": str(REFERENCE_FRAMES),
            "color": "RGB",
            "feature": "deepspeech-25hz-29",
            "feature_rate": str(FEATURE_RATE),
            "fps": "25 (one output frame per feature frame)",
            "alignment": f"deepspeech: edge-pad the feature sequence by {AUDIO_PAD}, window of {AUDIO_WINDOW} centred on the frame",
        },
    )


def mapper_spec() -> ExportSpec:
    return ExportSpec(
        family="dinet-mapper",
        graph="dinet-mapper",
        description="DINet_optimized feature mapper: HuBERT-ASR emissions (25 Hz, 29 classes) -> DeepSpeech-like features",
        build_module=build_mapper,
        inputs=(
            TensorSpec(
                "emissions",
                ("batch", "frames", AUDIO_DIM),
                convention=f"torchaudio HUBERT_ASR_LARGE CTC emissions decimated to {FEATURE_RATE} Hz (emissions[::2])",
                value_range=(-10.0, 10.0),
            ),
        ),
        outputs=(TensorSpec("features", ("batch", "frames", AUDIO_DIM), convention=f"DeepSpeech-like logits, {FEATURE_RATE} Hz"),),
        dims=(Dim("batch", 1, 1, 4, trace=2), Dim("frames", 1, 250, 3000, trace=100)),
        opset=OPSET,
        exporter="dynamo",
        exporter_reason="torch's default exporter; four Linear layers, nothing to work around",
        tolerance=Tolerance(atol=1e-4, rtol=1e-3),
        validation_points=({"batch": 1, "frames": 1}, {"batch": 3, "frames": 37}),
        gates=(Gate("features", "cosine", 0.999, description="cosine similarity of every feature frame to FP32 (minimum over frames)"),),
        metadata={"feature": "deepspeech-25hz-29", "feature_rate": str(FEATURE_RATE), "source_feature": SOURCE_FEATURE},
    )
