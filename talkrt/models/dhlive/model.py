"""DH_live (kleinlee/DH_live at 642192e): the ``DINet_five_Ref(6, 30)`` renderer and
the ``Audio2Feature`` LSTM, key for key compatible with ``checkpoint/render.pth``
and ``checkpoint/audio.pkl``.

Renderer
    The original keeps state between calls: ``ref_input(ref)`` caches
    ``ref_in_feature`` (``ref_in_conv(ref)``) and ``ref_trans_feature0``
    (``appearance_conv_list[0]`` of it); ``interface(source_img, source_prompt)``
    concatenates the two 3-channel images and renders one frame. Here the same
    computation is two pure functions, :meth:`DINetFiveRef.encode_reference` (once
    per avatar) and :meth:`DINetFiveRef.generate` (per frame), whose composition is
    the original ``forward`` operation for operation. The only change is AdaAT's
    5-D ``grid_sample``, replaced by the exact 4-D rewrite of ``talkrt.models.dinet.adaat``.

    Inputs are 256x256 crops in [0, 1], channels in cv2's BGR order:
    ``source`` (B, 6) = the face with the lower face (nose edge to jaw) filled
    black, then the drawn prompt (the PCA "mouth pixel" image warped onto the face
    plus nose and eye lines); ``reference`` (B, 30) = 5 x (face crop + its
    landmark drawing).

Audio model
    ``Audio2Feature``: two 80-bin kaldi fbank frames (50 ms window, 20 ms shift, so
    160 values per 25 fps video frame) -> Linear/BN/LeakyReLU/Linear -> 2-layer LSTM
    (192) -> MLP -> 6 PCA coefficients of the 15x30x3 mouth image. The original
    ``forward`` reshapes with ``int(T / 2)``, a Python int that a trace bakes in;
    :class:`Audio2Feature` reshapes with -1 instead (same numbers), and
    :class:`Audio2FeatureFrame` is the streaming form, one video frame per call
    with the LSTM state passed in and out.

Checkpoints
    ``render.pth`` is a plain state_dict; training checkpoints hold it at
    ``ckpt['state_dict']['net_g']`` (no DataParallel prefix); ``audio.pkl`` is a
    plain state_dict saved with ``torch.save``. DH_live_mini checkpoints (v1:
    ``DINet_mini`` with AdaAT, v2: ``motion_encoder``/``decoder_blocks``) are
    different networks and are refused with a one-line error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkrt.errors import TalkrtError
from talkrt.models.dinet.adaat import AdaAT
from talkrt.models.dinet.blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d

IMAGE_SIZE = 256
SOURCE_CHANNELS = 6  # face with the lower face black (3) + drawn prompt (3)
N_REF = 5
REF_CHANNELS = 6 * N_REF  # 5 x (face crop + landmark drawing)
FEATURE_SIZE = IMAGE_SIZE // 4  # ref/source encoders downsample twice
REF_FEATURE_CHANNELS = 256

FBANK_BINS = 80
FBANK_FRAMES_PER_VIDEO_FRAME = 2  # 20 ms fbank shift, 40 ms per 25 fps video frame
LSTM_HIDDEN = 192
LSTM_LAYERS = 2
N_COEFFS = 6  # PCA coefficients of the 15x30x3 mouth image
FPS = 25
SAMPLE_RATE = 16000

SUPPORTED = "talkrt supports the original DH_live render.pth"


# ----------------------------------------------------------------------------- audio


class Audio2Feature(nn.Module):
    """``talkingface/models/audio2bs_lstm.py::Audio2Feature`` (keys ``downsample.*``, ``LSTM.*``, ``fc.*``).

    ``forward(fbank (B, 2T, 80), h0 (2, B, 192), c0 (2, B, 192))`` ->
    ``(coefficients (B, T, 6), hn, cn)``: the original's whole-utterance call.
    """

    def __init__(self) -> None:
        super().__init__()
        hidden = FBANK_BINS
        self.downsample = nn.Sequential(
            nn.Linear(hidden * FBANK_FRAMES_PER_VIDEO_FRAME, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
        )
        self.LSTM = nn.LSTM(input_size=hidden, hidden_size=LSTM_HIDDEN, num_layers=LSTM_LAYERS, dropout=0, bidirectional=False, batch_first=True)
        self.fc = nn.Sequential(
            nn.Linear(LSTM_HIDDEN, 256),
            nn.BatchNorm1d(256),
            nn.LeakyReLU(0.2),
            nn.Linear(256, 256),
            nn.BatchNorm1d(256),
            nn.LeakyReLU(0.2),
            nn.Linear(256, N_COEFFS),
        )

    def forward(self, fbank: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = fbank.shape[0]
        pairs = fbank.reshape(-1, FBANK_BINS * FBANK_FRAMES_PER_VIDEO_FRAME)  # consecutive fbank frames of one item
        down = self.downsample(pairs).reshape(batch, -1, FBANK_BINS)
        output, (hn, cn) = self.LSTM(down, (h0, c0))
        coefficients = self.fc(output.reshape(-1, LSTM_HIDDEN)).reshape(batch, -1, N_COEFFS)
        return coefficients, hn, cn

    @staticmethod
    def initial_state(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The zero LSTM state the original starts every utterance (and ``reset``) with."""
        zeros = torch.zeros(LSTM_LAYERS, batch, LSTM_HIDDEN)
        return zeros, zeros.clone()


