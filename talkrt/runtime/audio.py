"""Audio front-end in pure torch: polyphase resampling and the Wav2Lip mel spectrogram.

Both run on whatever device their input lives on, so a GPU pipeline never sends
audio back to the host. Filters (mel filterbank, anti-aliasing FIR) are designed
once in float64 numpy and cached per device and dtype. Only torch and numpy are
imported here: librosa and scipy are the references the tests compare against,
never runtime dependencies.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MelConfig",
    "WAV2LIP_MEL_CONFIG",
    "mel_filterbank",
    "wav2lip_mel",
    "Wav2LipMel",
    "mel_num_frames",
    "resample",
    "resampled_length",
    "wav_bytes",
    "wav_data_url",
    "to_16k",
]


def _device_cache(maxsize: int):
    """functools.lru_cache for tensor factories, bypassed while torch.export or
    torch.compile traces: a tensor made during tracing is a fake tensor, and
    caching it would break every later eager call with the same key."""

    def decorate(factory):
        cached = functools.lru_cache(maxsize=maxsize)(factory)

        @functools.wraps(factory)
        def lookup(*args, **kwargs):
            if torch.compiler.is_compiling():
                return factory(*args, **kwargs)
            return cached(*args, **kwargs)

        lookup.cache_clear = cached.cache_clear
        lookup.cache_info = cached.cache_info
        return lookup

    return decorate


# --------------------------------------------------------------------------- mel


@dataclass(frozen=True)
class MelConfig:
    """Wav2Lip's `hparams.py` audio settings, written once."""

    sample_rate: int = 16000
    n_fft: int = 800
    win_length: int = 800
    hop_length: int = 200
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def amplitude_floor(self) -> float:
        # 1e-5: the amplitude of min_level_db, so digital silence stays finite.
        return 10.0 ** (self.min_level_db / 20.0)


WAV2LIP_MEL_CONFIG = MelConfig()


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    log_step = math.log(6.4) / 27.0
    linear = hz / f_sp
    logarithmic = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / log_step
    return np.where(hz >= min_log_hz, logarithmic, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    log_step = math.log(6.4) / 27.0
    linear = mel * f_sp
    logarithmic = min_log_hz * np.exp(log_step * (mel - min_log_mel))
    return np.where(mel >= min_log_mel, logarithmic, linear)


@functools.lru_cache(maxsize=8)
def _mel_filterbank_numpy(config: MelConfig) -> np.ndarray:
    """Triangular Slaney-scale filters with Slaney area normalisation, (n_mels, n_freqs) float64."""
    fft_freqs = np.linspace(0.0, config.sample_rate / 2.0, config.n_freqs)
    mel_edges = np.linspace(
        _hz_to_slaney_mel(config.fmin), _hz_to_slaney_mel(config.fmax), config.n_mels + 2
    )
    hz_edges = _slaney_mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    distance = hz_edges[:, None] - fft_freqs[None, :]
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Area normalisation: each triangle integrates to the same value over Hz.
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return weights


@_device_cache(maxsize=32)
def mel_filterbank(
    device: torch.device, dtype: torch.dtype, config: MelConfig = WAV2LIP_MEL_CONFIG
) -> torch.Tensor:
    """The (n_mels, n_freqs) filterbank on `device`, cached: it is built on the host once."""
    # Rounded to float32 first, as librosa returns it, so float64 runs see the same filters.
    weights = _mel_filterbank_numpy(config).astype(np.float32)
    return torch.from_numpy(weights).to(device=device, dtype=dtype)


@_device_cache(maxsize=32)
def _hann_window(device: torch.device, dtype: torch.dtype, length: int) -> torch.Tensor:
    # Periodic Hann: librosa's get_window("hann", n, fftbins=True).
    return torch.hann_window(length, periodic=True, dtype=dtype, device=device)


def mel_num_frames(num_samples: int, config: MelConfig = WAV2LIP_MEL_CONFIG) -> int:
    """Columns of a centred STFT: 1 + S // hop (80 per second for Wav2Lip)."""
    return 1 + num_samples // config.hop_length


def _preemphasis(wav: torch.Tensor, coefficient: float) -> torch.Tensor:
    """y[n] = x[n] - c*x[n-1] with a zero initial state (scipy lfilter([1, -c], [1])).

    Written as a concatenation, not an in-place slice update, so it exports as
    Slice/Sub/Concat instead of ScatterND.
    """
    return torch.cat((wav[..., :1], wav[..., 1:] - coefficient * wav[..., :-1]), dim=-1)


def _reflect_pad(wav: torch.Tensor, pad: int) -> torch.Tensor:
    """numpy-style reflect padding on the last axis, also for signals shorter than `pad`.

    torch's reflect mode needs pad < length; numpy (and so librosa) reflects
    repeatedly, which is the periodic extension with period 2*(S-1).
    """
    num_samples = wav.shape[-1]
    if num_samples > pad:
        return F.pad(wav.unsqueeze(-2), (pad, pad), mode="reflect").squeeze(-2)
    positions = torch.arange(-pad, num_samples + pad, device=wav.device)
    if num_samples == 1:
        return wav[..., positions * 0]
    period = 2 * (num_samples - 1)
    folded = positions.remainder(period)
    source = torch.where(folded < num_samples, folded, period - folded)
    return wav[..., source]


def _windowed_dft_numpy(config: MelConfig) -> np.ndarray:
    """The STFT as conv1d kernels, (2 * n_freqs, 1, n_fft) float64: rows 0..F-1 are
    window * cos, rows F..2F-1 window * -sin, for frequency bins k = 0..n_fft/2.

    The window is centred in n_fft as torch.stft does; angles come from (k*n) mod
    n_fft, so no large arguments reach cos and sin.
    """
    n_fft, n_freqs = config.n_fft, config.n_freqs
    window = np.zeros(n_fft)
    start = (n_fft - config.win_length) // 2
    taps = np.arange(config.win_length)
    window[start : start + config.win_length] = 0.5 - 0.5 * np.cos(2.0 * np.pi * taps / config.win_length)
    bins, samples = np.arange(n_freqs)[:, None], np.arange(n_fft)[None, :]
    angle = 2.0 * np.pi * ((bins * samples) % n_fft) / n_fft
    kernels = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])
    return kernels[:, None, :]


