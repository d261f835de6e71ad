"""Audio and video in and out, through PyAV (FFmpeg).

Reading: `read_audio` (any container or codec FFmpeg knows -> float32 mono),
`read_video_frames` and `read_image` (-> uint8 BGR, the layout Wav2Lip takes),
`probe` (what a file holds, for tests and for users checking an output).

Writing: `VideoWriter` (H.264 + AAC in MP4, fed in batches of frames, the audio
whole or as it comes, written atomically), and `iter_av_chunks` (frames paired with their own audio slices, for streaming).

PyAV is imported inside the functions, so `import talkrt.runtime.media` costs
nothing and a missing PyAV is reported with its install command. Rate changes
always go through `talkrt.runtime.audio.resample` so decoded audio matches the
rest of talkrt sample for sample; PyAV only decodes, encodes and muxes.
"""

from __future__ import annotations

import operator
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np

from talkrt.errors import TalkrtError, TalkrtWarning
from talkrt.fileio import atomic_path

__all__ = [
    "AAC_SAMPLE_RATES",
    "FrameChunk",
    "VideoWriter",
    "iter_av_chunks",
    "probe",
    "read_audio",
    "read_image",
    "read_video_frames",
]

# Sampling rates the AAC bitstream can signal; other rates are resampled to 48 kHz.
AAC_SAMPLE_RATES = frozenset({96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350})
_AAC_FALLBACK_RATE = 48000
# libavutil's AVCOL_SPC_SMPTE170M, the BT.601 matrix (PyAV's Colorspace enum holds swscale's codes).
_AVCOL_SPC_SMPTE170M = 6
# Demuxers whose stream durations are exact (edit lists), used to trim encoder padding.
_EXACT_DURATION_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")
# Trim at most this many decoded samples past the stated end (one AAC frame is 1024;
# more than this would mean metadata we should not trust).
_MAX_END_PADDING = 4096
# Averaged channels quieter than this fraction of the channels themselves cancel out
# (antiphase stereo); channels quieter than _SILENT_RMS are silence, not cancellation.
_CANCELLED_MIX_RATIO = 0.1
_SILENT_RMS = 1e-4


def _av():
    from talkrt.optional import require

    return require("av")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise TalkrtError(f"{what} not found: {path}")
    if not path.is_file():
        raise TalkrtError(f"{what} is not a file: {path}")


# --------------------------------------------------------------------------- audio in


