"""The Wav2Lip generator (96x96), key for key compatible with the official
``wav2lip.pth`` and ``wav2lip_gan.pth``.

The layer tables below follow Rudrabha/Wav2Lip ``models/wav2lip.py``; module
names (``face_encoder_blocks.N.M.conv_block.{0,1}``) are kept so the official
state_dict loads strictly. Every 3x3, stride-1, same-width layer is residual in
the original; the other layers are not, which ``_stage`` encodes.
"""

from __future__ import annotations

import torch
from torch import nn

FACE_SIZE = 96
MEL_BINS = 80
MEL_WINDOW = 16


class ConvBlock(nn.Module):
    """Conv (or transposed conv) + BatchNorm, an optional identity skip, then ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int | tuple[int, int] = 1,
        padding: int = 1,
        residual: bool = False,
        transposed: bool = False,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        if transposed:
            conv: nn.Module = nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding)
        else:
            conv = nn.Conv2d(cin, cout, kernel, stride, padding)
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout))
        self.residual = residual
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def _stage(cin: int, cout: int, kernel: int, stride, padding: int, n_residual: int) -> list[ConvBlock]:
    """A down-sampling (or entry) conv followed by ``n_residual`` 3x3 residual convs."""
    layers = [ConvBlock(cin, cout, kernel, stride, padding)]
    layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)]
    return layers


def _up_stage(cin: int, cout: int, stride: int, padding: int, output_padding: int, n_residual: int) -> nn.Sequential:
    """A transposed conv followed by ``n_residual`` 3x3 residual convs."""
    layers = [ConvBlock(cin, cout, 3, stride, padding, transposed=True, output_padding=output_padding)]
    layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(n_residual)]
    return nn.Sequential(*layers)


class Wav2Lip(nn.Module):
    """Generator: (mel window, masked face + reference face) -> lower face.

    Inputs: ``audio_sequences`` (B, 1, 80, 16) mel in [-4, 4]; ``face_sequences``
    (B, 6, 96, 96) BGR in [0, 1], channels 0-2 the face with its lower half zeroed,
    3-5 the reference face. Output (B, 3, 96, 96) BGR in [0, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        # (cin, cout, kernel, stride, padding, residual layers) per encoder stage; 96 -> 1.
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(*_stage(6, 16, 7, 1, 3, 0)),  # 96
                nn.Sequential(*_stage(16, 32, 3, 2, 1, 2)),  # 48
                nn.Sequential(*_stage(32, 64, 3, 2, 1, 3)),  # 24
                nn.Sequential(*_stage(64, 128, 3, 2, 1, 2)),  # 12
                nn.Sequential(*_stage(128, 256, 3, 2, 1, 2)),  # 6
                nn.Sequential(*_stage(256, 512, 3, 2, 1, 1)),  # 3
                nn.Sequential(*_stage(512, 512, 3, 1, 0, 0), ConvBlock(512, 512, 1, 1, 0)),  # 1
            ]
        )
        # 80x16 mel -> 27x16 -> 9x6 -> 3x3 -> 1x1.
        self.audio_encoder = nn.Sequential(
            *_stage(1, 32, 3, 1, 1, 2),
            *_stage(32, 64, 3, (3, 1), 1, 2),
            *_stage(64, 128, 3, 3, 1, 2),
            *_stage(128, 256, 3, (3, 2), 1, 1),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )
        # Each decoder stage's output is concatenated with the matching encoder
        # feature map, which is why input widths are sums (e.g. 768 = 512 + 256).
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),  # 1
                _up_stage(1024, 512, 1, 0, 0, 1),  # 3
                _up_stage(1024, 512, 2, 1, 1, 2),  # 6
                _up_stage(768, 384, 2, 1, 1, 2),  # 12
                _up_stage(512, 256, 2, 1, 1, 2),  # 24
                _up_stage(320, 128, 2, 1, 1, 2),  # 48
                _up_stage(160, 64, 2, 1, 1, 2),  # 96
            ]
        )
        self.output_block = nn.Sequential(
            ConvBlock(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        skips = []
        x = face_sequences
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(audio_sequences)
        for block, skip in zip(self.face_decoder_blocks, reversed(skips)):
            x = torch.cat((block(x), skip), dim=1)
        return self.output_block(x)