class Audio2FeatureFrame(nn.Module):
    """One 25 fps video frame of :class:`Audio2Feature` (``AudioModel.interface_frame``).

    ``forward(fbank (B, 2, 80) or (B, 1, 160), h (2, B, 192), c (2, B, 192))`` ->
    ``(coefficients (B, 6), h', c')``. Fed frame by frame with the state passed
    back, it equals the whole-utterance forward.
    """

    def __init__(self, model: Audio2Feature) -> None:
        super().__init__()
        self.model = model

    def forward(self, fbank: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        down = self.model.downsample(fbank.flatten(1)).unsqueeze(1)  # (B, 1, 80)
        output, (hn, cn) = self.model.LSTM(down, (h, c))
        return self.model.fc(output[:, 0]), hn, cn

# ----------------------------------------------------------------------------- renderer


class DINetFiveRef(nn.Module):
    """``talkingface/models/DINet.py::DINet_five_Ref(source_channel=6, ref_channel=30)``.

    ``forward(source (B, 6, 256, 256), reference (B, 30, 256, 256))`` -> (B, 3, 256, 256)
    is the original ``forward(source_img, source_prompt, ref_img)`` with the two
    source images already concatenated (``interface`` concatenates them first).
    For streaming use :meth:`encode_reference` once and :meth:`generate` per frame.
    """

    def __init__(self, source_channel: int = SOURCE_CHANNELS, ref_channel: int = REF_CHANNELS) -> None:
        super().__init__()
        self.source_in_conv = nn.Sequential(
            SameBlock2d(source_channel, 32, kernel_size=7, padding=3),
            DownBlock2d(32, 64, kernel_size=3, padding=1),
            DownBlock2d(64, 128, kernel_size=3, padding=1),
        )
        self.ref_in_conv = nn.Sequential(
            SameBlock2d(ref_channel, 64, kernel_size=7, padding=3),
            DownBlock2d(64, 128, kernel_size=3, padding=1),
            DownBlock2d(128, REF_FEATURE_CHANNELS, kernel_size=3, padding=1),
        )
        # 384 = 128 source + 256 reference channels; 64x64 -> 4x4, then a global average
        self.trans_conv = nn.Sequential(
            SameBlock2d(384, 128, kernel_size=3, padding=1),
            SameBlock2d(128, 128, kernel_size=7, padding=3),
            DownBlock2d(128, 128, kernel_size=3, padding=1),  # 32
            SameBlock2d(128, 128, kernel_size=7, padding=3),
            DownBlock2d(128, 128, kernel_size=3, padding=1),  # 16
            SameBlock2d(128, 128, kernel_size=3, padding=1),
            DownBlock2d(128, 128, kernel_size=3, padding=1),  # 8
            SameBlock2d(128, 128, kernel_size=3, padding=1),
            DownBlock2d(128, 128, kernel_size=3, padding=1),  # 4
        )
        self.appearance_conv_list = nn.ModuleList(
            nn.Sequential(ResBlock2d(REF_FEATURE_CHANNELS, REF_FEATURE_CHANNELS, 3, 1), ResBlock2d(REF_FEATURE_CHANNELS, REF_FEATURE_CHANNELS, 3, 1))
            for _ in range(2)
        )
        self.adaAT = AdaAT(128, REF_FEATURE_CHANNELS)  # no audio input: the parameters come from the images alone
        self.out_conv = nn.Sequential(
            SameBlock2d(384, 128, kernel_size=3, padding=1),
            UpBlock2d(128, 128, kernel_size=3, padding=1),
            ResBlock2d(128, 128, 3, 1),
            UpBlock2d(128, 128, kernel_size=3, padding=1),
            nn.Conv2d(128, 3, kernel_size=3, padding=1),
            nn.Sigmoid(),
        )

    def encode_reference(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ref_input``: (B, 30, 256, 256) -> (``ref_in_feature``, ``ref_trans_feature0``), each (B, 256, 64, 64)."""
        ref_in_feature = self.ref_in_conv(reference)
        return ref_in_feature, self.appearance_conv_list[0](ref_in_feature)

    def generate(self, source: torch.Tensor, ref_in_feature: torch.Tensor, ref_trans_feature: torch.Tensor) -> torch.Tensor:
        """``interface`` on cached reference features: source (B, 6, 256, 256) -> image (B, 3, 256, 256) in [0, 1]."""
        source_feature = self.source_in_conv(source)
        img_para = self.trans_conv(torch.cat([source_feature, ref_in_feature], 1))
        img_para = F.adaptive_avg_pool2d(img_para, 1).flatten(1)  # global_avg2d, squeezed
        warped = self.appearance_conv_list[1](self.adaAT(ref_trans_feature, img_para))
        return self.out_conv(torch.cat([source_feature, warped], 1))

    def forward(self, source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.generate(source, *self.encode_reference(reference))


class DHLiveReferenceEncoder(nn.Module):
    """Export graph, once per avatar: reference (B, 30, 256, 256) -> (ref_in_feature, ref_trans_feature)."""

    def __init__(self, model: DINetFiveRef) -> None:
        super().__init__()
        self.model = model

    def forward(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_reference(reference)


class DHLiveGenerator(nn.Module):
    """Export graph, per frame: (source, ref_in_feature, ref_trans_feature) -> image (B, 3, 256, 256)."""

    def __init__(self, model: DINetFiveRef) -> None:
        super().__init__()
        self.model = model

    def forward(self, source: torch.Tensor, ref_in_feature: torch.Tensor, ref_trans_feature: torch.Tensor) -> torch.Tensor:
        return self.model.generate(source, ref_in_feature, ref_trans_feature)


# ----------------------------------------------------------------------------- checkpoints


def _prefixes(keys) -> set[str]:
    return {str(k).split(".", 1)[0] for k in keys}


def dhlive_mini_version(state_dict: Mapping[str, object]) -> str | None:
    """"v1" or "v2" when ``state_dict`` is a DH_live_mini ``DINet_mini`` checkpoint, else None.

    v2 (2026) has ``motion_encoder.*`` / ``decoder_blocks.*``; v1 (2025) has AdaAT
    like the original renderer but a single ``appearance_conv`` (the original has
    ``appearance_conv_list``) and 3-channel sources.
    """
    prefixes = _prefixes(state_dict)
    if prefixes & {"motion_encoder", "decoder_blocks", "appearance_encoder"}:
        return "v2"
    if "adaAT" in prefixes and "appearance_conv_list" not in prefixes:
        if "appearance_conv" in prefixes:
            return "v1"
        weight = state_dict.get("source_in_conv.0.conv.weight")
        if isinstance(weight, torch.Tensor) and weight.ndim == 4 and weight.shape[1] == 3:
            return "v1"
    return None


def _refuse_mini(state_dict: Mapping[str, object], source: str) -> None:
    version = dhlive_mini_version(state_dict)
    if version is not None:
        raise TalkrtError(f"{source}: DH_live_mini {version} checkpoint: not supported yet; {SUPPORTED}")


def read_dhlive_state_dict(checkpoint: str | os.PathLike | Mapping, trust: bool = False, source: str | None = None) -> dict[str, torch.Tensor]:
    """The weights of a DH_live file: a plain state_dict or ``ckpt['state_dict']['net_g']``."""
    from talkrt.models.checkpoints import extract_state_dict, read_checkpoint, strip_module_prefix

    source = source or (str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint")
    obj = read_checkpoint(checkpoint, trust) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    return strip_module_prefix(extract_state_dict(obj, source))


def load_dhlive_audio(checkpoint: str | os.PathLike | Mapping, trust: bool = False) -> Audio2Feature:
    """``Audio2Feature`` from ``audio.pkl`` (a plain state_dict), strictly, in eval mode."""
    from talkrt.models.checkpoints import load_strict

    source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
    state_dict = read_dhlive_state_dict(checkpoint, trust, source)
    _refuse_mini(state_dict, source)
    return load_strict(Audio2Feature(), state_dict, "dhlive-audio", source=source)


def load_dhlive_render(checkpoint: str | os.PathLike | Mapping, trust: bool = False) -> DINetFiveRef:
    """``DINetFiveRef`` from ``render.pth`` (plain state_dict) or a training checkpoint
    (``ckpt['state_dict']['net_g']``), strictly, in eval mode. DH_live_mini files are refused."""
    from talkrt.models.checkpoints import load_strict

    source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
    state_dict = read_dhlive_state_dict(checkpoint, trust, source)
    _refuse_mini(state_dict, source)
    return load_strict(DINetFiveRef(), state_dict, "dhlive-render", source=source)


# ----------------------------------------------------------------------------- mouth PCA

MOUTH_PIXELS = 15 * 30 * 3  # the PCA mouth image, 15x30 BGR


def symmetrize_mouth(vector: np.ndarray) -> np.ndarray:
    """DH_live's ``pca_process``: average each row with its mirror image, so the mouth is left-right symmetric."""
    image = np.asarray(vector, dtype=np.float64).reshape(15, 30, 3).copy()
    left = (image[:, :15] + image[:, 15:][:, ::-1]) / 2
    image[:, :15] = left
    image[:, 15:] = left[:, ::-1]
    return image.reshape(-1)


class MouthPCA:
    """The mouth-image basis of ``data/pca.pkl``: image = coefficients . components[:6] + mean, symmetrised."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, source: str = "") -> None:
        mean, components = np.asarray(mean, dtype=np.float64), np.asarray(components, dtype=np.float64)
        if mean.shape != (MOUTH_PIXELS,) or components.ndim != 2 or components.shape[0] < N_COEFFS or components.shape[1] != MOUTH_PIXELS:
            raise TalkrtError(
                f"{source or 'mouth PCA'}: expected mean ({MOUTH_PIXELS},) and components (>= {N_COEFFS}, {MOUTH_PIXELS}), "
                f"got {mean.shape} and {components.shape}"
            )
        self.mean = symmetrize_mouth(mean).astype(np.float32)
        self.components = np.stack([symmetrize_mouth(c) for c in components[:N_COEFFS]]).astype(np.float32)
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike, trust: bool = False) -> "MouthPCA":
        """``pca.pkl`` (a pickled scikit-learn PCA: needs ``trust`` and scikit-learn) or an ``.npz`` with ``mean`` and ``components``."""
        import pickle
        from pathlib import Path

        path = Path(path)
        if not path.is_file():
            raise TalkrtError(f"mouth PCA file {path} does not exist")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                if not {"mean", "components"} <= set(npz.files):
                    raise TalkrtError(f"{path}: an .npz mouth PCA needs arrays 'mean' and 'components'")
                return cls(npz["mean"], npz["components"], str(path))
        if not trust:
            raise TalkrtError(
                f"{path} is a pickle (DH_live's pca.pkl holds a scikit-learn PCA object); unpickling runs code from the file: "
                "pass --trust-checkpoint if you trust it (needs scikit-learn), or convert it once to an .npz with arrays mean and components (pca.mean_, pca.components_)"
            )
        try:
            with open(path, "rb") as handle:
                pca = pickle.load(handle)
        except ModuleNotFoundError as error:
            raise TalkrtError(f"{path}: unpickling needs {error.name}: pip install scikit-learn") from None
        except (pickle.UnpicklingError, EOFError, AttributeError) as error:
            raise TalkrtError(f"{path} is not a readable pickle: {error}") from None
        if not (hasattr(pca, "mean_") and hasattr(pca, "components_")):
            raise TalkrtError(f"{path} does not hold a PCA (no mean_ / components_)")
        return cls(pca.mean_, pca.components_, str(path))

    @classmethod
    def random(cls, seed: int = 0) -> "MouthPCA":
        """A stand-in basis: a drawn mouth (dark lips on skin) and random components, for random-weight runs."""
        rng = np.random.default_rng(seed)
        rows, cols = np.meshgrid(np.linspace(-1, 1, 15), np.linspace(-1, 1, 30), indexing="ij")
        lips = np.exp(-((rows / 0.35) ** 2 + (cols / 0.7) ** 2))
        mean = np.stack([120 - 60 * lips, 150 - 90 * lips, 200 - 80 * lips], axis=-1).reshape(-1)
        components = rng.normal(0.0, 10.0, size=(N_COEFFS, MOUTH_PIXELS))  # a coefficient of 1 moves pixels ~10 levels
        return cls(mean, components, f"random:seed={seed}")