def _audio_frame_planes(frame) -> np.ndarray:
    """One decoded AudioFrame -> float32 (channels, n), integer formats scaled to [-1, 1)."""
    samples = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if frame.format.is_planar:
        planes = samples  # (C, n)
    else:
        planes = samples.reshape(-1, channels).T  # packed (1, n*C) -> (C, n)
    dtype = planes.dtype
    if np.issubdtype(dtype, np.floating):
        return planes.astype(np.float32, copy=False)
    if dtype == np.uint8:
        return (planes.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(dtype, np.signedinteger):
        return planes.astype(np.float32) / float(2 ** (8 * dtype.itemsize - 1))
    raise TalkrtError(f"unsupported audio sample format {frame.format.name}")


def read_audio(
    path: str | os.PathLike, target_rate: Optional[int] = None, *, channel: Optional[int] = None
) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any file FFmpeg reads to float32 mono in [-1, 1].

    Works for wav, mp3, flac, ogg/opus, m4a and the audio of a video. Channels are
    averaged, or with `channel` (0-based) only that one is kept; when the average is
    far quieter than the channels (antiphase stereo cancels out) a TalkrtWarning
    says so. NaN or infinite samples raise TalkrtError rather than being clipped.
    Encoder delay is removed by FFmpeg, and so is the end padding of Ogg/Opus
    (granule position) and WebM (DiscardPadding); the zero padding of the last AAC
    frame is cut where the container states the exact end (MP4/M4A: the last
    packet's pts + duration), so a file written by `VideoWriter` reads back with
    exactly the length it was given. With
    `target_rate` the result is resampled by `talkrt.runtime.audio.resample`
    (which may overshoot +-1 very slightly; it is not clipped, to match it exactly).

    Returns (samples, rate). Missing, unreadable or audio-less files raise TalkrtError.
    """
    av = _av()
    path = Path(path)
    _require_file(path, "audio file")
    if target_rate is not None:
        try:
            target_rate = operator.index(target_rate)
        except TypeError:
            target_rate = 0
        if target_rate <= 0:
            raise TalkrtError("invalid target sample rate: expected a positive integer in Hz")
    if channel is not None:
        try:
            channel = operator.index(channel)
        except TypeError:
            raise TalkrtError("invalid audio channel: expected a 0-based integer") from None
    chunks: list[np.ndarray] = []
    # Energy of each channel and of their average, to notice channels that cancel out.
    channel_energy: Optional[np.ndarray] = None
    mix_energy = 0.0
    mixed_samples = 0
    rate: Optional[int] = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise TalkrtError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            # MP4/M4A state the exact end of the audio in the end of the last packet
            # (pts + duration); the edit list's duration is often rounded to whole ms.
            exact_end = any(name in _EXACT_DURATION_FORMATS for name in container.format.name.split(","))
            stream_end: Optional[int] = None
            for packet in container.demux(stream):
                if exact_end and packet.size:  # the final flush packet is empty
                    if packet.pts is None or not packet.duration:
                        exact_end = False
                    else:
                        packet_end = packet.pts + packet.duration
                        stream_end = packet_end if stream_end is None else max(stream_end, packet_end)
                for frame in packet.decode():
                    if rate is None:
                        rate = int(frame.sample_rate)
                    elif frame.sample_rate != rate:
                        raise TalkrtError(f"{path}: the sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)")
                    planes = _audio_frame_planes(frame)
                    count = planes.shape[0]
                    if channel is not None:
                        if not 0 <= channel < count:
                            raise TalkrtError(f"{path} has {count} audio channel{'s' if count != 1 else ''} (0 to {count - 1}); there is no channel {channel}")
                        planes = planes[channel : channel + 1]
                    # Clipping would turn +-inf into full-scale samples, and NaN passes through it.
                    if not np.isfinite(planes).all():
                        raise TalkrtError(f"{path} holds NaN or infinite samples (a float WAV written by a broken tool?): fix or re-export the audio")
                    if planes.shape[0] == 1:
                        chunks.append(planes[0])
                        continue
                    mono = planes.mean(axis=0, dtype=np.float32)
                    chunks.append(mono)
                    energy = np.einsum("cn,cn->c", planes, planes, dtype=np.float64)
                    if channel_energy is None:
                        channel_energy = energy
                    elif channel_energy.shape == energy.shape:
                        channel_energy += energy
                    else:
                        continue  # the layout changed mid-stream: keep the first layout's figures
                    mix_energy += float(np.dot(mono.astype(np.float64), mono))
                    mixed_samples += len(mono)
            declared = None
            if exact_end and stream_end is not None and rate and stream.time_base:
                start = stream.start_time if stream.start_time is not None else 0
                declared = int(round(Fraction(stream_end - max(start, 0)) * stream.time_base * rate))
    except TalkrtError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise TalkrtError(f"cannot decode audio from {path}: {_one_line(error)}") from error
    if rate is None or not chunks or sum(len(c) for c in chunks) == 0:
        raise TalkrtError(f"{path}: no audio samples could be decoded")
    samples = np.concatenate(chunks)
    if channel_energy is not None:
        _warn_if_cancelled(path, channel_energy, mix_energy, mixed_samples)
    if declared is not None and 0 < declared < len(samples) <= declared + _MAX_END_PADDING:
        samples = samples[:declared]  # the encoder zero-padded the last frame (1024 samples for AAC)
    samples = np.clip(samples, -1.0, 1.0, out=samples)
    if target_rate is not None and target_rate != rate:
        samples = _resample(samples, rate, target_rate)
        rate = target_rate
    return np.ascontiguousarray(samples, dtype=np.float32), rate


def _warn_if_cancelled(path: Path, channel_energy: np.ndarray, mix_energy: float, num_samples: int) -> None:
    channel_rms = float(np.sqrt(channel_energy / num_samples).mean())
    mix_rms = float(np.sqrt(mix_energy / num_samples))
    if channel_rms > _SILENT_RMS and mix_rms < _CANCELLED_MIX_RATIO * channel_rms:
        warnings.warn(
            f"{path}: its {len(channel_energy)} channels cancel out when averaged to mono (the mix is "
            f"{mix_rms / channel_rms:.0%} as loud as the channels; antiphase stereo?): use one channel with --channel 0",
            TalkrtWarning,
            stacklevel=3,
        )


def _resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    import torch

    from talkrt.runtime.audio import resample

    with torch.no_grad():
        resampled = resample(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), orig_rate, target_rate)
    return resampled.numpy().astype(np.float32, copy=False)


# --------------------------------------------------------------------------- video in


def _stream_fps(stream) -> Optional[Fraction]:
    from talkrt.runtime.align import as_fps

    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            try:
                return as_fps(Fraction(rate))
            except ValueError:
                continue
    return None


def read_video_frames(
    path: str | os.PathLike, max_frames: Optional[int] = None
) -> tuple[np.ndarray, Optional[Fraction]]:
    """Decode the first video stream to (N, H, W, 3) uint8 BGR, and its fps as a Fraction.

    fps is None when the file does not say (a single image). `max_frames` stops early.
    """
    av = _av()
    path = Path(path)
    _require_file(path, "video file")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise TalkrtError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = _stream_fps(stream)
            if max_frames != 0:
                for frame in container.decode(stream):
                    frames.append(frame.to_ndarray(format="bgr24"))
                    if max_frames is not None and len(frames) >= max_frames:
                        break
    except TalkrtError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise TalkrtError(f"cannot decode video from {path}: {_one_line(error)}") from error
    if not frames:
        if max_frames == 0:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8), fps
        raise TalkrtError(f"{path}: no video frames could be decoded")
    return np.stack(frames), fps


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode a still image (PNG, JPEG, BMP, ...) to (H, W, 3) uint8 BGR; alpha is dropped."""
    path = Path(path)
    _require_file(path, "image file")
    frames, _ = read_video_frames(path, max_frames=1)
    return frames[0]


# --------------------------------------------------------------------------- frames


def _as_frame_batch(frames: Any) -> np.ndarray:
    """numpy or torch uint8 (N, H, W, 3) or (H, W, 3) BGR -> C-contiguous numpy (N, H, W, 3).

    A torch tensor on a GPU is copied to the host here: this is the end of the pipeline.
    """
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):  # torch.Tensor, without importing torch
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 BGR, got dtype {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) or (H, W, 3) BGR, got shape {tuple(frames.shape)}")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames must have a positive size, got shape {tuple(frames.shape)}")
    return np.ascontiguousarray(frames)


