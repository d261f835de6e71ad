"""What every renderer shares: the runner lifecycle and capture facts (`Renderer`) and the
helpers that fill preallocated batch buffers from avatar images.

The family renderers (talkrt.models.<family>.renderer, and runtime/renderers.py until
they all move) subclass `Renderer`; this module imports no family and no pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from talkrt.engines.runners import Runner

BGR = (2, 1, 0)  # the same index turns RGB into BGR and back


def batch_views(buffers: Mapping[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` rows of each buffer (the last, partial batch reuses the same memory)."""
    return {name: tensor if len(tensor) == count else tensor[:count] for name, tensor in buffers.items()}


def to_device_images(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(M, H, W, C) uint8 host images -> (M, C, H, W) uint8 on the device, contiguous."""
    return torch.as_tensor(np.ascontiguousarray(images), device=device).permute(0, 3, 1, 2).contiguous()


class Renderer:
    """What every renderer shares: its runners' lifecycle and capture facts."""

    runner: Runner  # the generator, run once per batch
    feature_channels: int  # C of the (n, C, window) feature windows render() takes

    @property
    def batch_runners(self) -> tuple[Runner, ...]:
        """The runners render() calls (they decide whether the batch can be captured)."""
        return (self.runner,)

    def runners(self) -> tuple[Runner, ...]:
        return self.batch_runners

    def release(self) -> None:
        for runner in self.runners():
            runner.release()

    def warm_samples(self) -> int:
        """How much 16 kHz audio the GPU warm-up feeds features() (any length will do, unless the
        features were given for one utterance)."""
        return 16000
