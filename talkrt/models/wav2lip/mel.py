"""The Wav2Lip mel spectrogram as a graph: (batch, samples) waveform -> (batch, 80, mel_frames).

Exporting the front-end lets a pipeline keep audio features on the engine side
too. The graph has no weights, only two constants: the STFT as windowed cos/sin
Conv kernels and the mel filterbank (talkrt.runtime.audio.Wav2LipMel, which stays
beside `wav2lip_mel` and shares its real-valued STFT path).
"""

from __future__ import annotations

from talkrt.errors import TalkrtError
from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance
from talkrt.runtime.audio import WAV2LIP_MEL_CONFIG

_CONFIG = WAV2LIP_MEL_CONFIG
# torch's reflect padding needs more samples than the pad (n_fft // 2); the exported
# Pad node keeps that limit, so 401 samples is the shortest input the graph takes.
MIN_SAMPLES = _CONFIG.n_fft // 2 + 1


def build_mel(checkpoint: str | None = None, trust: bool = False, seed: int = 0):
    """The eval-mode `Wav2LipMel`; it has no weights, so there is nothing to load or to seed."""
    from talkrt.runtime.audio import Wav2LipMel

    if checkpoint is not None:
        raise TalkrtError(f"the Wav2Lip mel spectrogram has no weights; export it without a checkpoint (got {checkpoint})")
    return Wav2LipMel(_CONFIG).eval()


def mel_spec() -> ExportSpec:
    rate, hop = _CONFIG.sample_rate, _CONFIG.hop_length
    return ExportSpec(
        family="mel",
        graph="wav2lip-mel",
        description=f"Wav2Lip log-mel spectrogram: {_CONFIG.n_mels} mel bins at {rate // hop} Hz from {rate} Hz audio",
        build_module=build_mel,
        inputs=(
            TensorSpec(
                "waveform",
                ("batch", "samples"),
                convention=f"mono waveform at {rate} Hz in [-1, 1], every item the same length, at least {MIN_SAMPLES} samples",
                value_range=(-1.0, 1.0),
            ),
        ),
        outputs=(
            TensorSpec(
                "mel",
                ("batch", _CONFIG.n_mels, "mel_frames"),
                convention=(
                    f"Wav2Lip mel: preemphasis {_CONFIG.preemphasis}, centred reflect-padded STFT (n_fft {_CONFIG.n_fft}, hop {hop}, "
                    f"Hann), Slaney mel {_CONFIG.fmin:g}-{_CONFIG.fmax:g} Hz, dB scaled into [-4, 4]; silence is -4"
                ),
                value_range=(-_CONFIG.max_abs_value, _CONFIG.max_abs_value),
            ),
        ),
        # The same ranges as the speech encoders: 0.2 s to 30 s per call, opt 2 s.
        dims=(Dim("batch", 1, 1, 4, trace=2), Dim("samples", 3200, 32000, 480000, trace=32000)),
        derived_dims={"mel_frames": f"floor(samples / {hop}) + 1"},
        opset=18,
        exporter="dynamo",
        exporter_reason=(
            "torch's default exporter; the module computes the STFT as a strided Conv with windowed cos/sin kernels "
            "and |X| as ReduceL2, since ONNX Runtime's STFT op misses PyTorch by about 2.5e-3 on this 800-point transform"
        ),
        # Values lie in [-4, 4]; the Conv-based STFT agrees with torch.stft and librosa to about 1e-5.
        tolerance=Tolerance(atol=1e-4, rtol=0.0),
        # The shortest input the reflect pad takes, and an odd batch and length off the hop grid.
        validation_points=({"batch": 1, "samples": MIN_SAMPLES}, {"batch": 3, "samples": 12345}),
        keep_fp32_ops=("Conv", "ReduceL2", "Log", "MatMul"),
        gates=(Gate("mel", "max_abs", 0.05, description="largest mel difference from FP32 (values span [-4, 4])"),),
        keep_fp32_reason=(
            "the whole graph is a handful of cheap ops: FP16 would cost the STFT (Conv) and the magnitude (ReduceL2) "
            "their dynamic range and turn the 1e-5 amplitude floor and the log into visible steps in the [-4, 4] output"
        ),
        metadata={
            "sample_rate": str(rate),
            "feature_rate": str(rate // hop),
            "hop": str(hop),
            "n_fft": str(_CONFIG.n_fft),
            "n_mels": str(_CONFIG.n_mels),
            "min_samples": str(MIN_SAMPLES),
            "alignment": "wav2lip_mel",
        },
    )
