"""Audio-feature <-> video-frame alignment contracts (docs/architecture.md, "Alignment").

One clock drives everything: the 16 kHz sample index. Video frame k at F fps
starts at sample s_k = floor(k * sr / F), computed with integers from F as an
exact Fraction, so any fps works (30000/1001 included) and nothing drifts over an
hour. Frame k's window of feature frames is anchored on a_k = s_k // hop (the
feature frame in which the video frame starts), shifted by `offset`, `window`
frames long, and kept inside [0, T) by the preset's padding rule.

Frame count (offline): one video frame per frame START inside the audio,
N = #{k : s_k < S} = ceil(S * F / sr). Wav2Lip's inference loop instead stops at
the first window that runs past the mel's end, so it emits a few frames fewer
(22 instead of 25 for 1 s at 25 fps); our windows equal the loop's for every frame
the loop emits, and the extra frames reuse its last window, so video and audio
keep the same duration.

Each family declares its presets beside its renderer (talkrt.models.<family>.alignment).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Optional, Union

import torch

__all__ = [
    "FpsLike",
    "as_fps",
    "frame_start_sample",
    "frame_start_samples",
    "num_video_frames",
    "FeatureAlignment",
    "SlidingContext",
    "gather_windows",
]

FpsLike = Union[Fraction, int, float, str]

# Rates people write as decimals but mean as N*1000/1001 (NTSC).
_NTSC_RATES = {
    Fraction("23.976"): Fraction(24000, 1001),
    Fraction("29.97"): Fraction(30000, 1001),
    Fraction("47.952"): Fraction(48000, 1001),
    Fraction("59.94"): Fraction(60000, 1001),
    Fraction("119.88"): Fraction(120000, 1001),
}


MAX_FPS = 120  # video for talking heads; above this a typo is likelier than a real rate


def as_fps(fps: FpsLike) -> Fraction:
    """fps as an exact Fraction: 25, 25.0, "25", "30000/1001", 29.97 and "29.97" (-> 30000/1001)."""
    if isinstance(fps, bool):
        raise ValueError(f"invalid fps: {fps!r}")
    if isinstance(fps, Fraction):
        exact = fps
    elif isinstance(fps, int):
        exact = Fraction(fps)
    elif isinstance(fps, float):
        # repr gives the shortest decimal that round-trips: 29.97, not its binary expansion.
        exact = Fraction(repr(fps))
    elif isinstance(fps, str):
        try:
            exact = Fraction(fps.strip())
        except (ValueError, ZeroDivisionError) as error:
            raise ValueError(f"invalid fps: {fps!r}") from error
    else:
        raise ValueError(f"invalid fps: {fps!r}")
    if exact <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return _NTSC_RATES.get(exact, exact)


def frame_start_sample(frame: int, fps: FpsLike, sample_rate: int = 16000) -> int:
    """First sample of video frame `frame`: floor(frame * sample_rate / fps), in integers."""
    rate = as_fps(fps)
    return (frame * sample_rate * rate.denominator) // rate.numerator


def frame_start_samples(
    num_frames: int,
    fps: FpsLike,
    sample_rate: int = 16000,
    device: Optional[torch.device] = None,
    first: int = 0,
) -> torch.Tensor:
    """First sample of frames first..num_frames-1 as int64, computed without floats."""
    rate = as_fps(fps)
    frames = torch.arange(first, max(first, num_frames), dtype=torch.int64, device=device)
    return torch.div(
        frames * (sample_rate * rate.denominator), rate.numerator, rounding_mode="floor"
    )


def num_video_frames(num_samples: int, fps: FpsLike, sample_rate: int = 16000) -> int:
    """Frames whose start lies inside the audio: #{k : s_k < S} = ceil(S * fps / sample_rate)."""
    if num_samples <= 0:
        return 0
    rate = as_fps(fps)
    # s_k < S  <=>  k * sr * den < S * num, since s_k is the floor of k * sr * den / num.
    per_frame = sample_rate * rate.denominator
    return -(-num_samples * rate.numerator // per_frame)


@dataclass(frozen=True)
class SlidingContext:
    """How features that see their whole input (attention, utterance normalisation) stream:
    approximately, ``step`` feature frames at a time, each step computed on its own window of
    audio, from ``left`` samples before the step's first frame to ``lookahead`` samples past
    its last frame's receptive field (both clamped to the utterance).

    Every step's window depends only on its index and on where the utterance ends, so the
    features are the same however the audio is chunked; they differ from the
    whole-utterance features by what the window leaves out, measured by
    ``perf/bench_context.py``. Requires unpadded features (``signal_padding="none"``) and a
    ``left`` that is a whole number of hops, so each window starts on the frame grid.
    """

    left: int  # samples of history before a step's first frame
    step: int  # feature frames per step
    lookahead: int  # samples after a step's last receptive field

    @classmethod
    def of_ms(cls, left_ms: float, step_ms: float, lookahead_ms: float, hop: int, sample_rate: int = 16000) -> "SlidingContext":
        """Milliseconds to samples: ``left`` rounded to whole hops, ``step`` to whole frames (at least one)."""
        left = round(left_ms * sample_rate / 1000 / hop) * hop
        step = max(1, round(step_ms * sample_rate / 1000 / hop))
        return cls(left, step, round(lookahead_ms * sample_rate / 1000))

    def window(self, step_index: int, alignment: "FeatureAlignment", total: Optional[int] = None) -> tuple[int, int]:
        """[start, stop) samples of the audio step ``step_index`` is computed on."""
        first = step_index * self.step
        start = max(0, first * alignment.hop - self.left)
        stop = (first + self.step - 1) * alignment.hop + alignment.receptive_field + self.lookahead
        return start, stop if total is None else min(stop, total)

    def final_frames(self, available: int, alignment: "FeatureAlignment") -> int:
        """Leading feature frames whose step's window lies inside the ``available`` samples."""
        # Step g is complete when (g + 1) * step * hop <= available - receptive - lookahead + hop.
        span = self.step * alignment.hop
        return max(0, (available - alignment.receptive_field - self.lookahead + alignment.hop) // span) * self.step

    def describe(self, alignment: "FeatureAlignment") -> str:
        ms = 1000 / alignment.sample_rate
        return f"sliding context: {self.left * ms:g} ms left, {self.step * alignment.hop * ms:g} ms steps, {self.lookahead * ms:g} ms lookahead"


WindowPadding = Literal["shift", "edge"]
SignalPadding = Literal["reflect", "symmetric", "zeros", "none"]


@dataclass(frozen=True)
class FeatureAlignment:
    """How one audio feature type maps onto video frames.

    Feature frame j reads samples [j*hop - left_pad, j*hop - left_pad + receptive_field);
    samples outside [0, S) come from `signal_padding`. A centred STFT has
    left_pad = right_pad = n_fft // 2. Video frame k uses feature frames
    a_k + offset ... a_k + offset + window - 1 with a_k = s_k // hop, kept inside
    [0, T) by `padding`: "shift" moves a window that runs past the end back to the
    last `window` frames (Wav2Lip inference); "edge" repeats the first/last frame
    (np.pad mode="edge", DINet).
    """

    name: str
    hop: int
    receptive_field: int
    left_pad: int
    right_pad: int
    window: int
    offset: int
    padding: WindowPadding
    signal_padding: SignalPadding
    streamable: bool = True  # False: features depend on the whole utterance
    min_frames: int = 0  # frames even a very short (non-empty) signal yields
    sample_rate: int = 16000
    # How features that are not streamable stream all the same, approximately (None: they
    # wait for the end of the utterance).
    context: Optional[SlidingContext] = None

    def __post_init__(self) -> None:
        if self.padding not in ("shift", "edge"):
            raise ValueError(f"{self.name}: unknown window padding {self.padding!r}")
        if self.signal_padding not in ("reflect", "symmetric", "zeros", "none"):
            raise ValueError(f"{self.name}: unknown signal padding {self.signal_padding!r}")
        if self.hop <= 0 or self.window <= 0 or self.receptive_field <= 0:
            raise ValueError(f"{self.name}: hop, window and receptive_field must be positive")
        context = self.context
        if context is not None:
            if self.streamable:
                raise ValueError(f"{self.name}: streamable features need no sliding context")
            if self.signal_padding != "none" or self.left_pad or self.right_pad or self.min_frames:
                raise ValueError(f"{self.name}: a sliding context needs unpadded features")
            if context.left < 0 or context.left % self.hop or context.step < 1 or context.lookahead < 0:
                raise ValueError(f"{self.name}: a sliding context needs whole hops of left context, a step of at least one frame and no negative lookahead")

    # ------------------------------------------------------------------ rates

    @property
    def feature_rate(self) -> Fraction:
        """Feature frames per second (80, 50 or 25)."""
        return Fraction(self.sample_rate, self.hop)

    def lookahead_ms(self, fps: FpsLike) -> float:
        """Audio after a frame's own start that the frame needs, in ms (worst frame).

        The need of frame k is the end of its last feature frame's receptive field
        minus s_k; it is largest when s_k falls on a hop boundary, as frame 0 always
        does, so the value is the same at every fps. Frames whose window is clamped
        at the end of the audio need the end of the audio; non-streamable features
        need the whole utterance on top of this.
        """
        as_fps(fps)  # validates; the worst case does not depend on the rate (see above)
        last_feature = self.offset + self.window - 1
        needed_samples = last_feature * self.hop - self.left_pad + self.receptive_field
        if self.context is not None:  # the last feature may open a step: the whole step and its lookahead
            needed_samples += (self.context.step - 1) * self.hop + self.context.lookahead
        return 1000.0 * needed_samples / self.sample_rate

    # ------------------------------------------------------- feature counts

    def num_feature_frames(self, num_samples: int) -> int:
        """T for S samples: 1 + S//200 (mel), (S-400)//320 + 1 (HuBERT), (S+160)//320 (fbank)..."""
        if num_samples <= 0:
            return 0
        padded = num_samples + self.left_pad + self.right_pad
        return max(self.min_frames, (padded - self.receptive_field) // self.hop + 1)

    def computable_feature_frames(
        self, num_samples_available: int, total_samples: Optional[int] = None
    ) -> int:
        """How many leading feature frames are final given the samples received so far.

        A frame is final once its receptive field lies inside the received samples:
        until the stream's end is known, frames that reach into the right padding
        cannot be computed (their padding copies samples not yet seen).
        """
        available = max(0, num_samples_available)
        if total_samples is not None:
            if available >= total_samples:
                return self.num_feature_frames(total_samples)
        if not self.streamable:
            count = 0 if self.context is None else self.context.final_frames(available, self)
            return count if total_samples is None else min(count, self.num_feature_frames(total_samples))
        count = max(0, (available + self.left_pad - self.receptive_field) // self.hop + 1)
        if self.signal_padding == "reflect" and available <= self.left_pad:
            count = 0  # frame 0's reflection reads sample left_pad
        if total_samples is not None:
            count = min(count, self.num_feature_frames(total_samples))
        return count

    # ------------------------------------------------------------- windows

    def window_starts(
        self,
        num_feature_frames: int,
        num_video_frames: int,
        fps: FpsLike,
        device: Optional[torch.device] = None,
        first: int = 0,
    ) -> torch.LongTensor:
        """First feature frame of the window of video frames first..N-1, (N - first,) int64, non-decreasing.

        "shift" windows always start inside [0, T - window]; "edge" windows may start
        before 0 or end past T - 1, their indices being clamped by window_indices.
        """
        if num_video_frames > 0 and num_feature_frames <= 0:
            raise ValueError(f"{self.name}: no feature frames to take windows from")
        anchors = torch.div(
            frame_start_samples(num_video_frames, fps, self.sample_rate, device, first),
            self.hop,
            rounding_mode="floor",
        )
        starts = anchors + self.offset
        if self.padding == "shift":
            last_start = max(num_feature_frames - self.window, 0)
            starts = starts.clamp(min=0, max=last_start)
        return starts

    def window_indices(
        self,
        num_feature_frames: int,
        num_video_frames: int,
        fps: FpsLike,
        device: Optional[torch.device] = None,
        first: int = 0,
    ) -> torch.LongTensor:
        """Feature-frame indices of the windows of video frames first..N-1, (N - first, window)
        int64, all inside [0, T); a stream asks only for its new frames."""
        starts = self.window_starts(num_feature_frames, num_video_frames, fps, device, first)
        steps = torch.arange(self.window, dtype=torch.int64, device=starts.device)
        # Clamping is edge padding; it also covers "shift" windows when T < window.
        return (starts[:, None] + steps[None, :]).clamp(0, max(num_feature_frames - 1, 0))

    # ------------------------------------------------------------ streaming

    def frames_ready(
        self,
        num_samples_available: int,
        fps: FpsLike,
        total_samples: Optional[int] = None,
    ) -> int:
        """Video frames whose whole window is computable from the samples received so far.

        Consistent with the offline windows: every ready frame's window is the one
        window_indices gives for the full audio. Windows clamped at the end need the
        end of the stream, so the last frames become ready only once total_samples
        is known and received. Never more than num_video_frames(total_samples);
        0 for audio too short to yield a single feature frame (pad it first).
        """
        available = max(0, num_samples_available)
        computable = self.computable_feature_frames(available, total_samples)
        if total_samples is not None:
            total_features = self.num_feature_frames(total_samples)
            if total_features == 0:
                return 0  # shorter than one receptive field: nothing to cut windows from
            frame_bound = num_video_frames(total_samples, fps, self.sample_rate)
            if computable >= total_features:
                return frame_bound
        else:
            frame_bound = num_video_frames(available, fps, self.sample_rate)
        if computable == 0 or (self.padding == "shift" and computable < self.window):
            return 0  # even a window clamped to the start is not complete yet
        # Frame k is ready iff its last unclamped index a_k + offset + window - 1 is
        # computable, i.e. a_k < first_blocked, i.e. s_k < first_blocked * hop.
        first_blocked = computable - self.offset - self.window + 1
        if first_blocked <= 0:
            return 0
        ready = num_video_frames(first_blocked * self.hop, fps, self.sample_rate)
        return min(ready, frame_bound)


def gather_windows(
    features: torch.Tensor, indices: torch.Tensor, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Cut every window in one gather: (C, T) -> (N, C, W), (B, C, T) -> (B, N, C, W).

    `indices` (N, W) comes from window_indices. The result is contiguous and can
    be written into a preallocated `out` buffer.
    """
    if features.dim() not in (2, 3):
        raise ValueError(f"expected (C, T) or (B, C, T) features, got {tuple(features.shape)}")
    if indices.dim() != 2:
        raise ValueError(f"expected (N, W) indices, got {tuple(indices.shape)}")
    indices = indices.to(device=features.device, dtype=torch.int64)
    num_windows, window = indices.shape
    channels, num_frames = features.shape[-2:]
    if features.dim() == 2:
        source = features.unsqueeze(0).expand(num_windows, channels, num_frames)
        index = indices[:, None, :].expand(num_windows, channels, window)
        return torch.gather(source, 2, index, out=out)
    batch = features.shape[0]
    source = features.unsqueeze(1).expand(batch, num_windows, channels, num_frames)
    index = indices[None, :, None, :].expand(batch, num_windows, channels, window)
    return torch.gather(source, 3, index, out=out)
