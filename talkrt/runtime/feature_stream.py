"""Features for audio that arrives in pieces: the stream a renderer's front end offers, the
fallback for front ends without an incremental form, and the bounded window of feature
columns the pipeline cuts frame windows from.

A feature stream turns final 16 kHz samples into final feature columns: ``push(samples)``
returns the columns the samples received so far complete (as many as the alignment's
``computable_feature_frames`` says), ``finish()`` the rest once the end is known (those
that read the right padding). The columns of every call, joined, are the offline features,
except on a sliding context (features that see their whole input), where they come close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from talkrt.runtime.align import FeatureAlignment, frame_start_sample, gather_windows


class FeatureStream(Protocol):
    state_samples: int  # the 16 kHz samples it keeps between calls

    def push(self, samples: torch.Tensor) -> torch.Tensor: ...

    def finish(self) -> torch.Tensor: ...


class PrefixFeatures:
    """A front end with no incremental form, run over the whole prefix whenever new columns
    become final; a non-streamable one (whole-utterance normalisation) runs once, at the end."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], alignment: FeatureAlignment) -> None:
        self.features, self.alignment = features, alignment
        self.pieces: list[torch.Tensor] = []
        self.received = self.emitted = 0

    @property
    def state_samples(self) -> int:
        return self.received  # the whole prefix: this is the fallback that does not stay bounded

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        if len(samples):
            self.pieces.append(samples)
            self.received += len(samples)
        computable = self.alignment.computable_feature_frames(self.received)
        return self._columns(computable if computable > self.emitted else None)

    def finish(self) -> torch.Tensor:
        return self._columns(-1)

    def _columns(self, stop: int | None) -> torch.Tensor:
        """Columns emitted .. stop (-1: all) of the features of everything received; None: none yet."""
        if stop is None or not self.received:
            return torch.empty(0, 0)
        if len(self.pieces) > 1:
            self.pieces = [torch.cat(self.pieces)]
        features = self.features(self.pieces[0])
        stop = features.shape[-1] if stop == -1 else stop
        columns, self.emitted = features[..., self.emitted : stop], max(self.emitted, stop)
        return columns


class SlidingContextFeatures:
    """Features that see their whole input, streamed on the alignment's sliding context: each
    step of ``context.step`` frames is computed on its own window of audio (talkrt.runtime.align.
    SlidingContext) as soon as the window has arrived, and only the audio later windows read is kept."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], alignment: FeatureAlignment) -> None:
        if alignment.context is None:
            raise ValueError(f"{alignment.name} declares no sliding context")
        self.features, self.alignment, self.context = features, alignment, alignment.context
        self.kept: torch.Tensor | None = None  # samples base .. received - 1
        self.base = self.received = 0
        self.emitted = 0  # feature frames returned so far

    @property
    def state_samples(self) -> int:
        return 0 if self.kept is None else self.kept.shape[-1]

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        if len(samples):
            self.kept = samples.clone() if self.kept is None else torch.cat((self.kept, samples))
            self.received += len(samples)
        return self._steps(self.context.final_frames(self.received, self.alignment), None)

    def finish(self) -> torch.Tensor:
        return self._steps(self.alignment.num_feature_frames(self.received), self.received)

    def _steps(self, stop: int, total: int | None) -> torch.Tensor:
        """The columns of frames emitted .. stop - 1, one step's window at a time."""
        pieces = []
        while self.emitted < stop:
            index = self.emitted // self.context.step
            start, end = self.context.window(index, self.alignment, total)
            columns = self.features(self.kept[start - self.base : end - self.base])
            first = self.emitted - start // self.alignment.hop
            count = min(self.context.step, stop - self.emitted)
            pieces.append(columns[..., first : first + count])
            self.emitted += count
            self._forget_before(self.context.window(index + 1, self.alignment)[0])
        return torch.cat(pieces, dim=-1) if pieces else torch.empty(0, 0)

    def _forget_before(self, sample: int) -> None:
        if sample > self.base:
            self.kept = self.kept[sample - self.base :]
            self.base = sample


class FeatureWindow:
    """The feature columns a stream still needs, addressed by their index in the whole utterance.

    Columns before the first one a future frame's window can read are dropped, so the
    window stays a few frames long however long the stream runs.
    """

    def __init__(self, alignment: FeatureAlignment, fps, sample_rate: int = 16000) -> None:
        self.alignment, self.fps, self.sample_rate = alignment, fps, sample_rate
        self.columns: torch.Tensor | None = None
        self.base = 0  # utterance index of self.columns[..., 0]

    @property
    def end(self) -> int:
        """Columns received so far."""
        return self.base + (0 if self.columns is None else self.columns.shape[-1])

    def append(self, columns: torch.Tensor) -> None:
        if columns.numel():
            self.columns = columns if self.columns is None else torch.cat((self.columns, columns), dim=-1)

    def windows(self, first: int, stop: int, total_columns: int) -> torch.Tensor:
        """(stop - first, C, window) windows of video frames first..stop-1; ``total_columns`` the
        utterance's column count when known (the clamping of the last windows), else ``end``."""
        alignment, window = self.alignment, self.alignment.window
        starts = [self._start(frame, total_columns) for frame in range(first, stop)]
        if starts and all(0 <= start and start + window <= total_columns for start in starts):
            # No window is clamped: slices joined in one copy, where the gather's index tensors
            # would cost a dozen small kernel launches per step.
            return torch.stack([self.columns[..., start - self.base : start - self.base + window] for start in starts], dim=-3)
        indices = alignment.window_indices(total_columns, stop, self.fps, self.columns.device, first)
        return gather_windows(self.columns, indices - self.base)

    def _start(self, frame: int, total_columns: int) -> int:
        """The first column of frame ``frame``'s window, as `FeatureAlignment.window_starts` puts it."""
        alignment = self.alignment
        start = frame_start_sample(frame, self.fps, alignment.sample_rate) // alignment.hop + alignment.offset
        if alignment.padding == "shift":
            start = min(max(start, 0), max(total_columns - alignment.window, 0))
        return start

    def forget_before(self, frame: int) -> None:
        """Drop the columns no window of frame ``frame`` or later reads."""
        alignment = self.alignment
        anchor = frame_start_sample(frame, self.fps, self.sample_rate) // alignment.hop + alignment.offset
        keep = max(0, min(anchor, self.end - alignment.window))  # a "shift" window at the end moves back
        if self.columns is not None and keep > self.base:
            self.columns = self.columns[..., keep - self.base :]
            self.base = keep
