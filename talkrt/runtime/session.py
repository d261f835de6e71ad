"""A live session on one pipeline: audio pushed as it arrives, frames pulled with their
presentation times and the audio they show, utterance after utterance.

One integer clock runs from the session's start to its end: the sample index at the
rate the audio comes in. An utterance starts on a frame boundary; its frame k is shown
at ``start + floor(k * rate / fps)`` (no float time anywhere), and each batch of frames
comes with exactly the input samples from its first frame's time to the next frame's,
so the offset between audio and video is 0 samples at every frame, however long the
session runs. At the end of an utterance its last frame's audio is padded with
silence up to the next frame boundary, where the next utterance starts.

Digital silence is shown as silence: a frame whose window of audio holds only exact
zeros is the avatar's own frame, not the generator's guess (a model fed silence still
moves the lips a little; between utterances the face should rest).

Nothing waits in an unbounded queue: ``push`` returns the frames its chunk completed; the
audio kept is only what the frames not yet shown will carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from talkrt.errors import TalkrtError
from talkrt.runtime.align import frame_start_sample, num_video_frames
from talkrt.runtime.pipeline import Audio, DueFrames, Pipeline, Utterance


@dataclass(frozen=True)
class Frames:
    """Session frames ``first .. first + n - 1``: ``images`` (n, H, W, 3) uint8 BGR on the pipeline's
    device (the session's own copy: a push may complete several of the pipeline's batches, which
    reuse one buffer), ``pts`` (n,) their times on the session clock, ``audio`` the input samples
    from ``pts[0]`` to the next frame's time."""

    first: int
    images: torch.Tensor
    pts: np.ndarray
    audio: np.ndarray


