"""The DINet renderer and its feature sources.

DINet(3, 15, 29) takes 25 Hz 29-dim DeepSpeech-like windows (precomputed, or
HuBERT-ASR CTC emissions through DINet_optimized's mapper), the masked 416x320
face and 5 fixed references; RGB in and out, BGR faces returned to the compositor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkrt.engines.runners import Runner
from talkrt.errors import TalkrtError
from talkrt.models.dinet.model import MOUTH_COLS, MOUTH_ROWS
from talkrt.models.family import RendererOptions
from talkrt.models.dinet.alignment import CTC_25HZ, DEEPSPEECH
from talkrt.models.dinet.asr import TEST_PRESET, TRAINED_PRESET
from talkrt.runtime.align import FeatureAlignment
from talkrt.runtime.renderer_base import BGR, Renderer, batch_buffers, batch_views, static_dims, to_device_images


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

    def __init__(self, asr: Runner, mapper: Runner) -> None:
        self.asr, self.mapper = asr, mapper

    def __call__(self, wav16k: torch.Tensor) -> torch.Tensor:
        inputs = {"input_values": wav16k.reshape(1, -1).float().contiguous()}
        emissions = self.asr.run(inputs, self.asr.allocate_outputs({"input_values": inputs["input_values"].shape}))["emissions"]
        decimated = {"emissions": emissions[:, ::2].contiguous()}
        mapped = self.mapper.run(decimated, self.mapper.allocate_outputs({"emissions": decimated["emissions"].shape}))["features"]
        return mapped[0].T  # (29, T)


class DINetRenderer(Renderer):
    """DINet(3, 15, 29): the masked 416x320 face, 5 references and a 5-frame feature window -> the face, RGB."""

    name = "dinet"

    def __init__(self, runner: Runner, features) -> None:
        self.runner = runner
        self.device = runner.device
        self.feature_source = features
        self.alignment: FeatureAlignment = features.alignment
        self.crop_size = static_dims(runner, "source_image")[1:]
        self.feature_channels = static_dims(runner, "audio_window")[0]
        self.mouth = (slice(*MOUTH_ROWS), slice(*MOUTH_COLS))

    def features(self, wav16k: torch.Tensor) -> torch.Tensor:
        return self.feature_source(wav16k)

    def warm_samples(self) -> int:
        if isinstance(self.feature_source, PrecomputedFeatures):
            return self.feature_source.samples_covered()
        return super().warm_samples()

    def runners(self) -> tuple[Runner, ...]:
        extra = (self.feature_source.asr, self.feature_source.mapper) if isinstance(self.feature_source, CtcFeatures) else ()
        return (self.runner, *extra)

    def prepare(self, avatar, batch_size: int) -> None:
        height, width = self.crop_size
        bgr = torch.tensor(BGR, device=self.device)
        self.crops = to_device_images(avatar.crops, self.device).index_select(1, bgr)  # RGB uint8 (M, 3, H, W)
        picks = torch.as_tensor(avatar.extras["reference_indices"], device=self.device)
        references = self.crops.index_select(0, picks).float().div_(255.0).reshape(1, -1, height, width)
        self.inputs = batch_buffers(self.runner, batch_size, ("source_image", "audio_window"))
        self.inputs["reference_images"] = references.expand(batch_size, -1, -1, -1).contiguous()  # fixed per video
        self.outputs = self.runner.allocate_outputs({k: v.shape for k, v in self.inputs.items()})
        self.faces = torch.empty(batch_size, 3, height, width, device=self.device)
        self._bgr = bgr

    def render(self, avatar_frames: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Faces (n, 3, 416, 320) BGR in [0, 1] for avatar frames (n,) and feature windows (n, 29, 5)."""
        count = len(avatar_frames)
        inputs, outputs = batch_views(self.inputs, count), batch_views(self.outputs, count)
        source = inputs["source_image"]
        source.copy_(self.crops.index_select(0, avatar_frames)).div_(255.0)
        source[:, :, self.mouth[0], self.mouth[1]] = 0.0
        inputs["audio_window"].copy_(windows)
        generated = self.runner.run(inputs, outputs)["generated_face"]
        return torch.index_select(generated, 1, self._bgr, out=self.faces[:count])


@dataclass(frozen=True)
class DINetOptions(RendererOptions):
    """``features``: precomputed 25 Hz DeepSpeech features (T, 29), in place of the asr + mapper
    graphs; ``asr_preset``: the asr graph's preset for PyTorch (default: the large model when
    its checkpoint is given, else the tiny one, whose emissions mean nothing either way)."""

    features: np.ndarray | None = None
    asr_preset: str | None = None

    @classmethod
    def from_files(cls, files, trust: bool) -> "DINetOptions":
        path = files.get("features")
        return cls(features=read_features(path) if path is not None else None)

    def unused_roles(self) -> frozenset[str]:
        return frozenset({"asr", "mapper"}) if self.features is not None else frozenset()


def read_features(path) -> np.ndarray:
    """A .npy array of precomputed features, or one line saying what is wrong with the file."""
    if not Path(path).is_file():
        raise TalkrtError(f"features file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise TalkrtError(f"features file {path} is not a .npy array: {error}") from None


def build(runner, options: DINetOptions, context) -> DINetRenderer:
    """The family's renderer factory: the generator, fed by precomputed features or by the asr + mapper graphs."""
    if options.features is not None:
        source = PrecomputedFeatures(options.features, context.device)
    else:
        checkpoint = context.models.get("asr")
        preset = options.asr_preset or (TRAINED_PRESET if checkpoint else TEST_PRESET)
        extra = {"checkpoint": str(checkpoint)} if context.backend == "torch" and checkpoint else {}
        source = CtcFeatures(runner("asr", preset=preset, **extra), runner("mapper"))
    return DINetRenderer(runner("generator"), source)