def _iter_frame_batches(frames: Any) -> Iterator[np.ndarray]:
    """A single array/tensor of frames, or an iterable of frames or batches -> numpy batches."""
    if hasattr(frames, "shape"):
        yield _as_frame_batch(frames)
        return
    for item in frames:
        yield _as_frame_batch(item)


# --------------------------------------------------------------------------- video out


class VideoWriter:
    """Write an H.264 (libx264, yuv420p) + AAC MP4, atomically, from batches of BGR frames.

        with VideoWriter("out.mp4", fps=25, audio=wav, sample_rate=16000) as writer:
            for batch in batches:           # (N, H, W, 3) uint8 BGR, numpy or torch
                writer.write_frames(batch)

    The file appears only when `close()` (or the end of the `with` block) succeeds;
    an exception, a wrong frame count or an encoding error leaves nothing behind.

    - fps is exact (`as_fps`): 29.97 means 30000/1001; frame k has pts k in a
      time base of 1/fps, so timestamps never drift.
    - Colour: BT.601 limited-range yuv420p, and the stream is tagged so.
      `write_frames` converts BGR on the host (libswscale); `write_i420` takes planes
      already converted, e.g. on the GPU by `talkrt.runtime.yuv.bgr_to_i420` before
      the host copy (half the bytes, and no conversion on the encoding thread).
      x264 runs frame threads, which scale with the cores at avatar sizes.
    - Odd sizes: yuv420p needs even dimensions, so an odd width or height is padded
      by ONE pixel on the right / bottom, repeating the last column / row. The file
      is then one pixel wider and/or taller; crop `[:H, :W]` after decoding.
    - Audio: float32 mono in [-1, 1] (clipped) at `sample_rate`, encoded as AAC at
      that rate when AAC supports it (16, 22.05, 24, 44.1, 48 kHz...), otherwise
      resampled to 48 kHz by `talkrt.runtime.audio.resample`. It is interleaved
      with the video as frames arrive. Given whole (`audio`), or as it is made
      (`audio_follows=True`, then `append_audio` chunk by chunk from any thread; the
      track ends at `close`): the AAC encoder gets the same 1024-sample frames
      either way, so the track is the same. A streamed track at a rate AAC lacks
      is resampled, and muxed, at `close`. The MP4 edit list hides the AAC encoder
      delay (1024 priming samples); the movie timescale is the audio rate, so the
      stated audio duration is exactly len(audio) / sample_rate. The last AAC
      frame is zero-padded to 1024 samples in the bitstream; its packet duration
      says how many are real, and `read_audio` trims the rest.
    - `expect_exact` (default): `close()` checks that exactly
      `num_video_frames(len(audio), fps, sample_rate)` frames were written, so the
      video lasts as long as the audio, rounded up to a whole frame.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: Any,
        audio: Any = None,
        sample_rate: int = 16000,
        *,
        crf: int = 18,
        preset: str = "veryfast",
        expect_exact: bool = True,
        audio_bitrate: int = 128_000,
        audio_follows: bool = False,
    ) -> None:
        from talkrt.runtime.align import as_fps

        self.path = Path(path)
        try:
            self.fps = as_fps(fps)
        except ValueError as error:
            raise TalkrtError(str(error)) from error
        self.crf = int(crf)
        self.preset = str(preset)
        self.expect_exact = bool(expect_exact)
        self.sample_rate = int(sample_rate)
        self.frames_written = 0
        self.width: Optional[int] = None  # of the encoded frames (even sizes)
        self.height: Optional[int] = None
        self._closed = False
        self._video_stream = None
        self._audio_stream = None
        self._lock = threading.Lock()  # frames may be written from an encoding thread, audio appended from another

        self.has_audio = audio is not None or bool(audio_follows)
        self.audio_samples = 0  # input samples of the track so far
        self.audio_complete = not audio_follows  # False while `append_audio` may add more
        self.expected_frames: Optional[int] = None  # known once the track is complete
        if self.has_audio:
            if self.sample_rate <= 0:
                raise TalkrtError(f"invalid sample rate {sample_rate}")
            # What the AAC encoder gets: the same audio, at a rate AAC can signal.
            self._direct = self.sample_rate in AAC_SAMPLE_RATES
            self._encoded_rate = self.sample_rate if self._direct else _AAC_FALLBACK_RATE
            self._unsent = np.zeros(0, np.float32)  # at the encoded rate, not yet encoded
            self._unresampled: list[np.ndarray] = []  # at a rate AAC lacks: kept until the track is complete
            self._audio_sent = 0
            if audio is not None:
                self._add_audio(audio)
            if self.audio_complete:
                self._end_audio()
        self._audio_bitrate = int(audio_bitrate)

        av = _av()
        self._av = av
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        # The movie timescale (default 1000) rounds edit-list durations; the audio rate
        # (or the fps numerator) makes the stated durations exact.
        timescale = self._encoded_rate if self.has_audio else self.fps.numerator
        options = {"movflags": "+faststart", "movie_timescale": str(timescale)}
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4", options=options)
        except BaseException as error:
            self._atomic.__exit__(type(error), error, error.__traceback__)
            self._closed = True
            if isinstance(error, (av.FFmpegError, OSError)):
                raise TalkrtError(f"cannot write {self.path}: {_one_line(error)}") from error
            raise

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        self.close()

    def __del__(self) -> None:  # a writer dropped without close() leaves no temp file
        try:
            if not self._closed:
                self.abort()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    def abort(self) -> None:
        """Stop and remove the temporary file; the destination is left untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass  # the half-written file is deleted anyway
        error = TalkrtError("aborted")
        self._atomic.__exit__(TalkrtError, error, None)

    def close(self) -> None:
        """End the audio track, flush the encoders, check the frame count, and move the file into place."""
        if self._closed:
            return
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self.has_audio and not self.audio_complete:
            self._end_audio()
        if self.frames_written == 0:
            self.abort()
            raise TalkrtError(f"no frames were written to {self.path}")
        if self.expect_exact and self.expected_frames is not None and self.frames_written != self.expected_frames:
            self.abort()
            raise TalkrtError(
                f"{self.path}: {self.frames_written} video frames written, but {self.audio_samples} audio samples at "
                f"{self.sample_rate} Hz need exactly {self.expected_frames} at {self.fps} fps; nothing was written"
            )
        try:
            self._container.mux(self._video_stream.encode(None))
            if self._audio_stream is not None:
                self._send_audio()
                self._container.mux(self._audio_stream.encode(None))
            self._container.close()
        except (self._av.FFmpegError, OSError, ValueError) as error:
            self.abort()
            raise TalkrtError(f"cannot write {self.path}: {_one_line(error)}") from error
        self._closed = True
        self._atomic.__exit__(None, None, None)

    # --------------------------------------------------------------- writing

    def _open_streams(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # The planes are BT.601 limited range (talkrt.runtime.yuv); say so in the stream.
        from av.video.reformatter import ColorPrimaries, ColorRange, ColorTrc

        context = stream.codec_context
        context.color_primaries, context.color_trc = ColorPrimaries.SMPTE170M, ColorTrc.SMPTE170M
        context.colorspace = _AVCOL_SPC_SMPTE170M
        context.color_range = ColorRange.MPEG
        # Frame threads scale with the cores; libavcodec's default, slice threads, does
        # not at avatar sizes (a 256-pixel frame has 16 macroblock rows).
        context.thread_type = "FRAME"
        stream.time_base = Fraction(1) / self.fps
        stream.codec_context.time_base = Fraction(1) / self.fps
        stream.codec_context.options = {"crf": str(self.crf), "preset": self.preset}
        self._video_stream = stream
        if self.has_audio:
            audio_stream = self._container.add_stream("aac", rate=self._encoded_rate, layout="mono")
            # AAC carries at most 6144 bits per channel per 1024-sample frame.
            audio_stream.bit_rate = min(self._audio_bitrate, 6144 * self._encoded_rate // 1024)
            audio_stream.time_base = Fraction(1, self._encoded_rate)
            self._audio_stream = audio_stream

    def write_frames(self, frames: Any) -> None:
        """Append frames: (N, H, W, 3) or (H, W, 3) uint8 BGR, numpy or torch (any device).

        They go to the host, and libswscale converts them to yuv420p."""
        if self._closed:
            raise ValueError("write to a closed VideoWriter")
        batch = _as_frame_batch(frames)
        pad_h, pad_w = batch.shape[1] % 2, batch.shape[2] % 2
        if pad_h or pad_w:
            batch = np.pad(batch, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        av = self._av
        self._write(batch, lambda image: av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p"))

    def write_i420(self, planes: Any) -> None:
        """Append frames already in yuv420p (`talkrt.runtime.yuv.bgr_to_i420`): (N, 3*H/2, W)
        uint8, H and W even, numpy or torch (any device)."""
        if self._closed:
            raise ValueError("write to a closed VideoWriter")
        if hasattr(planes, "detach") and hasattr(planes, "cpu"):
            planes = planes.detach().cpu().numpy()
        planes = np.ascontiguousarray(planes)
        if planes.dtype != np.uint8 or planes.ndim != 3 or planes.shape[1] % 3 or planes.shape[1] * 2 // 3 % 2 or planes.shape[2] % 2 or 0 in planes.shape[1:]:
            raise ValueError(f"yuv420p planes must be (N, 3*H/2, W) uint8 with H and W even, got {planes.dtype} {tuple(planes.shape)}")
        self._write(planes, lambda image: self._av.VideoFrame.from_ndarray(image, format="yuv420p"))

    def _write(self, images: np.ndarray, to_frame: Callable[[np.ndarray], Any]) -> None:
        """Encode host images (BGR frames or yuv420p planes) through ``to_frame``, then the audio so far."""
        with self._lock:
            self._write_locked(images, to_frame)

    def _write_locked(self, images: np.ndarray, to_frame: Callable[[np.ndarray], Any]) -> None:
        count = len(images)
        height, width = images.shape[1], images.shape[2]
        if images.ndim == 3:  # yuv420p planes: (3*H/2, W)
            height = height * 2 // 3
        if self._video_stream is None:
            self._open_streams(height, width)
        elif (height, width) != (self.height, self.width):
            self.abort()
            raise ValueError(f"frame size changed from {self.width}x{self.height} to {width}x{height}")
        if (
            self.expect_exact
            and self.expected_frames is not None
            and self.frames_written + count > self.expected_frames
        ):
            self.abort()
            raise TalkrtError(
                f"{self.path}: more video frames than the audio allows ({self.frames_written + count} > "
                f"{self.expected_frames} at {self.fps} fps); nothing was written"
            )
        av = self._av
        try:
            for image in images:
                frame = to_frame(image)
                frame.pts = self.frames_written
                frame.time_base = self._video_stream.codec_context.time_base
                self._container.mux(self._video_stream.encode(frame))
                self.frames_written += 1
            self._keep_audio_level()
        except (av.FFmpegError, OSError) as error:
            self.abort()
            raise TalkrtError(f"cannot write {self.path}: {_one_line(error)}") from error

    # ----------------------------------------------------------------- audio

    def append_audio(self, samples: Any) -> None:
        """Add samples to the end of a streamed track (``audio_follows=True``): 1-D float, numpy or
        torch (any device); they are muxed as soon as the video written reaches them."""
        if self._closed:
            raise ValueError("append to a closed VideoWriter")
        if self.audio_complete:
            raise ValueError("this VideoWriter's audio track is complete: construct it with audio_follows=True to append audio")
        with self._lock:
            self._add_audio(samples)
            try:
                self._keep_audio_level()
            except (self._av.FFmpegError, OSError) as error:
                self.abort()
                raise TalkrtError(f"cannot write {self.path}: {_one_line(error)}") from error

    def _add_audio(self, samples: Any) -> None:
        if hasattr(samples, "detach") and hasattr(samples, "cpu"):
            samples = samples.detach().cpu().numpy()
        samples = np.asarray(samples)
        if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
            raise ValueError(f"audio must be a 1-D float waveform, got {samples.dtype} {tuple(samples.shape)}")
        samples = np.clip(samples.astype(np.float32), -1.0, 1.0)
        self.audio_samples += len(samples)
        if self._direct:
            self._unsent = np.concatenate([self._unsent, samples]) if len(self._unsent) else samples
        else:
            self._unresampled.append(samples)

    def _end_audio(self) -> None:
        """The track is complete: its length fixes the frame count; a rate AAC lacks is resampled now."""
        from talkrt.runtime.align import num_video_frames

        self.audio_complete = True
        self.expected_frames = num_video_frames(self.audio_samples, self.fps, self.sample_rate)
        if self._unresampled:
            whole = np.concatenate(self._unresampled)
            self._unresampled = []
            self._unsent = np.clip(_resample(whole, self.sample_rate, _AAC_FALLBACK_RATE), -1.0, 1.0)

    def _keep_audio_level(self) -> None:
        """Encode the audio up to where the video written so far ends (interleaving)."""
        if self._audio_stream is not None:
            from talkrt.runtime.align import frame_start_sample

            self._send_audio(frame_start_sample(self.frames_written, self.fps, self._encoded_rate))

    def _send_audio(self, until: Optional[int] = None) -> None:
        """Encode the audio up to sample `until` (None: all of it) in whole AAC frames, and the
        shorter last frame once the track is complete."""
        frame_size = self._audio_stream.codec_context.frame_size or 1024
        av = self._av
        while len(self._unsent):
            count = min(frame_size, len(self._unsent))
            if (count < frame_size and not self.audio_complete) or (until is not None and self._audio_sent + count > until):
                break
            block, self._unsent = self._unsent[:count], self._unsent[count:]
            frame = av.AudioFrame.from_ndarray(block[None, :].copy(), format="fltp", layout="mono")
            frame.sample_rate = self._encoded_rate
            frame.pts = self._audio_sent
            frame.time_base = Fraction(1, self._encoded_rate)
            self._container.mux(self._audio_stream.encode(frame))
            self._audio_sent += count


# --------------------------------------------------------------------------- streaming


@dataclass
class FrameChunk:
    """Video frame `index` and exactly the audio samples it covers, [s_index, s_index+1)."""

    index: int
    frame: Any  # (H, W, 3) uint8 BGR, numpy or torch, as given
    audio: Any  # 1-D slice of the audio, numpy or torch, as given

    def __iter__(self):  # so `for index, frame, audio in iter_av_chunks(...)` works
        return iter((self.index, self.frame, self.audio))


def iter_av_chunks(
    frames_iter: Iterable[Any], audio: Any, rate: int, fps: Any, *, strict: bool = True
) -> Iterator[FrameChunk]:
    """Pair each video frame with its own audio slice, for streaming consumers.

    Frame k gets audio[s_k : s_{k+1}] with s_k = frame_start_sample(k, fps, rate)
    (integer anchors, no drift), the last frame's slice ending at the end of the
    audio, so the slices concatenate back to the audio exactly. `frames_iter`
    yields single frames (H, W, 3) or batches (N, H, W, 3); frames are passed
    through unchanged (no copy, no device transfer). With `strict`, a frame count
    other than num_video_frames(len(audio), fps, rate) raises TalkrtError (too
    many: as soon as the extra frame arrives; too few: when the frames run out).
    """
    from talkrt.runtime.align import as_fps, frame_start_sample, num_video_frames

    rate = int(rate)
    exact_fps = as_fps(fps)
    total = len(audio)
    expected = num_video_frames(total, exact_fps, rate)
    index = 0
    start = 0
    for item in frames_iter:
        frames = item if getattr(item, "ndim", 3) == 4 else (item,)
        for frame in frames:
            if strict and index >= expected:
                raise TalkrtError(f"more video frames than the audio allows: frame {index} >= {expected} at {exact_fps} fps")
            end = min(frame_start_sample(index + 1, exact_fps, rate), total)
            yield FrameChunk(index, frame, audio[start:end])
            start = end
            index += 1
    if strict and index != expected:
        raise TalkrtError(f"{index} video frames for {total} audio samples at {rate} Hz; expected {expected} at {exact_fps} fps")


# --------------------------------------------------------------------------- probe


def probe(path: str | os.PathLike) -> dict:
    """What a media file holds, without decoding it.

    Keys: format, duration (s, container), video_codec, width, height, pix_fmt,
    fps (Fraction), num_frames, video_duration (s), audio_codec, audio_rate,
    audio_channels, audio_duration (s). Keys of a missing stream are None.
    num_frames comes from the container's index, or from counting packets.
    """
    av = _av()
    path = Path(path)
    _require_file(path, "media file")
    info: dict[str, Any] = {
        "path": str(path),
        "format": None,
        "duration": None,
        "video_codec": None,
        "width": None,
        "height": None,
        "pix_fmt": None,
        "fps": None,
        "num_frames": None,
        "video_duration": None,
        "audio_codec": None,
        "audio_rate": None,
        "audio_channels": None,
        "audio_duration": None,
    }
    try:
        with av.open(str(path)) as container:
            info["format"] = container.format.name
            if container.duration is not None:
                info["duration"] = float(Fraction(container.duration, av.time_base))
            if container.streams.video:
                video = container.streams.video[0]
                info["video_codec"] = video.codec_context.name
                info["width"] = video.codec_context.width
                info["height"] = video.codec_context.height
                info["pix_fmt"] = video.codec_context.pix_fmt
                info["fps"] = _stream_fps(video)
                if video.duration is not None and video.time_base is not None:
                    info["video_duration"] = float(video.duration * video.time_base)
                frames = video.frames
                if not frames:
                    frames = sum(1 for packet in container.demux(video) if packet.size)
                info["num_frames"] = int(frames)
            if container.streams.audio:
                audio = container.streams.audio[0]
                info["audio_codec"] = audio.codec_context.name
                info["audio_rate"] = audio.codec_context.sample_rate
                info["audio_channels"] = audio.codec_context.channels
                if audio.duration is not None and audio.time_base is not None:
                    info["audio_duration"] = float(audio.duration * audio.time_base)
    except (av.FFmpegError, OSError, ValueError, EOFError) as error:
        raise TalkrtError(f"cannot read {path}: {_one_line(error)}") from error
    return info


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, sample_format: str = "pcm16") -> Path:
    """Mono float audio in [-1, 1] as a WAV file (PCM16 or float32), written atomically."""
    from talkrt.fileio import write_bytes_atomic
    from talkrt.runtime.audio import wav_bytes

    write_bytes_atomic(path, wav_bytes(audio, sample_rate, sample_format))
    return Path(path)
