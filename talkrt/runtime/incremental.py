"""Incremental audio front ends: the resampler, the Wav2Lip mel and the Kaldi fbank fed in chunks.

Each ``push`` returns the output the samples received so far make final (it no longer
changes as more audio arrives) and ``finish`` the rest; joined, the pieces equal the
offline function on the whole signal (talkrt.runtime.audio.resample, wav2lip_mel,
talkrt.runtime.fbank.fbank), whose per-frame computation they share. Between calls a
stream keeps only the input its filter or next frame still reads (``state_samples``),
so a push costs the same however long the stream has run. Everything stays on the
device of the samples.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from talkrt.runtime.align import SignalPadding
from talkrt.runtime.audio import (
    WAV2LIP_MEL_CONFIG,
    MelConfig,
    _mel_columns,
    _polyphase_blocks,
    _polyphase_plan,
    _polyphase_weight,
    _preemphasis,
    _reflect_pad,
    resampled_length,
)
from talkrt.runtime.fbank import FbankOptions, _check_supported, _fbank_of_frames, fbank

__all__ = ["StreamingResampler", "FramedFeatureStream", "StreamingWav2LipMel", "StreamingFbank"]


def _check_chunk(chunk: torch.Tensor) -> None:
    if chunk.dim() != 1 or not chunk.is_floating_point():
        raise ValueError(f"expected a (n,) floating-point chunk, got {chunk.dtype} {tuple(chunk.shape)}")


class StreamingResampler:
    """`resample` fed in chunks: the pieces of push() and finish(), joined, equal
    resample(whole input, orig_sr, target_sr) (same float64 arithmetic, then the input's dtype).

    Output block m (``up`` samples) reads input [m*down + first_tap, ... + num_taps); it
    is final once that span has arrived. Equal rates pass the chunks through.
    """

    def __init__(self, orig_sr: int, target_sr: int = 16000, device: torch.device | str = "cpu") -> None:
        if orig_sr <= 0 or target_sr <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
        divisor = math.gcd(orig_sr, target_sr)
        self.orig_sr, self.target_sr = orig_sr, target_sr
        self.up, self.down = target_sr // divisor, orig_sr // divisor
        self.device = torch.device(device)
        if self.up != self.down:
            self._first_tap = _polyphase_plan(self.up, self.down).first_tap
            self._weight = _polyphase_weight(self.up, self.down, self.device, torch.float64)
        self.reset()

    def reset(self) -> None:
        """Forget the utterance: the next push starts a new signal."""
        self.received = self.produced = 0
        self._finished = False
        self._dtype = torch.float32  # of the output: the input's, as `resample` returns
        if self.up != self.down:
            # Input from index _tail_start on, zeros before sample 0 as the offline resampler pads.
            self._tail_start = min(self._first_tap, 0)
            self._tail = torch.zeros(-self._tail_start, dtype=torch.float64, device=self.device)

    @property
    def reach(self) -> int:
        """How far (input samples) an output sample's filter reads on either side of its own time:
        its block spans ``down`` inputs, and the taps lie within ``first_tap`` .. ``first_tap + taps``."""
        return 0 if self.up == self.down else self.down + self._weight.shape[-1] + abs(self._first_tap)

    @property
    def state_samples(self) -> int:
        """Input samples kept between calls (fewer than the filter's taps per phase)."""
        return 0 if self.up == self.down else len(self._tail)

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """The output samples that ``chunk`` makes final."""
        _check_chunk(chunk)
        if self._finished:
            raise RuntimeError("this stream has finished: reset() it for a new signal")
        self.received += len(chunk)
        self._dtype = chunk.dtype
        if self.up == self.down:
            self.produced += len(chunk)
            return chunk
        self._tail = torch.cat((self._tail, chunk.to(self.device, torch.float64)))
        num_taps = self._weight.shape[-1]
        final_blocks = (self.received - self._first_tap - num_taps) // self.down + 1
        return self._blocks(final_blocks)

    def finish(self) -> torch.Tensor:
        """The rest of the output: the blocks that read the zeros after the last sample."""
        if self._finished:
            raise RuntimeError("this stream has finished: reset() it for a new signal")
        self._finished = True
        if self.up == self.down:
            return torch.empty(0, dtype=self._dtype, device=self.device)
        total = resampled_length(self.received, self.orig_sr, self.target_sr)
        blocks = -(-total // self.up)
        end = (blocks - 1) * self.down + self._first_tap + self._weight.shape[-1]
        missing = end - (self._tail_start + len(self._tail))
        if missing > 0:
            self._tail = torch.cat((self._tail, self._tail.new_zeros(missing)))
        before = self.produced
        out = self._blocks(blocks)[: total - before]  # the last block runs past ceil(S*up/down)
        self.produced = before + len(out)
        return out

    def _blocks(self, stop: int) -> torch.Tensor:
        """Output of blocks produced/up .. stop-1; drops the input no later block reads."""
        first = self.produced // self.up
        out = torch.empty(0, dtype=self._dtype, device=self.device)
        if stop > first:
            begin = first * self.down + self._first_tap - self._tail_start
            length = (stop - first - 1) * self.down + self._weight.shape[-1]
            segment = self._tail[begin : begin + length].view(1, 1, length)
            out = _polyphase_blocks(segment, self._weight, self.down).view(-1).to(self._dtype)
            self.produced += len(out)
            first = stop
        # The next block may start past the input received (down > taps): keep nothing then.
        drop = min(first * self.down + self._first_tap - self._tail_start, len(self._tail))
        if drop > 0:
            self._tail, self._tail_start = self._tail[drop:], self._tail_start + drop
        return out


class FramedFeatureStream:
    """Features whose column j depends only on frame j of the padded signal: padded[j*hop :
    j*hop + frame_length], the signal padded with left_pad / right_pad samples by ``padding``
    ("reflect": numpy's, the edge excluded; "symmetric": Kaldi's mirror, the edge repeated;
    "zeros"; "none": no padding).

    ``compute(segment)`` maps a run of whole frames, given as the stretch of padded signal they
    cover, to (channels, frames); ``offline(signal)`` maps a whole (short) signal to all its
    columns. push() returns the columns whose frames lie inside the samples received (and, for
    the mirrors, once the left padding's samples have arrived); finish() those that read the
    right padding. A signal too short for a single mirror (numpy and Kaldi then reflect
    repeatedly) is kept whole, and finish() runs ``offline`` on it. ``batched``: ``compute`` also
    maps a (B, L) stack of segments to (B, channels, frames), each row as it maps the row alone,
    so streams that share it can compute their segments together (see ``take``).
    """

    def __init__(
        self,
        compute: Callable[[torch.Tensor], torch.Tensor],
        offline: Callable[[torch.Tensor], torch.Tensor],
        *,
        hop: int,
        frame_length: int,
        left_pad: int,
        right_pad: int,
        padding: SignalPadding,
        channels: int,
        device: torch.device | str = "cpu",
        batched: bool = False,
    ) -> None:
        if padding not in ("reflect", "symmetric", "zeros", "none"):
            raise ValueError(f"unknown signal padding {padding!r}")
        if padding == "none" and (left_pad or right_pad):
            raise ValueError("padding 'none' takes no left_pad or right_pad")
        if hop <= 0 or frame_length <= 0 or left_pad < 0 or right_pad < 0:
            raise ValueError("hop and frame_length must be positive, the pads non-negative")
        self.compute, self.offline = compute, offline
        self.hop, self.frame_length, self.left_pad, self.right_pad = hop, frame_length, left_pad, right_pad
        self.padding, self.channels, self.device = padding, channels, torch.device(device)
        self.batched = batched
        # Samples a single mirror of each pad reads: reflect skips the edge sample, symmetric repeats it.
        mirrored = {"reflect": 1, "symmetric": 0}.get(padding)
        self._left_needs = max(1, 0 if mirrored is None else left_pad + mirrored)  # no signal, no columns
        self._min_length = 0 if mirrored is None else max(left_pad, right_pad) + mirrored
        self.reset()

    def reset(self) -> None:
        """Forget the utterance: the next push starts a new signal."""
        self.received = self.emitted = 0
        self._buffer = torch.empty(0, device=self.device)  # the signal, then the padded signal from _start on
        self._start = 0
        self._padded = False
        self._finished = False

    @property
    def state_samples(self) -> int:
        """Samples kept between calls: less than max(frame_length, right_pad + 1) once the
        signal is longer than the pads, the whole signal (and the left padding) before."""
        return len(self._buffer)

    def total_columns(self, num_samples: int) -> int:
        """Columns of a whole signal of ``num_samples`` samples (0 for none)."""
        if num_samples == 0:
            return 0
        return max(0, (self.left_pad + num_samples + self.right_pad - self.frame_length) // self.hop + 1)

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """(channels, n): the columns that the samples received so far make final."""
        segment = self.take(samples)
        return self.accept(None if segment is None else self.compute(segment))

    def take(self, samples: torch.Tensor) -> torch.Tensor | None:
        """The first half of ``push``: keeps the samples and returns the stretch of padded signal
        whose frames they complete (None: none), for ``compute``; ``accept`` takes its columns.
        A caller with many streams computes their segments in one call in between
        (talkrt.runtime.batching)."""
        _check_chunk(samples)
        if self._finished:
            raise RuntimeError("this stream has finished: reset() it for a new signal")
        self._buffer = torch.cat((self._buffer, samples.to(self.device, torch.float32)))
        self.received += len(samples)
        if not self._padded and self.received >= self._left_needs:
            self._buffer = torch.cat((self._mirror(self._buffer, self.left_pad, left=True), self._buffer))
            self._padded = True
        if not self._padded:
            return None
        return self._segment((self.left_pad + self.received - self.frame_length) // self.hop + 1)

    def accept(self, columns: torch.Tensor | None) -> torch.Tensor:
        """The second half of ``push``: ``compute`` of ``take``'s segment (None when it gave none),
        returned as push returns it, and the samples no later frame reads dropped."""
        if self.received >= self._min_length:
            # Keep the next frame's samples and the last right_pad + 1, the most the right mirror reads.
            keep = min(self.emitted * self.hop, self.left_pad + self.received - self.right_pad - 1)
            if keep > self._start:
                self._buffer, self._start = self._buffer[keep - self._start :], keep
        return self._empty() if columns is None else columns

    def finish(self) -> torch.Tensor:
        """(channels, n): the columns that read the right padding or needed the end of the signal."""
        if self._finished:
            raise RuntimeError("this stream has finished: reset() it for a new signal")
        self._finished = True
        if self.received == 0:
            return self._empty()
        if self.received < self._min_length:  # kept whole: see the class docstring
            signal = self._buffer[self.left_pad :] if self._padded else self._buffer
            return self.offline(signal)[..., self.emitted :]
        self._buffer = torch.cat((self._buffer, self._mirror(self._buffer, self.right_pad, left=False)))
        segment = self._segment(self.total_columns(self.received))
        return self._empty() if segment is None else self.compute(segment)

    def _mirror(self, signal: torch.Tensor, pad: int, left: bool) -> torch.Tensor:
        """The ``pad`` samples before (left) or after the signal, which is long enough for one mirror."""
        if self.padding in ("zeros", "none"):
            return signal.new_zeros(pad)
        skip = 1 if self.padding == "reflect" else 0
        edge = signal[skip : skip + pad] if left else signal[len(signal) - pad - skip : len(signal) - skip]
        return edge.flip(0)

    def _segment(self, stop: int) -> torch.Tensor | None:
        """The padded signal of the frames emitted .. stop - 1, which count as emitted from now; None: none."""
        if stop <= self.emitted:
            return None
        begin = self.emitted * self.hop - self._start
        end = (stop - 1) * self.hop + self.frame_length - self._start
        self.emitted = stop
        return self._buffer[begin:end]

    def _empty(self) -> torch.Tensor:
        return torch.empty(self.channels, 0, device=self.device)


class StreamingWav2LipMel(FramedFeatureStream):
    """`wav2lip_mel` fed in chunks: (n_mels, n) columns per call, joined equal to wav2lip_mel(whole).

    The pre-emphasis filter runs ahead of the frames with one sample of state; the
    centred STFT then reads a reflect-padded signal, so column 0 waits for sample n_fft//2.
    """

    def __init__(self, device: torch.device | str = "cpu", config: MelConfig = WAV2LIP_MEL_CONFIG) -> None:
        self.config = config
        pad = config.n_fft // 2
        super().__init__(
            _mel_compute(config),
            lambda emphasised: _mel_columns(_reflect_pad(emphasised, pad), config),
            hop=config.hop_length,
            frame_length=config.n_fft,
            left_pad=pad,
            right_pad=pad,
            padding="reflect",
            channels=config.n_mels,
            device=device,
            batched=True,  # torch.stft, the filterbank's matmul and the rest take a leading batch axis
        )

    def reset(self) -> None:
        super().reset()
        self._previous: torch.Tensor | None = None  # the last sample, the pre-emphasis filter's state

    def take(self, samples: torch.Tensor) -> torch.Tensor | None:
        _check_chunk(samples)
        samples = samples.to(self.device, torch.float32)
        if len(samples):
            # y[n] = x[n] - c*x[n-1] with x[-1] the previous chunk's last sample: the offline values exactly.
            if self._previous is None:
                emphasised = _preemphasis(samples, self.config.preemphasis)
            else:
                emphasised = samples - self.config.preemphasis * torch.cat((self._previous, samples[:-1]))
            self._previous = samples[-1:].clone()  # not a view that keeps the chunk alive
            samples = emphasised
        return super().take(samples)


@functools.cache
def _mel_compute(config: MelConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The mel columns of padded segments, one function per config: every stream of a config shares
    it, which is how a batcher knows their segments can be computed together."""
    return functools.partial(_mel_columns, config=config)


class StreamingFbank(FramedFeatureStream):
    """`fbank` fed in chunks (snip_edges=False): (num_bins, n) columns per call, joined equal to
    fbank(whole).T. Frame t reads [t*hop + hop//2 - window//2, ... + window), mirrored at the
    edges; push() returns num_fbank_frames(received, flush=False) frames in all, finish() the
    rest up to num_fbank_frames(S, flush=True).
    """

    def __init__(self, options: FbankOptions, device: torch.device | str = "cpu") -> None:
        _check_supported(options)
        hop, window = options.hop, options.window_length
        left = window // 2 - hop // 2
        super().__init__(
            lambda padded: _fbank_of_frames(padded.unfold(0, window, hop), options).T,
            lambda wav: fbank(wav, options).T,
            hop=hop,
            frame_length=window,
            left_pad=left,
            # So that total_columns(S) = (S + hop//2) // hop, Kaldi's flushed frame count.
            right_pad=window - left - hop + hop // 2,
            padding="symmetric",
            channels=options.num_bins,
            device=device,
        )
