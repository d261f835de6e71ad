"""Kaldi-compatible log mel filterbank ("fbank") in pure torch.

DH_live's audio model consumes kaldi_native_fbank features (50 ms windows every
20 ms, 80 bins, snip_edges=False). This computes the same features on whatever
device the waveform lives on: one gather builds every frame, then DC removal,
pre-emphasis, the povey window, an rfft and the mel matmul run batched, with no
host round trip. kaldi_native_fbank is only the reference the tests compare
against, never a runtime dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from talkrt.runtime.audio import _device_cache

__all__ = ["FbankOptions", "DHLIVE_FBANK", "num_fbank_frames", "KaldiFbank", "fbank"]

_LOG_FLOOR = torch.finfo(torch.float32).eps  # Kaldi: log(max(energy, FLT_EPSILON))


@dataclass(frozen=True)
class FbankOptions:
    """The knf/Kaldi options that matter here; the rest stay at Kaldi's defaults
    (dither 0, povey window, FFT size rounded up to a power of two, power spectrum,
    log fbank, no energy term). high_freq <= 0 means Nyquist + high_freq, as in Kaldi."""

    sample_rate: int = 16000
    frame_length_ms: float = 50.0
    frame_shift_ms: float = 20.0
    num_bins: int = 80
    preemph: float = 0.97
    remove_dc_offset: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0
    snip_edges: bool = False

    @property
    def window_length(self) -> int:
        # Kaldi truncates: static_cast<int32>(samp_freq * 0.001 * frame_length_ms).
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def hop(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def fft_size(self) -> int:
        return 1 << (self.window_length - 1).bit_length()


DHLIVE_FBANK = FbankOptions()


def _check_supported(options: FbankOptions) -> None:
    if options.snip_edges:
        raise NotImplementedError("snip_edges=True is not supported (DH_live uses snip_edges=False)")


def num_fbank_frames(num_samples: int, options: FbankOptions = DHLIVE_FBANK, flush: bool = True) -> int:
    """Frames Kaldi emits for `num_samples` samples (snip_edges=False).

    flush=True (input finished, knf after `input_finished()`): (S + hop//2) // hop,
    frame t centred near t*hop + hop//2, its window mirrored past both ends.
    flush=False (online, more audio may come; knf's `num_frames_ready` before
    `input_finished()`): only frames whose window ends inside the samples seen,
    t*hop + hop//2 - window//2 + window <= S, because later frames would still
    change. Those frames are final: more audio never alters them.
    """
    _check_supported(options)
    hop, window = options.hop, options.window_length
    frames = (num_samples + hop // 2) // hop
    if flush:
        return frames
    first_end = hop // 2 - window // 2 + window  # end of frame 0's window (560 for DH_live)
    ready = (num_samples - first_end) // hop + 1 if num_samples >= first_end else 0
    return min(frames, ready)


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


@_device_cache(maxsize=16)
def _constants(options: FbankOptions, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(povey window (window_length,), mel matrix (num_bins, fft_size//2 + 1)), float32 on `device`.

    Built in float64 on the host once per device, as Kaldi's FeatureWindowFunction and MelBanks do.
    """
    n = options.window_length
    i = torch.arange(n, dtype=torch.float64)
    window = (0.5 - 0.5 * torch.cos(2.0 * math.pi * i / (n - 1))) ** 0.85

    nyquist = 0.5 * options.sample_rate
    high = options.high_freq if options.high_freq > 0 else nyquist + options.high_freq
    mel_low, mel_high = _mel(torch.tensor([options.low_freq, high], dtype=torch.float64))
    delta = (mel_high - mel_low) / (options.num_bins + 1)
    left = mel_low + delta * torch.arange(options.num_bins, dtype=torch.float64)[:, None]
    centre, right = left + delta, left + 2.0 * delta
    # Kaldi weights FFT bins 0..fft_size/2 - 1; the Nyquist bin keeps weight 0.
    num_freqs = options.fft_size // 2 + 1
    freqs = torch.arange(num_freqs, dtype=torch.float64) * (options.sample_rate / options.fft_size)
    mel = _mel(freqs)[None, :]
    rising, falling = (mel - left) / (centre - left), (right - mel) / (right - centre)
    weights = torch.where((mel > left) & (mel < right), torch.minimum(rising, falling), 0.0)
    weights[:, -1] = 0.0
    return window.to(device, torch.float32), weights.to(device, torch.float32)


class KaldiFbank(nn.Module):
    """Kaldi fbank as a weightless module: (S,) -> (T, num_bins), (B, S) -> (B, T, num_bins).

    T = num_fbank_frames(S, flush=True). The window and mel matrix are cached per
    device on first use, so one instance serves CPU and CUDA inputs alike.
    float16/bfloat16/float64 input is converted to float32 (Kaldi computes in
    float); integer input is rejected, since its scale (int16 or [-1, 1)) is ambiguous.
    """

    def __init__(self, options: FbankOptions = DHLIVE_FBANK) -> None:
        super().__init__()
        _check_supported(options)
        self.options = options

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() not in (1, 2):
            raise ValueError(f"expected a (S,) or (B, S) waveform, got shape {tuple(waveform.shape)}")
        if not waveform.is_floating_point():
            raise TypeError(f"expected a floating-point waveform in [-1, 1), got {waveform.dtype}")
        opts, wav = self.options, waveform.float()
        num_samples = wav.shape[-1]
        num_frames = num_fbank_frames(num_samples, opts)
        if num_frames == 0:
            return wav.new_zeros(*wav.shape[:-1], 0, opts.num_bins)

        # Frame t reads [t*hop + hop//2 - window//2, ... + window); indices outside
        # [0, S) fold back as in Kaldi's ExtractWindow (-1 -> 0, S -> S-1), repeatedly.
        start = opts.hop // 2 - opts.window_length // 2
        taps = torch.arange(opts.window_length, device=wav.device)
        index = torch.arange(num_frames, device=wav.device)[:, None] * opts.hop + (start + taps)
        index = index.remainder(2 * num_samples)
        index = torch.where(index < num_samples, index, 2 * num_samples - 1 - index)
        return _fbank_of_frames(wav[..., index], opts)  # frames (..., T, window_length)


def _fbank_of_frames(frames: torch.Tensor, options: FbankOptions = DHLIVE_FBANK) -> torch.Tensor:
    """Log mel energies of float32 frames, (..., T, window_length) -> (..., T, num_bins): every
    step works within one frame, so a stream (talkrt.runtime.incremental) computes any run of frames."""
    window, mel_matrix = _constants(options, frames.device)
    if options.remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if options.preemph != 0.0:
        # Kaldi's in-frame pre-emphasis: x[0] -= p*x[0], x[i] -= p*x[i-1].
        previous = torch.cat((frames[..., :1], frames[..., :-1]), dim=-1)
        frames = frames - options.preemph * previous
    spectrum = torch.fft.rfft(frames * window, n=options.fft_size)  # zero-padded to fft_size
    power = spectrum.real.square() + spectrum.imag.square()
    energies = torch.matmul(power, mel_matrix.T)
    return torch.log(energies.clamp_min(_LOG_FLOOR))


def fbank(waveform: torch.Tensor, options: FbankOptions = DHLIVE_FBANK) -> torch.Tensor:
    """One-shot `KaldiFbank(options)(waveform)`: the flushed (input finished) features."""
    return KaldiFbank(options)(waveform)
