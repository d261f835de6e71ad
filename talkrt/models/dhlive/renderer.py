"""The DH_live renderer.

kaldi fbank -> Audio2Feature (LSTM, one step per video frame) -> 6 PCA
coefficients -> mouth image -> prompt, + the masked 256x256 face and the
reference features computed once per avatar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from talkrt.engines.runners import Runner
from talkrt.models.dhlive.avatar import face_mask
from talkrt.models.dhlive.model import IMAGE_SIZE, LSTM_HIDDEN, LSTM_LAYERS, MouthPCA
from talkrt.models.family import RendererOptions
from talkrt.models.dhlive.alignment import DHLIVE_LSTM
from talkrt.runtime.align import FeatureAlignment
from talkrt.runtime.renderer_base import Renderer, batch_views, to_device_images


class DHLiveRenderer(Renderer):
    """DH_live: fbank -> LSTM -> PCA mouth image -> prompt; masked face + prompt + reference features -> face."""

    name = "dhlive"
    alignment: FeatureAlignment = DHLIVE_LSTM
    feature_channels = 6

    def runners(self) -> tuple[Runner, ...]:
        return (self.runner, self.reference_runner, self.audio_runner)

    def __init__(self, generator: Runner, reference: Runner, audio: Runner, pca) -> None:
        self.runner = generator
        self.reference_runner, self.audio_runner = reference, audio
        self.device = generator.device
        self.crop_size = (IMAGE_SIZE, IMAGE_SIZE)
        self.pca_mean = torch.as_tensor(pca.mean, device=self.device)
        self.pca_components = torch.as_tensor(pca.components, device=self.device)

    # -- audio: fbank and the LSTM, one step (two fbank frames) per video frame, state carried

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz -> (6, T) PCA coefficients, T = (S + 160) // 640, every step from a zero state."""
        from talkrt.runtime.fbank import fbank

        frames = fbank(wav16k)  # (2T or 2T + 1, 80)
        return self.lstm_steps(frames[: 2 * (frames.shape[0] // 2)], None)[0]

    def feature_stream(self) -> "Audio2FeatureStream":
        return Audio2FeatureStream(self)

    def lstm_steps(self, frames: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(2n, 80) fbank frames and the (h, c) state before them (None: zeros) -> (6, n)
        coefficients and the state after them."""
        # Engines read raw, aligned addresses: each step's input and output go through
        # buffers allocated once (a view into `frames` or `coefficients` sits at any offset),
        # and the LSTM state is read from one pair and written to the other in turn.
        step_in, step_out, states = self._step_buffers()
        for tensor, saved in zip(states[0], state or (None, None)):
            if saved is None:
                tensor.zero_()
            else:
                tensor.copy_(saved)
        steps = frames.shape[0] // 2
        coefficients = torch.empty(steps, 6, device=self.device)
        for step in range(steps):
            read, write = states[step % 2], states[(step + 1) % 2]
            step_in.copy_(frames[2 * step : 2 * step + 2].unsqueeze(0))
            self.audio_runner.run({"fbank": step_in, "h0": read[0], "c0": read[1]}, {"coefficients": step_out, "hn": write[0], "cn": write[1]})
            coefficients[step : step + 1].copy_(step_out)
        after = states[steps % 2]
        return coefficients.T, (after[0].clone(), after[1].clone())

    def _step_buffers(self) -> tuple[torch.Tensor, torch.Tensor, tuple[tuple[torch.Tensor, torch.Tensor], ...]]:
        """(1, 2, 80) fbank in, (1, 6) coefficients out, two (h, c) pairs of (layers, 1, hidden); allocated once."""
        if not hasattr(self, "_steps"):
            def state() -> torch.Tensor:
                return torch.empty(LSTM_LAYERS, 1, LSTM_HIDDEN, device=self.device)

            self._steps = (torch.empty(1, 2, 80, device=self.device), torch.empty(1, 6, device=self.device), ((state(), state()), (state(), state())))
        return self._steps

    # -- video

    def prepare(self, avatar, batch_size: int) -> None:
        extras = avatar.extras
        size = self.crop_size[0]
        self.targets = to_device_images(avatar.crops, self.device)  # BGR uint8 (M, 3, 256, 256)
        self.sources = to_device_images(extras["sources"], self.device)
        self.lines = to_device_images(extras["prompt_lines"], self.device)
        self.line_mask = (self.lines > 0).any(dim=1, keepdim=True)
        self.mouth_index = torch.as_tensor(extras["mouth_index"], device=self.device)
        canvas_h, canvas_w = (int(v) for v in extras["mouth_canvas"])
        self.canvas = (canvas_h, canvas_w)
        boxes = torch.as_tensor(avatar.boxes, dtype=torch.float32, device=self.device)
        # cv2.resize of the crop box (top-left of the canvas) to 256x256 as an affine grid (half-pixel centres).
        theta = torch.zeros(len(boxes), 2, 3, device=self.device)
        theta[:, 0, 0] = theta[:, 0, 2] = (boxes[:, 2] - boxes[:, 0]) / canvas_w
        theta[:, 1, 1] = theta[:, 1, 2] = (boxes[:, 3] - boxes[:, 1]) / canvas_h
        theta[:, :, 2] -= 1.0
        self.mouth_theta = theta
        self.face_mask = torch.as_tensor(face_mask(), device=self.device)[None, None]
        references = torch.as_tensor(extras["references"], device=self.device).permute(2, 0, 1)[None].float().div_(255.0)
        ref_inputs = {"reference": references.contiguous()}
        ref_features = self.reference_runner.run(ref_inputs, self.reference_runner.allocate_outputs({"reference": references.shape}))
        self.inputs = {
            "source": torch.empty(batch_size, 6, size, size, device=self.device),
            **{name: ref_features[name].expand(batch_size, -1, -1, -1).contiguous() for name in ("ref_in_feature", "ref_trans_feature")},
        }
        self.outputs = self.runner.allocate_outputs({k: v.shape for k, v in self.inputs.items()})

    def mouth_images(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(n, 6) coefficients -> (n, 15000) grey mouth pixels, as ``generate_input_pixels`` makes them.

        PCA image -> uint8 -> cv2's BGR2GRAY (fixed-point weights) -> 150x100 bilinear ->
        contrast stretch to mean +- 60 -> uint8.
        """
        image = (coefficients @ self.pca_components + self.pca_mean).clamp_(0, 255).trunc_()
        b, g, r = image.view(-1, 15, 30, 3).unbind(-1)
        grey = torch.floor((b * 1868 + g * 9617 + r * 4899 + 8192) / 16384)
        grey = F.interpolate(grey[:, None], size=(100, 150), mode="bilinear", align_corners=False).round_()
        low = grey.mean(dim=(1, 2, 3), keepdim=True).trunc_() - 60
        return ((grey - low) * (255.0 / 120.0)).clamp_(0, 255).trunc_().flatten(1)

    def prompts(self, avatar_frames: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """(n, 3, 256, 256) prompts in 0..255: the mouth pixels placed on each frame's grid, lines on top."""
        count = len(avatar_frames)
        pixels = self.mouth_images(coefficients)
        canvas = torch.zeros(count, self.canvas[0] * self.canvas[1] + 1, device=self.device)  # + the dump slot
        canvas.scatter_(1, self.mouth_index.index_select(0, avatar_frames), pixels)
        canvas = canvas[:, :-1].view(count, 1, *self.canvas)
        grid = F.affine_grid(self.mouth_theta.index_select(0, avatar_frames), [count, 1, *self.crop_size], align_corners=False)
        mouth = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="border", align_corners=False).round_()
        lines = self.lines.index_select(0, avatar_frames).float()
        return torch.where(self.line_mask.index_select(0, avatar_frames), lines, mouth.expand(-1, 3, -1, -1))

    def render(self, avatar_frames: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Faces (n, 3, 256, 256) BGR in [0, 1] for avatar frames (n,) and coefficient windows (n, 6, 1)."""
        count = len(avatar_frames)
        inputs, outputs = batch_views(self.inputs, count), batch_views(self.outputs, count)
        source = inputs["source"]
        source[:, :3].copy_(self.sources.index_select(0, avatar_frames))
        source[:, 3:].copy_(self.prompts(avatar_frames, windows[:, :, 0]))
        source.div_(255.0)
        generated = self.runner.run(inputs, outputs)["image"]
        # The original keeps the crop's own pixels in a 20-pixel border ramp.
        pixels = (generated * 255.0).clamp_(0, 255).trunc_()
        target = self.targets.index_select(0, avatar_frames).float()
        return (target * self.face_mask + pixels * (1 - self.face_mask)).div_(255.0)


class Audio2FeatureStream:
    """DH_live's audio features piece by piece: Kaldi fbank frames as they become final, one LSTM
    step per pair, the state carried from step to step (the LSTM is causal: streaming is exact)."""

    def __init__(self, renderer: DHLiveRenderer) -> None:
        from talkrt.runtime.fbank import DHLIVE_FBANK
        from talkrt.runtime.incremental import StreamingFbank

        self.renderer = renderer
        self.fbank = StreamingFbank(DHLIVE_FBANK, renderer.device)
        self.waiting = torch.empty(0, 80, device=renderer.device)  # a frame whose pair is not final yet
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def state_samples(self) -> int:
        return self.fbank.state_samples

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        return self._steps(self.fbank.push(samples))

    def finish(self) -> torch.Tensor:
        return self._steps(self.fbank.finish())  # an odd last frame makes no step, as offline

    def _steps(self, columns: torch.Tensor) -> torch.Tensor:
        frames = torch.cat((self.waiting, columns.T)) if len(self.waiting) else columns.T
        paired = 2 * (frames.shape[0] // 2)
        self.waiting = frames[paired:]
        if not paired:
            return torch.empty(6, 0, device=self.renderer.device)
        coefficients, self.state = self.renderer.lstm_steps(frames[:paired], self.state)
        return coefficients


@dataclass(frozen=True)
class DHLiveOptions(RendererOptions):
    """``pca``: DH_live's mouth PCA (MouthPCA); None: a random stand-in."""

    pca: Any = None

    @classmethod
    def from_files(cls, files, trust: bool) -> "DHLiveOptions":
        path = files.get("pca")
        return cls(pca=MouthPCA.load(path, trust) if path is not None else None)


def build(runner, options: DHLiveOptions, context) -> DHLiveRenderer:
    """The family's renderer factory: generator, reference encoder and Audio2Feature."""
    return DHLiveRenderer(runner("generator"), runner("reference"), runner("audio"), options.pca or MouthPCA.random())
