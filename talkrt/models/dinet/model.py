"""DINet (MRzzm/DINet) at the released size, key for key compatible with
``clip_training_DINet_256mouth.pth``, plus DINet_optimized's feature mapper.

Layer tables follow ``models/DINet.py``; module names are kept so the official
generator (``ckpt['state_dict']['net_g']`` with DataParallel's ``module.``)
loads strictly. The 5-D ``grid_sample`` of the original AdaAT is replaced by
an exact 4-D rewrite (talkrt.models.dinet.adaat), so the graph exports to ONNX opset
17 and builds with TensorRT without a plugin.

Preprocessing contract (``inference.py``), applied by the caller:

* frames converted to **RGB**, scaled by 1/255 to [0, 1];
* face cropped around OpenFace landmarks 29/33 and resized to 320x416 (W x H);
* source frame: the mouth region rows 128:384, cols 32:288 set to 0;
* references: 5 crops (15 channels, RGB each), fixed for the whole video;
* audio: a (29, 5) window of 25 Hz DeepSpeech logits (frames t-2..t+2 of an
  edge-padded sequence), or DINet_optimized's mapped HuBERT-ASR emissions.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from talkrt.models.dinet.adaat import AdaAT
from talkrt.models.dinet.blocks import DownBlock1d, DownBlock2d, ResBlock1d, ResBlock2d, SameBlock1d, SameBlock2d, UpBlock2d

MOUTH_SIZE = 256
FACE_HEIGHT = MOUTH_SIZE // 2 * 3 + MOUTH_SIZE // 8  # 416
FACE_WIDTH = MOUTH_SIZE + MOUTH_SIZE // 4  # 320
MOUTH_ROWS = (MOUTH_SIZE // 2, MOUTH_SIZE // 2 + MOUTH_SIZE)  # 128:384
MOUTH_COLS = (MOUTH_SIZE // 8, MOUTH_SIZE // 8 + MOUTH_SIZE)  # 32:288
REFERENCE_FRAMES = 5
AUDIO_DIM = 29  # DeepSpeech character logits
AUDIO_WINDOW = 5  # 25 Hz frames t-2..t+2
AUDIO_PAD = 2  # edge padding of the feature sequence on each side
FEATURE_RATE = 25


def mask_mouth(source: torch.Tensor) -> torch.Tensor:
    """A copy of ``source`` (..., 416, 320) with the mouth region zeroed, as the original does."""
    masked = source.clone()
    masked[..., MOUTH_ROWS[0] : MOUTH_ROWS[1], MOUTH_COLS[0] : MOUTH_COLS[1]] = 0
    return masked


def _encoder(cin: int, widths: tuple[int, int, int]) -> nn.Sequential:
    """7x7 SameBlock2d then two stride-2 DownBlock2d: H x W -> H/4 x W/4."""
    return nn.Sequential(
        SameBlock2d(cin, widths[0], kernel_size=7, padding=3),
        DownBlock2d(widths[0], widths[1], kernel_size=3, padding=1),
        DownBlock2d(widths[1], widths[2], kernel_size=3, padding=1),
    )


class DINet(nn.Module):
    """forward(source_img (B, 3, 416, 320), ref_img (B, 15, 416, 320), audio_feature
    (B, 29, 5)) -> (B, 3, 416, 320) RGB in [0, 1]."""

    def __init__(self, source_channel: int = 3, ref_channel: int = 15, audio_channel: int = AUDIO_DIM) -> None:
        super().__init__()
        self.source_in_conv = _encoder(source_channel, (64, 128, 256))
        self.ref_in_conv = _encoder(ref_channel, (64, 128, 256))
        # (kernel, down) per block after the 512 -> 128 entry block
        trans = [SameBlock2d(512, 128, kernel_size=3, padding=1)]
        for kernel, down in ((11, False), (11, False), (3, True), (7, False), (7, False), (3, True), (3, False), (3, True), (3, False), (3, True)):
            trans.append(DownBlock2d(128, 128, 3, 1) if down else SameBlock2d(128, 128, kernel_size=kernel, padding=kernel // 2))
        self.trans_conv = nn.Sequential(*trans)
        self.audio_encoder = nn.Sequential(
            SameBlock1d(audio_channel, 128, kernel_size=5, padding=2),
            ResBlock1d(128, 128, 3, 1),
            DownBlock1d(128, 128, 3, 1),
            ResBlock1d(128, 128, 3, 1),
            DownBlock1d(128, 128, 3, 1),
            SameBlock1d(128, 128, kernel_size=3, padding=1),
        )
        self.appearance_conv_list = nn.ModuleList([nn.Sequential(*(ResBlock2d(256, 256, 3, 1) for _ in range(4))) for _ in range(2)])
        self.adaAT = AdaAT(256, 256)
        self.out_conv = nn.Sequential(
            SameBlock2d(512, 128, kernel_size=3, padding=1),
            UpBlock2d(128, 128, kernel_size=3, padding=1),
            ResBlock2d(128, 128, 3, 1),
            UpBlock2d(128, 128, kernel_size=3, padding=1),
            nn.Conv2d(128, 3, kernel_size=7, padding=3),
            nn.Sigmoid(),
        )
        self.global_avg2d = nn.AdaptiveAvgPool2d(1)
        self.global_avg1d = nn.AdaptiveAvgPool1d(1)

    def forward(self, source_img: torch.Tensor, ref_img: torch.Tensor, audio_feature: torch.Tensor) -> torch.Tensor:
        source_feature = self.source_in_conv(source_img)
        ref_feature = self.ref_in_conv(ref_img)
        img_para = self.global_avg2d(self.trans_conv(torch.cat([source_feature, ref_feature], 1))).flatten(1)
        audio_para = self.global_avg1d(self.audio_encoder(audio_feature)).flatten(1)
        trans_para = torch.cat([img_para, audio_para], 1)
        ref_trans = self.appearance_conv_list[0](ref_feature)
        ref_trans = self.adaAT(ref_trans, trans_para)
        ref_trans = self.appearance_conv_list[1](ref_trans)
        return self.out_conv(torch.cat([source_feature, ref_trans], 1))


class DINetMapper(nn.Module):
    """DINet_optimized's ``_Wav2vecDS``: maps 25 Hz HuBERT-ASR CTC emissions (29
    classes) to DeepSpeech-like features. (B, frames, 29) -> (B, frames, 29)."""

    def __init__(self, dim: int = AUDIO_DIM, hidden: int = 512) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, hidden)
        self.fc4 = nn.Linear(hidden, dim)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        x = self.relu(self.fc3(x))
        return self.fc4(x)


def load_dinet(path: str | os.PathLike | dict, trust: bool = False) -> DINet:
    """DINet(3, 15, 29) from ``clip_training_DINet_256mouth.pth`` (or any container
    holding its generator state_dict, with or without ``module.``), strictly."""
    from talkrt.models.checkpoints import load_strict

    return load_strict(DINet(), path, "dinet", trust)  # type: ignore[return-value]


def random_dinet(seed: int = 0) -> DINet:
    from talkrt.models.random_init import random_model

    return random_model(DINet, seed)


def load_mapper(path: str | os.PathLike | dict, trust: bool = False) -> DINetMapper:
    """DINet_optimized's ``asserts/wav2vecDS.pt`` (a plain state_dict, keys fc1..fc4), strictly."""
    from talkrt.models.checkpoints import load_strict

    return load_strict(DINetMapper(), path, "dinet-mapper", trust)  # type: ignore[return-value]


def random_mapper(seed: int = 0) -> DINetMapper:
    from talkrt.models.random_init import random_model

    return random_model(DINetMapper, seed)


__all__ = [
    "DINet",
    "DINetMapper",
    "load_dinet",
    "load_mapper",
    "random_dinet",
    "random_mapper",
    "mask_mouth",
    "FACE_HEIGHT",
    "FACE_WIDTH",
    "MOUTH_ROWS",
    "MOUTH_COLS",
]
