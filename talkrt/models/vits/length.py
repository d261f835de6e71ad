"""VITS length regulation on the device: durations -> frame counts, output mask and the
frame -> token index, the prior expanded to frames by a gather. Shared by the export
graphs (the full graph) and the synthesizer (between the encoder and decoder graphs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from talkrt.errors import TalkrtError


@dataclass(frozen=True)
class LengthRegulation:
    frame_lengths: torch.Tensor  # (batch,) int64: frames per item, at least 1
    output_mask: torch.Tensor  # (batch, 1, frames) float32: 1 on each item's frames
    token_index: torch.Tensor  # (batch, frames) int64: the token of each frame; == tokens where none

    @property
    def frames(self) -> int:
        return int(self.output_mask.shape[-1])


def regulate_lengths(durations: torch.Tensor) -> LengthRegulation:
    """Frame counts, output mask and frame -> token index from ``durations`` (batch, tokens).

    ``durations`` are whole frames per token, 0 on padding (the encoder graph's
    output). Frame f of an item belongs to the first token whose cumulative
    duration exceeds f. The frame count is the one value read back to the host:
    it sizes the decoder's inputs.
    """
    if durations.dim() != 2:
        raise TalkrtError(f"durations must be (batch, tokens), got shape {tuple(durations.shape)}")
    frame_lengths = torch.clamp_min(durations.sum(dim=-1), 1).to(torch.int64)
    frames = int(frame_lengths.max())
    cumulative = torch.cumsum(durations, dim=-1).contiguous()
    positions = torch.arange(frames, device=durations.device, dtype=durations.dtype).expand(durations.shape[0], frames).contiguous()
    index = torch.searchsorted(cumulative, positions, right=True)  # number of cumulative durations <= f
    output_mask = (torch.arange(frames, device=durations.device).unsqueeze(0) < frame_lengths.unsqueeze(1)).to(torch.float32).unsqueeze(1)
    return LengthRegulation(frame_lengths, output_mask, index)


def expand_to_frames(per_token: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(batch, C, tokens) values and (batch, frames) token indices -> (batch, C, frames).

    An index equal to ``tokens`` (no token) picks an appended zero column, so the
    result equals transformers' 0/1 attention-matrix product exactly.
    """
    padded = torch.cat([per_token, torch.zeros_like(per_token[:, :, :1])], dim=2)
    return padded.gather(2, index.unsqueeze(1).expand(-1, per_token.shape[1], -1))


def expand_prior(per_token: torch.Tensor, regulation: LengthRegulation) -> torch.Tensor:
    """The prior (batch, C, tokens) expanded to (batch, C, frames), 0 beyond each item's frames."""
    return expand_to_frames(per_token, regulation.token_index) * regulation.output_mask
