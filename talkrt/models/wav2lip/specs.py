"""Wav2Lip's export spec: one graph, the 96x96 generator with a dynamic batch."""

from __future__ import annotations

from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance
from talkrt.models.wav2lip.model import FACE_SIZE, MEL_BINS, MEL_WINDOW


def build_wav2lip(checkpoint: str | None = None, trust: bool = False, seed: int = 0):
    """The eval-mode generator from an official checkpoint, or with random weights when ``checkpoint`` is None."""
    from talkrt.models.checkpoints import load_strict
    from talkrt.models.random_init import random_model
    from talkrt.models.wav2lip.model import Wav2Lip

    if checkpoint is None:
        return random_model(Wav2Lip, seed)
    return load_strict(Wav2Lip(), checkpoint, "wav2lip", trust)


def wav2lip_spec() -> ExportSpec:
    return ExportSpec(
        family="wav2lip",
        graph="wav2lip",
        description="Wav2Lip generator: mel window + masked/reference face -> lower face, 96x96",
        build_module=build_wav2lip,
        inputs=(
            TensorSpec(
                "audio_sequences",
                ("batch", 1, MEL_BINS, MEL_WINDOW),
                convention=f"Wav2Lip mel window: {MEL_BINS} mel bins x {MEL_WINDOW} frames at 80 Hz (0.2 s), values in [-4, 4]",
                value_range=(-4.0, 4.0),
            ),
            TensorSpec(
                "face_sequences",
                ("batch", 6, FACE_SIZE, FACE_SIZE),
                convention="BGR in [0, 1]; channels 0-2 the face with rows 48: zeroed, 3-5 the unmasked reference face",
            ),
        ),
        outputs=(TensorSpec("generated_faces", ("batch", 3, FACE_SIZE, FACE_SIZE), convention="BGR in [0, 1]"),),
        # Real-time batches are small; 128 is the original inference batch.
        dims=(Dim("batch", 1, 8, 128),),
        opset=18,
        exporter="dynamo",
        exporter_reason="torch's default exporter; it folds every BatchNorm, including those after ConvTranspose that the legacy exporter keeps",
        tolerance=Tolerance(atol=1e-4, rtol=1e-3),
        validation_points=({"batch": 1}, {"batch": 5}),
        # Lip motion lives in the lower half of the crop: that is where FP16 must not lose detail.
        gates=(
            Gate("generated_faces", "psnr", 40.0, region=((None, None), (FACE_SIZE // 2, None), (None, None)), description="PSNR of the mouth region (rows 48:96) against FP32"),
            Gate("generated_faces", "psnr", 35.0, description="PSNR of the whole face against FP32"),
        ),
        metadata={"face_size": str(FACE_SIZE), "sample_rate": "16000", "feature": "wav2lip-mel-80hz", "fps": "any (windows from the alignment contract)"},
    )