class _Sound:
    """Where an utterance's input is not digital silence: runs [start, end) of non-zero samples,
    kept only as far back as a frame not yet shown can read."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def add(self, offset: int, samples: np.ndarray) -> None:
        loud = np.flatnonzero(samples)
        if not len(loud):
            return
        gaps = np.flatnonzero(np.diff(loud) > 1)
        for start, end in zip(np.r_[loud[0], loud[gaps + 1]] + offset, np.r_[loud[gaps], loud[-1]] + 1 + offset):
            if self.runs and self.runs[-1][1] == start:
                self.runs[-1][1] = int(end)
            else:
                self.runs.append([int(start), int(end)])

    def any(self, start: int, end: int) -> bool:
        return any(run_start < end and run_end > start for run_start, run_end in self.runs)

    def forget_before(self, sample: int) -> None:
        self.runs = [run for run in self.runs if run[1] > sample]


class Session:
    """``push(chunk)`` -> frames, ``flush()`` at the end of an utterance, ``reset()`` to drop one
    (an interruption); the pipeline, its buffers and its captured graphs stay built.
    ``idle_on_silence``: frames of digital silence show the avatar as it is."""

    def __init__(self, pipeline: Pipeline, sample_rate: int, idle_on_silence: bool = True) -> None:
        if sample_rate <= 0:
            raise TalkrtError(f"sample rate must be positive, got {sample_rate}")
        self.pipeline, self.sample_rate, self.idle_on_silence = pipeline, sample_rate, idle_on_silence
        self._sound = _Sound()
        self.frames_shown = 0  # session frames returned so far
        self.utterance_start = 0  # session sample (and frame) where the current utterance starts
        self.utterance_frame = 0
        self._utterance = None
        self._pending: list[tuple[int, torch.Tensor]] = []  # (utterance frame, images) waiting for their audio
        self._audio = np.zeros(0, np.float32)  # the utterance's input samples from the first frame not yet shown
        self._audio_start = 0  # utterance sample index of self._audio[0]

    @property
    def clock(self) -> int:
        """The session time (input samples) at which the next frame is shown."""
        return self.utterance_start + frame_start_sample(self.frames_shown - self.utterance_frame, self.pipeline.fps, self.sample_rate)

    def state_sizes(self) -> dict[str, int]:
        """What the session holds between calls (see `Utterance.state_sizes`), plus the audio and
        frames waiting to be shown: bounded, however long the session runs."""
        sizes = self._utterance.state_sizes() if self._utterance else {"resampler_samples": 0, "feature_samples": 0, "feature_columns": 0}
        return {**sizes, "audio_samples": len(self._audio), "waiting_frames": sum(len(images) for _, images in self._pending)}

    def push(self, chunk: Audio) -> list[Frames]:
        """The frames ``chunk`` (float32 mono at the session's rate) completes; on a GPU they are
        ready for the caller's stream."""
        with self.pipeline.handoff():
            return self._render(self.prepare(chunk), final=False)

    def flush(self) -> list[Frames]:
        """End of the utterance: its last frames, the last one's audio padded with silence to the
        next frame boundary, where the next utterance will start."""
        if self._utterance is None:
            return []
        with self.pipeline.handoff():
            return self._render(self.prepare(None), final=True)

    def prepare(self, chunk: Audio | None, defer_features: bool = False) -> DueFrames | Utterance | None:
        """``push`` (``chunk``) or ``flush`` (None) up to the renderer: the frames due, whose images
        ``complete`` takes (talkrt.runtime.batching renders several sessions' frames at once).
        ``defer_features``: see ``Utterance.step`` (the batcher computes the features of all sessions at once)."""
        if chunk is None:
            return self._utterance.step(None, defer_features) if self._utterance is not None else None
        if self._utterance is None:
            self._utterance = self.pipeline.utterance(self.sample_rate, avatar_start=self.frames_shown)
        host = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk, dtype=np.float32)
        host = host.astype(np.float32, copy=False).reshape(-1)
        due = self._utterance.step(chunk, defer_features)  # checks the chunk before anything is kept
        self._sound.add(self._audio_start + len(self._audio), host)
        self._audio = np.concatenate((self._audio, host))
        return due

    def complete(self, due: DueFrames | None, images: torch.Tensor | None, final: bool) -> list[Frames]:
        """The frames of a ``prepare``d step, given the images rendered for ``due`` (the session's
        own tensor); ``final`` after ``prepare(None)``: the utterance ends here."""
        out = self._deliver([] if due is None else [(due.start, images)], final)
        if final:
            self._next_utterance()
        return out

    def _render(self, due: DueFrames | None, final: bool) -> list[Frames]:
        images = None if due is None else self.pipeline.render_frames(due.avatar_index, due.windows)
        return self.complete(due, images, final)

    def reset(self) -> None:
        """Drop the utterance in progress (a new one interrupts it); the clock goes on from the
        frames already shown."""
        self._next_utterance()

    def _next_utterance(self) -> None:
        self.utterance_start, self.utterance_frame = self.clock, self.frames_shown
        self._utterance, self._pending, self._sound = None, [], _Sound()
        self._audio, self._audio_start = np.zeros(0, np.float32), 0

    def _deliver(self, batches: list[tuple[int, torch.Tensor]], final: bool) -> list[Frames]:
        """Frames whose audio has all arrived (at the end: all, the audio padded with silence). A
        frame can be ready before the end of its own audio (a short lookahead at a low frame
        rate): it waits for the next chunk."""
        out = []
        queue, self._pending = self._pending + batches, []
        for start, images in queue:
            if self._pending:
                self._pending.append((start, images))
                continue
            count = self._complete(start, len(images)) if not final else len(images)
            if count:
                out.append(self._frames(start, images[:count]))
            if count < len(images):
                self._pending.append((start + count, images[count:]))
        return out

    def _complete(self, start: int, count: int) -> int:
        """How many of utterance frames start.. have all their audio received."""
        # Frame k's audio ends where frame k + 1 starts; frames 0 .. num_video_frames(received + 1) - 1
        # start at or before sample ``received``.
        received = self._audio_start + len(self._audio)
        return min(count, max(0, num_video_frames(received + 1, self.pipeline.fps, self.sample_rate) - 1 - start))

    def _frames(self, start: int, images: torch.Tensor) -> Frames:
        fps, rate = self.pipeline.fps, self.sample_rate
        starts = [frame_start_sample(start + i, fps, rate) for i in range(len(images) + 1)]  # utterance samples
        audio = self._audio[starts[0] - self._audio_start : starts[-1] - self._audio_start]
        audio = np.concatenate((audio, np.zeros(starts[-1] - starts[0] - len(audio), np.float32)))  # silence after the end
        self._audio = self._audio[starts[-1] - self._audio_start :]
        self._audio_start = starts[-1]
        first = self.utterance_frame + start
        if self.idle_on_silence:
            self._rest_silent_frames(start, images)
        self.frames_shown = first + len(images)
        return Frames(first, images, np.asarray(starts[:-1], dtype=np.int64) + self.utterance_start, audio)

    def _reads(self, frame: int) -> tuple[int, int]:
        """Input samples [start, end) that utterance frame ``frame``'s window can read, widened by a
        window (a window moved back at the end) and by the resampler's filter."""
        alignment, rate = self.pipeline.renderer.alignment, self.sample_rate
        anchor = frame_start_sample(frame, self.pipeline.fps, alignment.sample_rate) // alignment.hop + alignment.offset
        first = (anchor - alignment.window) * alignment.hop - alignment.left_pad
        end = (anchor + alignment.window - 1) * alignment.hop - alignment.left_pad + alignment.receptive_field
        reach = self._utterance.resampler.reach
        return first * rate // alignment.sample_rate - reach, -(-end * rate // alignment.sample_rate) + reach

    def _rest_silent_frames(self, start: int, images: torch.Tensor) -> None:
        """Frames whose window reads only digital silence become the avatar's own frames."""
        silent = [i for i in range(len(images)) if not self._sound.any(*self._reads(start + i))]
        if silent:
            # Host indices and a copy per frame (usually one): no index tensor to copy to the device.
            avatar = self.pipeline.avatar.frame_indices(self.utterance_frame + start, len(images)).tolist()
            for i in silent:
                images[i].copy_(self.pipeline.compositor.frames[avatar[i]])
        self._sound.forget_before(self._reads(start + len(images))[0])

