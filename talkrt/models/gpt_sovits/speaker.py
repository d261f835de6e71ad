"""Speaker-verification embedding ``sv_emb`` for GPT-SoVITS v2Pro / v2ProPlus.

The Pro SoVITS adds ``sv_emb`` (B, 20480) of the reference to its style vector.
It comes from ERes2NetV2 (base width 24, scale 4, expansion 4) run on an 80-bin
Kaldi fbank of the 16 kHz reference: not the network's 192-d embedding, but the
fused stage-3/4 feature map (B, 2048, 10, T/8) flattened over channels x
frequency and averaged over time.

* ``sv_fbank``: Kaldi fbank with Kaldi's defaults (25 ms / 10 ms povey windows,
  snip_edges, DC removal, pre-emphasis 0.97, power spectrum, 20 Hz .. Nyquist,
  log floor FLT_EPSILON) and dither 0, 80 bins, no mean normalisation. The per-frame
  maths is ``talkrt.runtime.fbank``'s; only the framing (snip_edges) is done here.
* ``SpeakerEncoder``: the network, with exactly the released state_dict keys
  (``pool`` has no weights; ``seg_1`` is loaded but not used by the embedding).
* ``load_speaker_encoder``: the released ``pretrained_eres2netv2w24s4ep4.ckpt``, a
  plain state_dict, loaded strictly.
* ``speaker_embedding``: 16 kHz waveform -> ``sv_emb``.
* ``speaker_weights``: where a checkpoint directory keeps the released file (``sv/``).
* ``reference_fbank``: the fbank of a voice's reference, as the original feeds it.
* ``speaker_spec``: the ``gpt-sovits-speaker`` graph, ``features`` (1, sv_frames, 80)
  -> ``sv_emb`` (1, 20480). The fbank stays outside the graph (``sv_fbank``): its rfft
  would need ONNX's DFT, which no other graph relies on the TorchScript exporter or
  TensorRT-RTX for, and it runs once per voice, so the host computes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from talkrt.errors import TalkrtError
from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance
from talkrt.models.checkpoints import extract_state_dict, load_strict, read_checkpoint
from talkrt.runtime.fbank import FbankOptions, _fbank_of_frames

FAMILY = "gpt-sovits speaker verification (sv)"  # as in family.py's signatures, so a mismatch is not called another kind
SAMPLE_RATE = 16000
# Kaldi's fbank defaults with 80 bins; snip_edges=True keeps only whole windows.
SV_FBANK = FbankOptions(sample_rate=SAMPLE_RATE, frame_length_ms=25.0, frame_shift_ms=10.0, num_bins=80, snip_edges=True)
SV_DIM = 20480
# Where a voice directory keeps the released weights (the original's pretrained_models/sv/ layout).
SV_FOLDER = "sv"
SV_CHECKPOINT = "pretrained_eres2netv2w24s4ep4.ckpt"


@dataclass(frozen=True)
class SpeakerConfig:
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    channels: int = 64  # stem width; stage i has channels * 2**i * expansion outputs
    feat_dim: int = 80
    base_width: int = 24
    scale: int = 4
    expansion: int = 4
    embedding_size: int = 192  # seg_1's output (the network's own embedding; unused here)

    @property
    def emb_dim(self) -> int:
        """Width of ``sv_emb``: fused channels x frequency rows left after three stride-2 stages."""
        freq = self.feat_dim
        for _ in range(3):
            freq = (freq - 1) // 2 + 1
        return self.channels * 8 * self.expansion * freq


RELEASED_CONFIG = SpeakerConfig()
# Same structure (Res2 groups, attentional fusion in stages 3-4), small enough for CPU tests: sv_emb of 1280.
TINY_CONFIG = SpeakerConfig(num_blocks=(1, 1, 2, 1), channels=8, expansion=2, embedding_size=16)


def num_sv_frames(num_samples: int) -> int:
    """Frames of ``sv_fbank`` for ``num_samples`` samples (snip_edges: whole 400-sample windows every 160)."""
    window, hop = SV_FBANK.window_length, SV_FBANK.hop
    return 0 if num_samples < window else 1 + (num_samples - window) // hop


def sv_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """(S,) or (B, S) float waveform at 16 kHz in [-1, 1] -> (B, T, 80) log mel energies."""
    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.dim() != 2 or not waveform.is_floating_point():
        raise TalkrtError(f"sv_fbank expects a float (S,) or (B, S) waveform, got {waveform.dtype} {tuple(waveform.shape)}")
    if num_sv_frames(waveform.shape[-1]) == 0:
        raise TalkrtError(f"reference too short for the speaker embedding: {waveform.shape[-1]} samples, need at least {SV_FBANK.window_length} at 16 kHz")
    frames = waveform.float().unfold(-1, SV_FBANK.window_length, SV_FBANK.hop)  # (B, T, 400)
    return _fbank_of_frames(frames, SV_FBANK)


def _clipped_relu(x: torch.Tensor) -> torch.Tensor:
    # the blocks' activation is a ReLU capped at 20
    return F.hardtanh(x, 0.0, 20.0)


class AttentionalFusion(nn.Module):
    """Mixes two maps with per-element weights w in [0, 2]: x * w + y * (2 - w)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        inner = channels // reduction
        self.local_att = nn.Sequential(
            nn.Conv2d(2 * channels, inner, 1),
            nn.BatchNorm2d(inner),
            nn.SiLU(),
            nn.Conv2d(inner, channels, 1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = 1.0 + torch.tanh(self.local_att(torch.cat((x, y), dim=1)))
        return x * weight + y * (2.0 - weight)


class Res2Block(nn.Module):
    """Bottleneck whose 3x3 stage runs on ``scale`` channel groups in a chain: group i sees
    group i plus the previous group's output (summed, or mixed by attention when ``fuse``)."""

    def __init__(self, in_planes: int, planes: int, stride: int, config: SpeakerConfig, fuse: bool) -> None:
        super().__init__()
        width = int(math.floor(planes * config.base_width / 64.0))
        self.width, self.scale = width, config.scale
        out_planes = planes * config.expansion
        self.conv1 = nn.Conv2d(in_planes, width * config.scale, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * config.scale)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(config.scale))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(config.scale))
        self.fuse_models = nn.ModuleList(AttentionalFusion(width) for _ in range(config.scale - 1)) if fuse else None
        self.conv3 = nn.Conv2d(width * config.scale, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # an empty Sequential is the identity and keeps the released key layout
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(_clipped_relu(self.bn1(self.conv1(x))), self.width, dim=1)
        outputs: list[torch.Tensor] = []
        for i, group in enumerate(groups):
            if i > 0:
                group = self.fuse_models[i - 1](outputs[-1], group) if self.fuse_models is not None else outputs[-1] + group
            outputs.append(_clipped_relu(self.bns[i](self.convs[i](group))))
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        return _clipped_relu(out + self.shortcut(x))


class SpeakerEncoder(nn.Module):
    """ERes2NetV2: fbank (B, T, feat_dim) -> sv_emb (B, emb_dim)."""

    def __init__(self, config: SpeakerConfig = RELEASED_CONFIG) -> None:
        super().__init__()
        self.config = config
        c, e = config.channels, config.expansion
        self.conv1 = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        in_planes = c
        for index, (blocks, stride) in enumerate(zip(config.num_blocks, (1, 2, 2, 2))):
            planes = c * 2**index
            layer = []
            for j in range(blocks):
                # stages 3 and 4 mix their groups with attention, 1 and 2 by addition
                layer.append(Res2Block(in_planes, planes, stride if j == 0 else 1, config, fuse=index >= 2))
                in_planes = planes * e
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
        self.layer3_ds = nn.Conv2d(c * 4 * e, c * 8 * e, 3, stride=2, padding=1, bias=False)
        self.fuse34 = AttentionalFusion(c * 8 * e)
        # the network's own embedding head: in the released file, not part of sv_emb
        freq_rows = config.feat_dim // 8
        self.seg_1 = nn.Linear(freq_rows * c * 8 * e * 2, config.embedding_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.transpose(1, 2).unsqueeze(1)  # (B, 1, feat_dim, T): frequency is the image height
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        out3 = self.layer3(x)
        fused = self.fuse34(self.layer4(out3), self.layer3_ds(out3))  # (B, C, F/8, T/8)
        return fused.flatten(1, 2).mean(dim=-1)


def load_speaker_encoder(
    checkpoint: str | os.PathLike | Mapping, trust: bool = False, config: SpeakerConfig = RELEASED_CONFIG
) -> SpeakerEncoder:
    """The released speaker-verification weights (a plain state_dict), loaded strictly, float32, eval mode."""
    source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "speaker-verification checkpoint"
    obj = read_checkpoint(checkpoint, trust) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    state = extract_state_dict(obj, source)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}  # half-precision copies load too
    return load_strict(SpeakerEncoder(config), state, FAMILY, source=source)


@torch.no_grad()
def speaker_embedding(model: SpeakerEncoder, waveform: torch.Tensor) -> torch.Tensor:
    """16 kHz waveform (S,) or (B, S) in [-1, 1] -> sv_emb (B, emb_dim), float32."""
    param = next(model.parameters())
    return model(sv_fbank(waveform.to(param.device)))


def speaker_weights(directory: str | os.PathLike) -> Path:
    """``directory/sv/pretrained_eres2netv2w24s4ep4.ckpt``; one line saying where to copy it when absent."""
    path = Path(directory) / SV_FOLDER / SV_CHECKPOINT
    if not path.is_file():
        raise TalkrtError(f"a v2Pro / v2ProPlus voice needs GPT-SoVITS' speaker-verification weights: copy pretrained_models/sv/{SV_CHECKPOINT} to {path}")
    return path


@torch.no_grad()
def reference_fbank(waveform: torch.Tensor, rate: int) -> torch.Tensor:
    """The speaker network's input (1, T, 80) for a voice's reference, as the original feeds it:
    the waveform at the SoVITS rate (after its peak scaling) resampled to 16 kHz."""
    from talkrt.runtime.audio import resample

    return sv_fbank(resample(waveform.to(torch.float32).reshape(1, -1), rate, SAMPLE_RATE))


def build_speaker_encoder(checkpoint: str | os.PathLike | None = None, trust: bool = False, config: SpeakerConfig = RELEASED_CONFIG, seed: int = 0) -> SpeakerEncoder:
    """The released weights, or (no checkpoint) seeded random ones for tests and dry runs."""
    if checkpoint is not None:
        return load_speaker_encoder(checkpoint, trust, config)
    torch.manual_seed(seed)
    return SpeakerEncoder(config).eval()


def speaker_spec(config: SpeakerConfig = RELEASED_CONFIG, name: str = "eres2netv2w24s4ep4") -> ExportSpec:
    """``gpt-sovits-speaker``: 80-bin fbank of the 16 kHz reference -> sv_emb, frames dynamic.
    The fbank is the input, not the waveform: its rfft stays on the host (see the module's docstring)."""
    # 100 frames per second: 0.1 s .. 30 s of reference, tuned for the 3-10 s the original asks for
    frames = Dim("sv_frames", 10, 500, 3000, trace=97)
    return ExportSpec(
        family="gpt-sovits",
        graph="speaker",
        build_module=partial(build_speaker_encoder, config=config),
        opset=17,
        exporter="legacy",
        exporter_reason="TorchScript exporter at opset 17: convolutions and a time mean, nothing data-dependent",
        description=f"{name} GPT-SoVITS v2Pro speaker verification (ERes2NetV2): fbank of the 16 kHz reference -> sv_emb",
        inputs=(TensorSpec("features", (1, "sv_frames", config.feat_dim), convention="Kaldi log-mel fbank of the 16 kHz reference (speaker.sv_fbank: 25 ms / 10 ms, snip_edges, dither 0)", value_range=(-12.0, 4.0)),),
        outputs=(TensorSpec("sv_emb", (1, config.emb_dim), convention="speaker-verification embedding for gpt-sovits-reference (v2Pro / v2ProPlus)"),),
        dims=(frames,),
        tolerance=Tolerance(atol=1e-4, rtol=1e-3),
        # the shortest input, an odd length (stride-2 stages round up) and the original's 10 s maximum
        validation_points=({"sv_frames": 10}, {"sv_frames": 333}, {"sv_frames": 1001}),
        keep_fp32_ops=("Tanh", "ReduceMean"),
        keep_fp32_reason="attentional fusion's tanh weights and the time average",
        gates=(Gate("sv_emb", "cosine", 0.999, description="cosine similarity of the speaker embedding to FP32"),),
        metadata={"sample_rate": str(SAMPLE_RATE), "fbank": "kaldi 80 bins, 25 ms / 10 ms povey, snip_edges, dither 0"},
    )
