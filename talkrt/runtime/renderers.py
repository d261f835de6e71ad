"""Renderer stages: audio features -> face crops, one class per model family.

A renderer declares its audio feature and alignment, computes the features on
the device, and fills its runners' preallocated inputs for a batch of frames
from the avatar and the feature windows. Every renderer returns faces as
(n, 3, H, W) BGR in [0, 1] in its avatar's crop size, ready for the compositor.

* Wav2Lip: 80 Hz mel windows + the masked and reference 96x96 face
  (talkrt.models.wav2lip.renderer).
* DINet: 25 Hz 29-dim DeepSpeech-like windows (precomputed, or HuBERT-ASR CTC
  emissions through DINet_optimized's mapper) + the masked 416x320 face + 5
  fixed references; RGB in and out.
* DH_live: kaldi fbank -> Audio2Feature (LSTM, one step per video frame) -> 6 PCA
  coefficients -> mouth image -> prompt, + the masked 256x256 face and the
  reference features computed once per avatar.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from talkrt.engines.runners import Runner
from talkrt.errors import TalkrtError
from talkrt.models.wav2lip.renderer import Wav2LipRenderer
from talkrt.runtime.align import CTC_25HZ, DEEPSPEECH, DHLIVE_LSTM, FeatureAlignment

# The shared base and helpers live in renderer_base (the family packages import them from
# there); the renderers still in this module use them under their old names.
from talkrt.runtime.renderer_base import BGR
from talkrt.runtime.renderer_base import Renderer as _Renderer
from talkrt.runtime.renderer_base import batch_views as _batch_views
from talkrt.runtime.renderer_base import to_device_images as _to_device_images


# ----------------------------------------------------------------------------- DINet


class PrecomputedFeatures:
    """25 Hz, 29-dim DeepSpeech features computed elsewhere (DINet's own DeepSpeech step), (T, 29)."""

    alignment = DEEPSPEECH

    def __init__(self, features: np.ndarray | torch.Tensor, device: torch.device) -> None:
        features = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if features.dim() != 2 or features.shape[1] != 29 or len(features) == 0:
            raise TalkrtError(f"DINet features must be (frames, 29) at 25 Hz, got {tuple(features.shape)}")
        self.features = features.T.contiguous().to(device)  # (29, T)

    def samples_covered(self) -> int:
        return self.features.shape[1] * 640  # 25 Hz at 16 kHz

    def __call__(self, wav16k: torch.Tensor) -> torch.Tensor:
        expected = self.alignment.num_feature_frames(wav16k.shape[-1])
        have = self.features.shape[1]
        if abs(have - expected) > 2:
            raise TalkrtError(
                f"the DINet features cover {have / 25:.2f} s ({have} frames at 25 Hz) but the audio is "
                f"{wav16k.shape[-1] / 16000:.2f} s ({expected} frames): compute them from this audio"
            )
        return self.features


class CtcFeatures:
    """DINet_optimized's features: HuBERT-ASR CTC emissions (50 Hz, 29) every second frame -> the mapper MLP."""

    alignment = CTC_25HZ

    def __init__(self, asr: Runner, mapper: Runner, stream: torch.cuda.Stream | None = None) -> None:
        self.asr, self.mapper, self.stream = asr, mapper, stream

    def __call__(self, wav16k: torch.Tensor) -> torch.Tensor:
        inputs = {"input_values": wav16k.reshape(1, -1).float().contiguous()}
        emissions = self.asr.run(inputs, self.asr.allocate_outputs({"input_values": inputs["input_values"].shape}), self.stream)["emissions"]
        decimated = {"emissions": emissions[:, ::2].contiguous()}
        mapped = self.mapper.run(decimated, self.mapper.allocate_outputs({"emissions": decimated["emissions"].shape}), self.stream)["features"]
        return mapped[0].T  # (29, T)


class DINetRenderer(_Renderer):
    """DINet(3, 15, 29): the masked 416x320 face, 5 references and a 5-frame feature window -> the face, RGB."""

    name = "dinet"
    feature_channels = 29

    def __init__(self, runner: Runner, features) -> None:
        from talkrt.models.dinet import FACE_HEIGHT, FACE_WIDTH, MOUTH_COLS, MOUTH_ROWS

        self.runner = runner
        self.device = runner.device
        self.feature_source = features
        self.alignment: FeatureAlignment = features.alignment
        self.crop_size = (FACE_HEIGHT, FACE_WIDTH)
        self.mouth = (slice(*MOUTH_ROWS), slice(*MOUTH_COLS))

    def reset(self) -> None:
        """Nothing carried between utterances."""

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        return self.feature_source(wav16k)

    def warm_samples(self) -> int:
        if isinstance(self.feature_source, PrecomputedFeatures):
            return self.feature_source.samples_covered()
        return super().warm_samples()

    def runners(self) -> tuple[Runner, ...]:
        extra = (self.feature_source.asr, self.feature_source.mapper) if isinstance(self.feature_source, CtcFeatures) else ()
        return (self.runner, *extra)

    def bind(self, avatar, batch_size: int) -> None:
        height, width = self.crop_size
        bgr = torch.tensor(BGR, device=self.device)
        self.crops = _to_device_images(avatar.crops, self.device).index_select(1, bgr)  # RGB uint8 (M, 3, H, W)
        picks = torch.as_tensor(avatar.extras["reference_indices"], device=self.device)
        references = self.crops.index_select(0, picks).float().div_(255.0).reshape(1, -1, height, width)
        self.inputs = {
            "source_image": torch.empty(batch_size, 3, height, width, device=self.device),
            "reference_images": references.expand(batch_size, -1, -1, -1).contiguous(),  # fixed per video
            "audio_window": torch.empty(batch_size, 29, 5, device=self.device),
        }
        self.outputs = self.runner.allocate_outputs({k: v.shape for k, v in self.inputs.items()})
        self.faces = torch.empty(batch_size, 3, height, width, device=self.device)
        self._bgr = bgr

    def render(self, avatar_frames: torch.Tensor, windows: torch.Tensor, stream: torch.cuda.Stream | None = None) -> torch.Tensor:
        """Faces (n, 3, 416, 320) BGR in [0, 1] for avatar frames (n,) and feature windows (n, 29, 5)."""
        count = len(avatar_frames)
        inputs, outputs = _batch_views(self.inputs, count), _batch_views(self.outputs, count)
        source = inputs["source_image"]
        source.copy_(self.crops.index_select(0, avatar_frames)).div_(255.0)
        source[:, :, self.mouth[0], self.mouth[1]] = 0.0
        inputs["audio_window"].copy_(windows)
        generated = self.runner.run(inputs, outputs, stream)["generated_face"]
        return torch.index_select(generated, 1, self._bgr, out=self.faces[:count])


# ----------------------------------------------------------------------------- DH_live


class DHLiveRenderer(_Renderer):
    """DH_live: fbank -> LSTM -> PCA mouth image -> prompt; masked face + prompt + reference features -> face."""

    name = "dhlive"
    alignment: FeatureAlignment = DHLIVE_LSTM
    feature_channels = 6

    def runners(self) -> tuple[Runner, ...]:
        return (self.runner, self.reference_runner, self.audio_runner)

    def __init__(self, generator: Runner, reference: Runner, audio: Runner, pca, stream: torch.cuda.Stream | None = None) -> None:
        from talkrt.models.dhlive import IMAGE_SIZE

        self.runner = generator
        self.reference_runner, self.audio_runner = reference, audio
        self.device = generator.device
        self.stream = stream
        self.crop_size = (IMAGE_SIZE, IMAGE_SIZE)
        self.pca_mean = torch.as_tensor(pca.mean, device=self.device)
        self.pca_components = torch.as_tensor(pca.components, device=self.device)
        self.reset()

    # -- audio: fbank and the LSTM, one step per video frame, state carried across calls

    def reset(self) -> None:
        """Forget the LSTM steps of the previous utterance."""
        self._final_steps = 0
        self._final_coefficients = torch.empty(0, 6, device=self.device)
        self._final_state: tuple[torch.Tensor, torch.Tensor] | None = None  # (h, c) after the last final step

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz -> (6, T) PCA coefficients, T = (S + 160) // 640.

        Steps whose fbank frames are final (a streaming prefix) are kept with the
        LSTM state after them, so a growing stream runs each step once.
        """
        from talkrt.runtime.fbank import fbank

        frames = fbank(wav16k)  # (2T or 2T + 1, 80)
        total = frames.shape[0] // 2
        final = min(self.alignment.computable_feature_frames(wav16k.shape[-1]), total)
        start = min(self._final_steps, total)
        coefficients = torch.empty(total, 6, device=self.device)
        coefficients[:start] = self._final_coefficients[:start]
        # Engines read raw, aligned addresses: each step's input and output go through
        # buffers allocated once (a view into `frames` or `coefficients` sits at any offset),
        # and the LSTM state is read from one pair and written to the other in turn.
        step_in, step_out, states = self._step_buffers()
        entry = states[start % 2]  # the pair the first step reads
        for tensor, saved in zip(entry, self._final_state or (None, None)):
            if saved is None:
                tensor.zero_()
            else:
                tensor.copy_(saved)
        for step in range(start, total):
            read, write = states[step % 2], states[(step + 1) % 2]
            step_in.copy_(frames[2 * step : 2 * step + 2].unsqueeze(0))
            self.audio_runner.run({"fbank": step_in, "h0": read[0], "c0": read[1]}, {"coefficients": step_out, "hn": write[0], "cn": write[1]}, self.stream)
            coefficients[step : step + 1].copy_(step_out)
            if step + 1 == final:
                self._final_steps, self._final_state = final, (write[0].clone(), write[1].clone())
                self._final_coefficients = coefficients[:final].clone()
        return coefficients.T

    def _step_buffers(self) -> tuple[torch.Tensor, torch.Tensor, tuple[tuple[torch.Tensor, torch.Tensor], ...]]:
        """(1, 2, 80) fbank in, (1, 6) coefficients out, two (h, c) pairs of (layers, 1, hidden); allocated once."""
        if not hasattr(self, "_steps"):
            from talkrt.models.dhlive import LSTM_HIDDEN, LSTM_LAYERS

            def state() -> torch.Tensor:
                return torch.empty(LSTM_LAYERS, 1, LSTM_HIDDEN, device=self.device)

            self._steps = (torch.empty(1, 2, 80, device=self.device), torch.empty(1, 6, device=self.device), ((state(), state()), (state(), state())))
        return self._steps

    # -- video

    def bind(self, avatar, batch_size: int) -> None:
        from talkrt.runtime.avatar_dhlive import face_mask

        extras = avatar.extras
        size = self.crop_size[0]
        self.targets = _to_device_images(avatar.crops, self.device)  # BGR uint8 (M, 3, 256, 256)
        self.sources = _to_device_images(extras["sources"], self.device)
        self.lines = _to_device_images(extras["prompt_lines"], self.device)
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
        ref_features = self.reference_runner.run(ref_inputs, self.reference_runner.allocate_outputs({"reference": references.shape}), self.stream)
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

    def render(self, avatar_frames: torch.Tensor, windows: torch.Tensor, stream: torch.cuda.Stream | None = None) -> torch.Tensor:
        """Faces (n, 3, 256, 256) BGR in [0, 1] for avatar frames (n,) and coefficient windows (n, 6, 1)."""
        count = len(avatar_frames)
        inputs, outputs = _batch_views(self.inputs, count), _batch_views(self.outputs, count)
        source = inputs["source"]
        source[:, :3].copy_(self.sources.index_select(0, avatar_frames))
        source[:, 3:].copy_(self.prompts(avatar_frames, windows[:, :, 0]))
        source.div_(255.0)
        generated = self.runner.run(inputs, outputs, stream)["image"]
        # The original keeps the crop's own pixels in a 20-pixel border ramp.
        pixels = (generated * 255.0).clamp_(0, 255).trunc_()
        target = self.targets.index_select(0, avatar_frames).float()
        return (target * self.face_mask + pixels * (1 - self.face_mask)).div_(255.0)


RENDERERS = {"wav2lip": Wav2LipRenderer, "dinet": DINetRenderer, "dhlive": DHLiveRenderer}

# Each renderer's graphs: role -> (export family, spec options, file stem in an --engines directory).
RENDERER_GRAPHS: dict[str, dict[str, tuple[str, dict, str]]] = {
    "wav2lip": {"generator": ("wav2lip", {}, "wav2lip")},
    "dinet": {
        "generator": ("dinet", {}, "dinet"),
        "asr": ("hubert-asr", {}, "hubert-asr"),
        "mapper": ("dinet-mapper", {}, "dinet-mapper"),
    },
    "dhlive": {
        "generator": ("dhlive-render", {"graph": "generator"}, "dhlive-render-generator"),
        "reference": ("dhlive-render", {"graph": "reference"}, "dhlive-render-reference"),
        "audio": ("dhlive-audio", {}, "dhlive-audio"),
    },
}


def expected_graph(renderer: str, role: str) -> tuple[str, str]:
    """(family, graph) of the ONNX graph or engine that plays ``role`` for ``renderer``."""
    family, options, _ = RENDERER_GRAPHS[renderer][role]
    return family, options.get("graph", family)


def check_renderer_models(renderer: str, backend: str, models: dict) -> None:
    """Every graph file given is one ``backend`` runs and the graph its role needs: checked
    before anything loads, so a wrong file is one line with the fix."""
    from talkrt.engines.model_files import check_model_file

    if backend == "torch":
        return
    for role, path in models.items():
        if path is not None:
            check_model_file(path, backend, expected_graph(renderer, role))


def build_renderer(
    name: str,
    backend: str,
    models: Mapping[str, str | Path | None],
    device: torch.device,
    stream: torch.cuda.Stream | None = None,
    *,
    features: np.ndarray | None = None,
    pca=None,
    asr_preset: str | None = None,
    torch_dtype: torch.dtype = torch.float32,
):
    """A renderer with one runner per graph; ``models`` maps a role to an engine / ONNX file / checkpoint.

    A role without a file runs its random-weight PyTorch module (torch backend only), in
    ``torch_dtype`` (float16 for the half-precision baseline).
    DINet takes ``features`` (precomputed, (T, 29)) or runs the asr + mapper graphs;
    a random-weight asr graph is the tiny preset (its emissions mean nothing either way).
    """
    from talkrt.engines.runners import make_runner
    from talkrt.export import get_spec

    if name not in RENDERERS:
        raise TalkrtError(f"unknown renderer {name!r}; available: {', '.join(RENDERERS)}")

    def runner(role: str, **spec_options) -> Runner:
        family, options, stem = RENDERER_GRAPHS[name][role]
        spec = get_spec(family, **options, **spec_options)
        path = models.get(role)
        if backend != "torch":
            if path is None:
                raise TalkrtError(f"{name} needs its {role} graph ({stem}.{'engine' if backend == 'trt' else 'onnx'}): export it with `talkrt export {family}`")
            return make_runner(backend, path, device=device, stream=stream, expect=expected_graph(name, role))
        module = spec.build_module(str(path)) if path else spec.build_module(None, seed=0)
        return make_runner("torch", spec=spec, module=module, device=device, torch_dtype=torch_dtype)

    if name == "wav2lip":
        return Wav2LipRenderer(runner("generator"))
    if name == "dinet":
        if features is not None:
            source = PrecomputedFeatures(features, device)
        else:
            checkpoint = models.get("asr")
            preset = asr_preset or ("hubert-large-ls960-ft" if checkpoint else "tiny-hubert-asr")
            extra = {"checkpoint": str(checkpoint)} if backend == "torch" and checkpoint else {}
            source = CtcFeatures(runner("asr", preset=preset, **extra), runner("mapper"), stream)
        return DINetRenderer(runner("generator"), source)
    from talkrt.models.dhlive import MouthPCA

    if backend == "torch" and models.get("reference") is None:
        models = {**models, "reference": models.get("generator")}  # render.pth holds both halves
    return DHLiveRenderer(runner("generator"), runner("reference"), runner("audio"), pca or MouthPCA.random(), stream)
