"""Wav2Lip's renderer stage: 80 Hz mel windows and the masked + reference 96x96 face -> the lower face."""

from __future__ import annotations

import torch

from talkrt.engines.runners import Runner
from talkrt.models.wav2lip.alignment import WAV2LIP_MEL
from talkrt.runtime.align import FeatureAlignment
from talkrt.runtime.audio import wav2lip_mel
from talkrt.runtime.renderer_base import Renderer, batch_buffers, batch_views, static_dims, to_device_images


class Wav2LipRenderer(Renderer):
    """Wav2Lip: 80x16 mel windows and the masked + reference 96x96 face -> the lower face."""

    name = "wav2lip"
    alignment: FeatureAlignment = WAV2LIP_MEL

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.device = runner.device
        self.feature_channels = static_dims(runner, "audio_sequences")[1]  # (1, mel bins, window)
        self.crop_size = static_dims(runner, "face_sequences")[1:]
        self.face_size = self.crop_size[0]

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz -> (80, T) mel on the waveform's device."""
        return wav2lip_mel(wav16k)

    def feature_stream(self):
        """The mel piece by piece: only the new columns' samples are transformed."""
        from talkrt.runtime.incremental import StreamingWav2LipMel

        return StreamingWav2LipMel(self.device)

    def prepare(self, avatar, batch_size: int) -> None:
        """Prepare the per-avatar-frame face inputs once and allocate the batch buffers.

        Wav2Lip's reference is the same frame unmasked (inference.py), so each avatar
        frame's 6-channel input is fixed: channels 0-2 with rows 48: zeroed, 3-5 intact.
        """
        faces = to_device_images(avatar.crops, self.device).float().div_(255.0)  # BGR (M, 3, 96, 96)
        masked = faces.clone()
        masked[:, :, self.face_size // 2 :] = 0.0
        self.face_inputs = torch.cat([masked, faces], dim=1).contiguous()  # (M, 6, 96, 96)
        self.inputs = batch_buffers(self.runner, batch_size, ("audio_sequences", "face_sequences"))
        self.outputs = self.runner.allocate_outputs({k: v.shape for k, v in self.inputs.items()})

    def render(self, avatar_frames: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Faces (n, 3, 96, 96) BGR in [0, 1] for avatar frames (n,) and mel windows (n, 80, 16)."""
        count = len(avatar_frames)
        inputs, outputs = batch_views(self.inputs, count), batch_views(self.outputs, count)
        torch.index_select(self.face_inputs, 0, avatar_frames, out=inputs["face_sequences"])
        inputs["audio_sequences"].copy_(windows.unsqueeze(1))
        return self.runner.run(inputs, outputs)["generated_faces"]


def build(runner, options, context) -> Wav2LipRenderer:
    """The family's renderer factory (see talkrt.models.family): one generator graph."""
    return Wav2LipRenderer(runner("generator"))
