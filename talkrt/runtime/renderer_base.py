"""What every renderer shares: the runner lifecycle and capture facts (`Renderer`) and the
helpers that fill preallocated batch buffers from avatar images.

The family renderers (talkrt.models.<family>.renderer, and runtime/renderers.py until
they all move) subclass `Renderer`; this module imports no family and no pipeline.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import torch

from talkrt.engines.runners import Runner
from talkrt.engines.runners.base import TORCH_DTYPES
from talkrt.errors import TalkrtError
from talkrt.runtime.align import SlidingContext

BGR = (2, 1, 0)  # the same index turns RGB into BGR and back


def batch_views(buffers: Mapping[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` rows of each buffer (the last, partial batch reuses the same memory)."""
    return {name: tensor if len(tensor) == count else tensor[:count] for name, tensor in buffers.items()}


def to_device_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(M, H, W, C) uint8 host images -> (M, C, H, W) uint8 on the device, contiguous."""
    return torch.as_tensor(np.ascontiguousarray(images), device=device).permute(0, 3, 1, 2).contiguous()


def static_dims(runner: Runner, name: str) -> tuple[int, ...]:
    """The dims after the batch of input ``name``, as the graph declares them (its spec, or an
    engine's bindings): the one place a renderer learns its crop size and feature channels."""
    tensor = next(t for t in runner.io.inputs if t.name == name)
    rest = tuple(tensor.shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in rest):
        raise ValueError(f"{name} must have static dims after the batch, got {tensor.shape}")
    return rest


def batch_buffers(runner: Runner, batch_size: int, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """One buffer per named input of ``runner``: ``batch_size`` rows of its static dims, in its dtype."""
    dtypes = {t.name: t.dtype for t in runner.io.inputs}
    return {name: torch.empty(batch_size, *static_dims(runner, name), dtype=TORCH_DTYPES[dtypes[name]], device=runner.device) for name in names}


class Renderer:
    """What every renderer shares, and the lifecycle the pipeline drives:

    ``bind(avatar, batch_size, stream)`` once per avatar: every runner is activated on the
    pipeline's stream (each one's single stream from then on), then ``prepare`` fills the
    per-frame inputs and batch buffers; then ``warmup()`` on a GPU (first-call kernel loads,
    before any utterance), then per utterance ``features(wav16k)`` (the family's own audio
    front end, a stage of its own) and ``render(avatar_frames, windows)`` per batch,
    ``reset()`` between utterances, and ``release()`` at the end (the runners deactivate).
    ``capturable``: may the pipeline capture a steady batch of ``render`` in a CUDA graph
    (every runner it calls allows it). A family renderer also declares ``name``,
    ``alignment``, ``crop_size`` and ``device``.
    """

    runner: Runner  # the generator, run once per batch
    feature_channels: int  # C of the (n, C, window) feature windows render() takes

    def bind(self, avatar, batch_size: int, stream: torch.cuda.Stream | None = None) -> None:
        """Activate every runner on ``stream`` (None: the current stream), then prepare ``avatar``."""
        for runner in self.runners():
            runner.activate(stream)
        self.prepare(avatar, batch_size)

    def prepare(self, avatar, batch_size: int) -> None:
        """The avatar's per-frame inputs and ``batch_size`` rows of batch buffers (runners are active)."""
        raise NotImplementedError

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def render(self, avatar_frames: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what one utterance left behind (DH_live's LSTM state); nothing by default."""

    def feature_stream(self):
        """The features of a stream, piece by piece (see talkrt.runtime.feature_stream); by default
        ``features`` step by step on the alignment's sliding context when it declares one, else
        over the whole prefix, for front ends that have no incremental form."""
        from talkrt.runtime.feature_stream import PrefixFeatures, SlidingContextFeatures

        if self.alignment.context is not None:
            return SlidingContextFeatures(self.features, self.alignment)
        return PrefixFeatures(self.features, self.alignment)

    def use_context(self, left_ms: float, lookahead_ms: float | None = None) -> None:
        """Stream on ``left_ms`` of history (and ``lookahead_ms``, default the declared one) in
        place of the sliding context the features declare; offline runs are not affected."""
        alignment = self.alignment
        declared = alignment.context
        if declared is None:
            how = "stream exactly" if alignment.streamable else "need the whole utterance"
            raise TalkrtError(f"--stream-context-ms: the {self.name} features ({alignment.name}) {how}; there is no context to choose")
        if not (math.isfinite(left_ms) and 0 <= left_ms <= 60_000) or (lookahead_ms is not None and not (math.isfinite(lookahead_ms) and 0 <= lookahead_ms <= 10_000)):
            raise TalkrtError(f"--stream-context-ms {left_ms:g}: give 0 to 60000 ms of history (and 0 to 10000 ms of lookahead)")
        ms = alignment.sample_rate / 1000
        lookahead = declared.lookahead / ms if lookahead_ms is None else lookahead_ms
        context = SlidingContext.of_ms(left_ms, declared.step * alignment.hop / ms, lookahead, alignment.hop, alignment.sample_rate)
        self.alignment = dataclasses.replace(alignment, context=context)

    def warmup(self) -> torch.Tensor:
        """Run the features once on silence (kernel loads, FFT plans) and forget it; returns them,
        so the caller can warm what reads them."""
        features = self.features(torch.zeros(self.warm_samples(), device=self.device))
        self.reset()
        return features

    @property
    def capturable(self) -> bool:
        return all(runner.capturable for runner in self.batch_runners)

    @property
    def batch_runners(self) -> tuple[Runner, ...]:
        """The runners render() calls (they decide whether the batch can be captured)."""
        return (self.runner,)

    def runners(self) -> tuple[Runner, ...]:
        """Every runner the renderer calls (bind activates them, release deactivates them)."""
        return self.batch_runners

    def release(self) -> None:
        for runner in self.runners():
            runner.release()

    def warm_samples(self) -> int:
        """How much 16 kHz audio the GPU warm-up feeds features() (any length will do, unless the
        features were given for one utterance)."""
        return 16000