def _stft_magnitude_real(padded: torch.Tensor, kernels: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """|STFT| of an already padded signal as one strided conv1d with real kernels: (..., L) -> (..., F, T)."""
    leading = padded.shape[:-1]
    frames = F.conv1d(padded.reshape(-1, 1, padded.shape[-1]), kernels.to(padded.dtype), stride=config.hop_length)
    parts = frames.reshape(*leading, 2, config.n_freqs, frames.shape[-1])  # (..., real/imag, F, T)
    return torch.linalg.vector_norm(parts, dim=-3)


def wav2lip_mel(
    wav: torch.Tensor,
    config: MelConfig = WAV2LIP_MEL_CONFIG,
    *,
    filterbank: torch.Tensor | None = None,
    dft_kernels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Wav2Lip's normalised log-mel spectrogram, (S,) -> (80, T) or (B, S) -> (B, 80, T).

    T = 1 + S // 200. Matches Wav2Lip `audio.melspectrogram` with librosa's STFT in
    reflect mode (the mode the released checkpoints were trained with). Values lie
    in [-4, 4]; digital silence gives -4 everywhere.

    ``filterbank`` (n_mels, n_freqs) defaults to the cached one for the input's
    device and dtype. Without ``dft_kernels`` the STFT is torch.stft (an FFT);
    with them, (2 * n_freqs, 1, n_fft) windowed cos/sin kernels, it is one strided
    conv1d in real arithmetic: slower in PyTorch on a CPU, but it exports to a
    plain ONNX Conv that TensorRT parses and ONNX Runtime runs to within 1e-5 of
    torch.stft (ONNX Runtime's own STFT op is off by about 2.5e-3 here).
    `Wav2LipMel` uses that path.
    """
    if wav.dim() not in (1, 2):
        raise ValueError(f"expected a (S,) or (B, S) waveform, got shape {tuple(wav.shape)}")
    if not wav.is_floating_point():
        raise TypeError(f"expected a floating-point waveform, got {wav.dtype}")
    if wav.shape[-1] == 0:
        raise ValueError("cannot compute a mel spectrogram of an empty waveform")
    emphasised = _preemphasis(wav, config.preemphasis)
    padded = _reflect_pad(emphasised, config.n_fft // 2)  # centred frames, librosa's reflect mode
    return _mel_columns(padded, config, filterbank=filterbank, dft_kernels=dft_kernels)


def _mel_columns(
    padded: torch.Tensor,
    config: MelConfig = WAV2LIP_MEL_CONFIG,
    *,
    filterbank: torch.Tensor | None = None,
    dft_kernels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The normalised log-mel columns of a pre-emphasised, already padded signal: column j
    reads padded[..., j*hop : j*hop + n_fft], so each column depends on its frame alone
    and a stream (talkrt.runtime.incremental) computes any run of them from a slice."""
    if dft_kernels is None:
        spectrum = torch.stft(
            padded,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            win_length=config.win_length,
            window=_hann_window(padded.device, padded.dtype, config.win_length),
            center=False,  # padded by the caller
            return_complex=True,
        )
        magnitude = spectrum.abs()
    else:
        magnitude = _stft_magnitude_real(padded, dft_kernels, config)
    if filterbank is None:
        filterbank = mel_filterbank(padded.device, padded.dtype, config)
    mel = torch.matmul(filterbank.to(padded.dtype), magnitude)
    decibels = 20.0 * torch.log10(mel.clamp_min(config.amplitude_floor)) - config.ref_level_db
    scaled = (2.0 * config.max_abs_value) * (
        (decibels - config.min_level_db) / -config.min_level_db
    ) - config.max_abs_value
    return scaled.clamp(-config.max_abs_value, config.max_abs_value)


class Wav2LipMel(nn.Module):
    """`wav2lip_mel` as a module, the graph that `talkrt export mel` writes:
    (B, S) waveform -> (B, 80, 1 + S // 200), with the real-valued STFT path.

    It has no weights: the DFT kernels and the filterbank are non-persistent
    buffers computed from `config`, so they follow `.to(device)`, become constants
    of an exported graph, and the state_dict is empty.
    """

    def __init__(self, config: MelConfig = WAV2LIP_MEL_CONFIG) -> None:
        super().__init__()
        self.config = config
        kernels = torch.from_numpy(_windowed_dft_numpy(config).astype(np.float32))
        filters = torch.from_numpy(_mel_filterbank_numpy(config).astype(np.float32))
        self.register_buffer("dft_kernels", kernels, persistent=False)
        self.register_buffer("filterbank", filters, persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return wav2lip_mel(waveform, self.config, filterbank=self.filterbank, dft_kernels=self.dft_kernels)


# --------------------------------------------------------------------- resampling


@dataclass(frozen=True)
class _PolyphasePlan:
    """A resample_poly filter laid out as one strided conv1d.

    Output sample j = c + m*up (phase c, block m) is
    sum_k weight[c, k] * x[m*down + first_tap + k], x being zero outside [0, S).
    """

    up: int
    down: int
    weight: np.ndarray  # (up, 1, num_taps) float64
    first_tap: int  # input offset of tap 0 relative to m*down; negative = left zero padding


def _kaiser_lowpass(num_taps: int, cutoff: float, beta: float) -> np.ndarray:
    """scipy.signal.firwin(num_taps, cutoff, window=("kaiser", beta)): unit DC gain.

    `cutoff` is relative to Nyquist (1.0 = Nyquist).
    """
    centre = 0.5 * (num_taps - 1)
    taps = np.arange(num_taps, dtype=np.float64) - centre
    response = cutoff * np.sinc(cutoff * taps) * np.kaiser(num_taps, beta)
    return response / response.sum()


@functools.lru_cache(maxsize=32)
def _polyphase_plan(up: int, down: int, kaiser_beta: float = 5.0) -> _PolyphasePlan:
    """Design the filter exactly as resample_poly does and fold it into conv1d weights."""
    max_rate = max(up, down)
    half_length = 10 * max_rate
    lowpass = _kaiser_lowpass(2 * half_length + 1, 1.0 / max_rate, kaiser_beta) * up
    # resample_poly prepends zeros so output sample 0 lands on the filter's centre;
    # upfirdn's full-convolution index n of output j is then (j + skipped) * down.
    pre_pad = down - half_length % down
    skipped = (half_length + pre_pad) // down
    padded = np.concatenate([np.zeros(pre_pad), lowpass])

    # Tap for phase c at input offset t (relative to m*down): padded[(c+skipped)*down - t*up].
    phases = np.arange(up)[:, None]
    first_tap = -((len(padded) - 1 - skipped * down) // up)  # smallest t with a non-zero tap
    last_tap = ((up - 1 + skipped) * down) // up
    offsets = np.arange(first_tap, last_tap + 1)[None, :]
    tap_index = (phases + skipped) * down - offsets * up
    valid = (tap_index >= 0) & (tap_index < len(padded))
    weight = np.where(valid, padded[np.clip(tap_index, 0, len(padded) - 1)], 0.0)
    # conv1d correlates, so tap k multiplies x[m*down + first_tap + k]: no flip needed.
    return _PolyphasePlan(up, down, weight[:, None, :], int(first_tap))


@_device_cache(maxsize=64)
def _polyphase_weight(
    up: int, down: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    return torch.from_numpy(_polyphase_plan(up, down).weight).to(device=device, dtype=dtype)


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """ceil(S * target / orig): the length scipy.signal.resample_poly returns."""
    divisor = math.gcd(orig_sr, target_sr)
    up, down = target_sr // divisor, orig_sr // divisor
    return -(-num_samples * up // down)


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int = 16000) -> torch.Tensor:
    """Polyphase resampling along the last axis, equal to scipy.signal.resample_poly.

    Same Kaiser(5.0) FIR of half-length 10*max(up, down), cutoff 1/max(up, down),
    zero padding at both ends and output length ceil(S*up/down). Leading axes are
    batch axes (average channels first). Equal rates return `wav`
    itself (no copy).
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if not wav.is_floating_point():
        raise TypeError(f"expected a floating-point waveform, got {wav.dtype}")
    divisor = math.gcd(orig_sr, target_sr)
    up, down = target_sr // divisor, orig_sr // divisor
    if up == down:
        return wav
    num_samples = wav.shape[-1]
    if num_samples == 0:
        return wav.new_zeros(*wav.shape[:-1], 0)

    plan = _polyphase_plan(up, down)
    # In float64, as scipy computes: a GPU's float32 convolution may run in TF32 (10-bit
    # mantissa), and its rounding would change with the input's length.
    weight = _polyphase_weight(up, down, wav.device, torch.float64)
    num_taps = weight.shape[-1]
    num_out = resampled_length(num_samples, orig_sr, target_sr)
    num_blocks = -(-num_out // up)
    # Zero-pad (or crop) so block m reads x[m*down + first_tap : ... + num_taps].
    needed = (num_blocks - 1) * down + num_taps
    left = -plan.first_tap
    right = needed - num_samples - left
    signal = wav.reshape(-1, 1, num_samples).to(torch.float64)
    signal = F.pad(signal, (max(left, 0), max(right, 0)))
    signal = signal[..., max(-left, 0) : max(-left, 0) + needed]

    interleaved = _polyphase_blocks(signal, weight, down)
    return interleaved[:, :num_out].reshape(*wav.shape[:-1], num_out).to(wav.dtype)


def _polyphase_blocks(signal: torch.Tensor, weight: torch.Tensor, down: int) -> torch.Tensor:
    """Output blocks 0..M-1 of a polyphase plan, (N, 1, (M-1)*down + num_taps) -> (N, M*up):
    block m reads signal[..., m*down : m*down + num_taps] only, so a stream
    (talkrt.runtime.incremental) computes any run of blocks from a slice of its input."""
    phases = F.conv1d(signal, weight, stride=down)  # (N, up, M)
    return phases.transpose(1, 2).flatten(1)


# --------------------------------------------------------------------- WAV in memory

WAV_FORMATS = ("pcm16", "float32")


def wav_bytes(audio: np.ndarray | torch.Tensor, sample_rate: int, sample_format: str = "pcm16") -> bytes:
    """A complete mono RIFF/WAVE file in memory: PCM16 (format 1) or IEEE float32 (format 3, with a fact chunk).

    Samples outside [-1, 1] are clipped for PCM16 and kept for float32. A CUDA
    tensor is copied to the host here, once.
    """
    import struct

    if sample_format not in WAV_FORMATS:
        raise ValueError(f"sample format {sample_format!r}: choose one of {', '.join(WAV_FORMATS)}")
    if sample_rate <= 0:
        raise ValueError(f"bad sample rate {sample_rate}")
    samples = audio.detach().float().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got {samples.shape}")
    if sample_format == "pcm16":
        data = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        format_tag, bits, extra = 1, 16, b""
    else:
        data = samples.astype("<f4").tobytes()
        # Non-PCM formats carry cbSize in fmt and a fact chunk with the sample count.
        format_tag, bits, extra = 3, 32, struct.pack("<4sII", b"fact", 4, len(samples))
    block_align = bits // 8
    fmt = struct.pack("<HHIIHH", format_tag, 1, sample_rate, sample_rate * block_align, block_align, bits)
    if format_tag != 1:
        fmt += struct.pack("<H", 0)
    chunks = struct.pack("<4sI", b"fmt ", len(fmt)) + fmt + extra + struct.pack("<4sI", b"data", len(data)) + data
    return struct.pack("<4sI4s", b"RIFF", 4 + len(chunks), b"WAVE") + chunks


def wav_data_url(audio: np.ndarray | torch.Tensor, sample_rate: int, sample_format: str = "pcm16") -> str:
    """``data:audio/wav;base64,...`` for a web page's <audio> element, without touching a file."""
    import base64

    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(audio, sample_rate, sample_format)).decode("ascii")


def to_16k(audio: np.ndarray | torch.Tensor, sample_rate: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Mono audio at any rate -> 16 kHz on ``device`` (one host-to-device copy, then the polyphase resampler there)."""
    wav = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not isinstance(audio, torch.Tensor) else audio, dtype=torch.float32).to(device)
    return resample(wav, sample_rate, 16000)
