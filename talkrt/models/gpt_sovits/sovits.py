"""GPT-SoVITS v2 SoVITS (``SynthesizerTrn``): semantic tokens + phones + reference style -> 32 kHz waveform.

Own modules for the inference path whose ``state_dict`` keys are the original's
(``enc_p``, ``flow``, ``dec``, ``ref_enc``, ``ssl_proj``, ``quantizer`` and, for
v2Pro / v2ProPlus, ``sv_emb``, ``ge_to512``, ``prelu``). The posterior encoder
``enc_q`` is training-only and not built: ``sovits_checkpoint`` drops its keys.

Inference is single-sequence (the original's ``decode`` builds all-ones masks),
so no masks are carried. The prior noise is an input, never drawn inside, which
keeps exported graphs deterministic. Lengths are taken from tensor shapes only,
so a traced graph keeps its token axis dynamic.

Pieces shared with VITS come from ``talkrt.models.vits``: the WaveNet body of the
flow's coupling layers (``graphs._wavenet``, the same gated tanh/sigmoid stack).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import torch
from torch import nn
from torch.nn import functional as F

from talkrt.errors import TalkrtError
from talkrt.models.vits.graphs import _wavenet

FAMILY = "gpt-sovits"
PRO_VERSIONS = ("v2Pro", "v2ProPlus")
VERSIONS = ("v2", *PRO_VERSIONS)
LRELU_SLOPE = 0.1


@dataclass(frozen=True)
class SovitsConfig:
    """Hyper-parameters of ``SynthesizerTrn`` v2: the checkpoint config's ``model`` and ``data``
    sections, plus sizes the original hard-codes (kept as fields so tests can shrink them)."""

    version: str = "v2"
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    window_size: int = 4
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    gin_channels: int = 512
    semantic_frame_rate: str = "25hz"
    # hard-coded in the original
    n_symbols: int = 732  # v2 phone table (v1 has 322)
    ssl_dim: int = 768  # HuBERT feature size
    codebook_size: int = 1024
    ref_bins: int = 704  # spectrogram bins the style encoder reads
    style_hidden: int = 128
    mrte_hidden: int = 512
    mrte_heads: int = 4
    sv_dim: int = 20480  # speaker-verification embedding (v2Pro / v2ProPlus)
    n_flows: int = 4
    flow_kernel_size: int = 5
    flow_wavenet_layers: int = 4
    # data section
    sampling_rate: int = 32000
    filter_length: int = 2048
    hop_length: int = 640
    win_length: int = 2048

    @property
    def is_pro(self) -> bool:
        return self.version in PRO_VERSIONS

    @property
    def samples_per_token(self) -> int:
        """Waveform samples per 25 Hz semantic token: two 50 Hz frames of prod(upsample_rates)."""
        return 2 * math.prod(self.upsample_rates)


# configs/s2.json, s2v2Pro.json and s2v2ProPlus.json "model" sections as SovitsConfig
V2_CONFIG = SovitsConfig()
V2PRO_CONFIG = replace(V2_CONFIG, version="v2Pro", gin_channels=1024)
V2PROPLUS_CONFIG = replace(V2PRO_CONFIG, version="v2ProPlus", upsample_initial_channel=768, upsample_kernel_sizes=(20, 16, 8, 2, 2))

RELEASED_CONFIGS = {"v2": V2_CONFIG, "v2Pro": V2PRO_CONFIG, "v2ProPlus": V2PROPLUS_CONFIG}

# A small model with every sub-module, for tests: the real hop (640 samples per 50 Hz frame).
SMALL_CONFIG = SovitsConfig(
    inter_channels=16,
    hidden_channels=16,
    filter_channels=32,
    n_layers=2,
    resblock_kernel_sizes=(3, 5),
    resblock_dilation_sizes=((1, 3), (1, 3)),
    upsample_initial_channel=32,
    gin_channels=32,
    n_symbols=40,
    ssl_dim=24,
    codebook_size=64,
    style_hidden=16,
    mrte_hidden=32,
    sv_dim=48,
    flow_wavenet_layers=2,
)

_TUPLE_FIELDS = ("resblock_kernel_sizes", "upsample_rates", "upsample_kernel_sizes")


def config_from_checkpoint(config: Mapping | object, version: str) -> SovitsConfig:
    """A SovitsConfig from a checkpoint's ``config`` (a dict, or any object with those
    attributes) and the detected ``version``; unknown keys are ignored."""

    def section(name: str) -> dict:
        node = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
        if node is None:
            return {}
        if isinstance(node, Mapping):
            return dict(node)
        return dict(vars(node))

    if version not in VERSIONS:
        raise TalkrtError(f"SoVITS {version} is not supported; supported: {', '.join(VERSIONS)}")
    model, data = section("model"), section("data")
    known = {f.name for f in fields(SovitsConfig)}
    values: dict = {k: v for k, v in model.items() if k in known and k != "version"}
    for key in _TUPLE_FIELDS:
        if key in values:
            values[key] = tuple(int(v) for v in values[key])
    if "resblock_dilation_sizes" in values:
        values["resblock_dilation_sizes"] = tuple(tuple(int(d) for d in row) for row in values["resblock_dilation_sizes"])
    for key in ("sampling_rate", "filter_length", "hop_length", "win_length"):
        if data.get(key) is not None:
            values[key] = int(data[key])
    # keys the section lacks keep the released model's value for that version
    cfg = replace(RELEASED_CONFIGS[version], **values)
    if str(cfg.resblock) != "1":
        raise TalkrtError(f"SoVITS config uses HiFi-GAN resblock {cfg.resblock!r}; only '1' (all released v2 models) is supported")
    if cfg.semantic_frame_rate != "25hz":
        raise TalkrtError(f"SoVITS config has semantic_frame_rate {cfg.semantic_frame_rate!r}; only '25hz' (all released v2 models) is supported")
    return cfg


def _legacy_weight_norm(module: nn.Module) -> nn.Module:
    # The legacy hook stores weight_g / weight_v, the names in released checkpoints;
    # talkrt.export.onnx.fold_weight_norm removes it before export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nn.utils.weight_norm(module)


# ----------------------------------------------------------------------------- spectrogram


def linear_spectrogram(waveform: torch.Tensor, n_fft: int = 2048, hop_length: int = 640, win_length: int = 2048) -> torch.Tensor:
    """Magnitude spectrogram of a (batch, samples) waveform as the reference path computes it:
    reflect pad (n_fft - hop) / 2 per side, STFT with a periodic Hann window, center=False,
    sqrt(re^2 + im^2 + 1e-8). Returns (batch, n_fft // 2 + 1, frames)."""
    pad = (n_fft - hop_length) // 2
    padded = F.pad(waveform.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(win_length, dtype=waveform.dtype, device=waveform.device)
    spec = torch.stft(padded, n_fft, hop_length=hop_length, win_length=win_length, window=window, center=False, onesided=True, return_complex=True)
    spec = torch.view_as_real(spec)
    return torch.sqrt(spec.pow(2).sum(-1) + 1e-8)


# ----------------------------------------------------------------------------- attention encoder


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (batch, channels, time); parameters named gamma / beta."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels  # a Python int: a traced shape read here would not export
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.transpose(1, -1), (self.channels,), self.gamma, self.beta, self.eps).transpose(1, -1)


def _relative_index(length_q: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, L) index j - i + window clamped into the 2*window+1 table, and where |j - i| <= window.

    Built from arange over the sequence so a traced graph keeps L dynamic (the
    original pads and slices with Python ints, which a trace would freeze)."""
    positions = torch.arange(length_q.shape[-1], device=length_q.device)
    offset = positions.unsqueeze(0) - positions.unsqueeze(1)
    inside = offset.abs() <= window
    return (offset + window).clamp(0, 2 * window), inside


class RelativeMultiHeadAttention(nn.Module):
    """Multi-head attention with 1x1-conv projections; with ``window_size`` it adds the
    shared relative-position key/value embeddings (zero beyond the window)."""

    def __init__(self, channels: int, out_channels: int, n_heads: int, window_size: int | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        if window_size is not None:
            scale = self.k_channels**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * scale)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * scale)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, channels, t_q = x.shape
        t_k = context.shape[2]
        query = self.conv_q(x).view(b, self.n_heads, self.k_channels, t_q).transpose(2, 3)
        key = self.conv_k(context).view(b, self.n_heads, self.k_channels, t_k).transpose(2, 3)
        value = self.conv_v(context).view(b, self.n_heads, self.k_channels, t_k).transpose(2, 3)
        query = query / math.sqrt(self.k_channels)
        scores = torch.matmul(query, key.transpose(-2, -1))
        if self.window_size is not None:
            index, inside = _relative_index(query[0, 0, :, 0], self.window_size)
            rel_logits = torch.matmul(query, self.emb_rel_k.transpose(-2, -1).unsqueeze(0))  # (b, h, L, 2w+1)
            picked = torch.gather(rel_logits, -1, index.expand(b, self.n_heads, -1, -1))
            scores = scores + picked * inside.to(scores.dtype)
        p_attn = F.softmax(scores, dim=-1)
        output = torch.matmul(p_attn, value)
        if self.window_size is not None:
            # weight of each relative offset: the attention mass on the key at that offset
            span = 2 * self.window_size + 1
            one_hot = (index.unsqueeze(-1) == torch.arange(span, device=x.device)) & inside.unsqueeze(-1)
            rel_weights = torch.einsum("bhij,ijr->bhir", p_attn, one_hot.to(p_attn.dtype))
            output = output + torch.matmul(rel_weights, self.emb_rel_v.unsqueeze(0))
        output = output.transpose(2, 3).reshape(b, channels, t_q)
        return self.conv_o(output)


class FeedForward(nn.Module):
    """Two 'same'-padded convolutions with ReLU between them."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, ((self.kernel_size - 1) // 2, self.kernel_size // 2)) if self.kernel_size > 1 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_2(self._pad(torch.relu(self.conv_1(self._pad(x)))))


class AttentionEncoder(nn.Module):
    """Post-norm transformer encoder with relative-position self-attention."""

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int, window_size: int) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(RelativeMultiHeadAttention(channels, channels, n_heads, window_size) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(FeedForward(channels, filter_channels, kernel_size) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm_1(x + attn(x, x))
            x = norm_2(x + ffn(x))
        return x


class MRTE(nn.Module):
    """Multi-reference timbre encoder: content attends to the phones, plus the style vector."""

    def __init__(self, content_channels: int, hidden: int, n_heads: int) -> None:
        super().__init__()
        self.cross_attention = RelativeMultiHeadAttention(hidden, hidden, n_heads)
        self.c_pre = nn.Conv1d(content_channels, hidden, 1)
        self.text_pre = nn.Conv1d(content_channels, hidden, 1)
        self.c_post = nn.Conv1d(hidden, content_channels, 1)

    def forward(self, content: torch.Tensor, text: torch.Tensor, ge: torch.Tensor) -> torch.Tensor:
        content = self.c_pre(content)
        text = self.text_pre(text)
        return self.c_post(self.cross_attention(content, text) + content + ge)


class TextEncoder(nn.Module):
    """``enc_p``: 50 Hz quantized content and phones -> prior mean and log-std per frame."""

    def __init__(self, cfg: SovitsConfig) -> None:
        super().__init__()
        h = cfg.hidden_channels
        self.out_channels = cfg.inter_channels
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, h, 1)
        self.encoder_ssl = AttentionEncoder(h, cfg.filter_channels, cfg.n_heads, cfg.n_layers // 2, cfg.kernel_size, cfg.window_size)
        self.encoder_text = AttentionEncoder(h, cfg.filter_channels, cfg.n_heads, cfg.n_layers, cfg.kernel_size, cfg.window_size)
        self.text_embedding = nn.Embedding(cfg.n_symbols, h)
        self.mrte = MRTE(h, cfg.mrte_hidden, cfg.mrte_heads)
        self.encoder2 = AttentionEncoder(h, cfg.filter_channels, cfg.n_heads, cfg.n_layers // 2, cfg.kernel_size, cfg.window_size)
        self.proj = nn.Conv1d(h, cfg.inter_channels * 2, 1)

    def forward(self, content: torch.Tensor, phones: torch.Tensor, ge: torch.Tensor, speed: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.encoder_ssl(self.ssl_proj(content))
        text = self.encoder_text(self.text_embedding(phones).transpose(1, 2))
        y = self.encoder2(self.mrte(y, text, ge))
        if speed != 1:  # a Python-level branch, as in the original: export at speed 1
            y = F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")
        m, logs = torch.split(self.proj(y), self.out_channels, dim=1)
        return m, logs


# ----------------------------------------------------------------------------- quantizer


class _Codebook(nn.Module):
    """Euclidean codebook; ``inited``, ``cluster_size`` and ``embed_avg`` are training state kept
    so the state_dict matches released files."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed", torch.randn(size, dim))
        self.register_buffer("embed_avg", torch.zeros(size, dim))


class _VQLayer(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self._codebook = _Codebook(size, dim)


class _VQStack(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_VQLayer(size, dim)])  # released models use one quantizer


class Quantizer(nn.Module):
    """``quantizer``: nearest-codebook encode and lookup decode (one codebook)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.vq = _VQStack(size, dim)

    @property
    def embed(self) -> torch.Tensor:
        return self.vq.layers[0]._codebook.embed

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, dim, frames) -> (batch, 1, frames) codes."""
        flat = x.transpose(1, 2).reshape(-1, x.shape[1])
        embed = self.embed.t()
        # the original's expression, so ties and rounding pick the same code
        distance = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed + embed.pow(2).sum(0, keepdim=True))
        return distance.max(dim=-1).indices.view(x.shape[0], 1, x.shape[2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(1, batch, frames) or (batch, 1, frames) codes -> (batch, dim, frames)."""
        return F.embedding(codes[0] if codes.shape[0] == 1 else codes[:, 0], self.embed).transpose(1, 2)


# ----------------------------------------------------------------------------- style encoder


class _Linear(nn.Module):
    """A Linear under ``.fc`` (the original's LinearNorm)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class _Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(F.softplus(x))


class _ConvGLU(nn.Module):
    """Residual gated convolution; the conv sits at ``conv1.conv``."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = nn.Module()
        self.conv1.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv1.conv(x), self.channels, dim=1)
        return x + a * torch.sigmoid(b)


class _StyleAttention(nn.Module):
    """Residual multi-head self-attention over (batch, time, channels)."""

    def __init__(self, n_heads: int, channels: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.w_qs = nn.Linear(channels, channels)
        self.w_ks = nn.Linear(channels, channels)
        self.w_vs = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)
        self.temperature = channels**0.5  # the original scales by sqrt(d_model), not sqrt(d_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        d = c // self.n_heads

        def heads(proj: nn.Linear) -> torch.Tensor:
            return proj(x).view(b, t, self.n_heads, d).permute(0, 2, 1, 3)

        attn = torch.softmax(torch.matmul(heads(self.w_qs), heads(self.w_ks).transpose(-1, -2)) / self.temperature, dim=-1)
        out = torch.matmul(attn, heads(self.w_vs)).permute(0, 2, 1, 3).reshape(b, t, c)
        return self.fc(out) + x


class MelStyleEncoder(nn.Module):
    """``ref_enc``: spectrogram frames -> one style vector (batch, gin, 1)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, kernel_size: int = 5, n_heads: int = 2) -> None:
        super().__init__()
        # indices 0 and 3 hold weights: Linear, Mish, Dropout, Linear, Mish, Dropout
        self.spectral = nn.Sequential(_Linear(in_dim, hidden), _Mish(), nn.Identity(), _Linear(hidden, hidden), _Mish(), nn.Identity())
        self.temporal = nn.Sequential(_ConvGLU(hidden, kernel_size), _ConvGLU(hidden, kernel_size))
        self.slf_attn = _StyleAttention(n_heads, hidden)
        self.fc = _Linear(hidden, out_dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.spectral(spec.transpose(1, 2))
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)
        x = self.fc(self.slf_attn(x))
        # divide, then sum over time: the original's masked average pooling with a full mask
        return (x / x.shape[1]).sum(dim=1).unsqueeze(-1)


# ----------------------------------------------------------------------------- flow and generator


class _WaveNet(nn.Module):
    """The coupling layers' WaveNet (``enc``): weight-normed dilated convs with a global condition.
    Its attribute names are what ``talkrt.models.vits.graphs._wavenet`` runs on."""

    def __init__(self, hidden: int, kernel_size: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.hidden_size = hidden
        self.num_layers = n_layers
        self.in_layers = nn.ModuleList(
            _legacy_weight_norm(nn.Conv1d(hidden, 2 * hidden, kernel_size, padding=(kernel_size - 1) // 2)) for _ in range(n_layers)
        )
        self.res_skip_layers = nn.ModuleList(
            _legacy_weight_norm(nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1)) for i in range(n_layers)
        )
        self.cond_layer = _legacy_weight_norm(nn.Conv1d(gin_channels, 2 * hidden * n_layers, 1))


class _Flip(nn.Module):
    """Placeholder for the original's Flip (no weights), so coupling layers sit at even indices."""


class CouplingLayer(nn.Module):
    """Mean-only residual coupling layer."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden, 1)
        self.enc = _WaveNet(hidden, kernel_size, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden, self.half_channels, 1)

    def reverse(self, x: torch.Tensor, g: torch.Tensor, ones: torch.Tensor) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half_channels] * 2, dim=1)
        mean = self.post(_wavenet(self.enc, self.pre(x0), ones, g))
        return torch.cat([x0, x1 - mean], dim=1)


class CouplingBlock(nn.Module):
    """``flow``: coupling layers interleaved with channel flips; only the reverse pass is needed."""

    def __init__(self, cfg: SovitsConfig) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(cfg.n_flows):
            self.flows.append(CouplingLayer(cfg.inter_channels, cfg.hidden_channels, cfg.flow_kernel_size, cfg.flow_wavenet_layers, cfg.gin_channels))
            self.flows.append(_Flip())

    def reverse(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(z[:, :1, :])  # the WaveNet's mask: every frame is valid
        for flow in reversed(self.flows):
            z = torch.flip(z, [1]) if isinstance(flow, _Flip) else flow.reverse(z, g, ones)
        return z


def _padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock(nn.Module):
    """HiFi-GAN residual block type 1: dilated conv pairs with leaky ReLU."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            _legacy_weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_padding(kernel_size, d))) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            _legacy_weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=_padding(kernel_size, 1))) for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class Generator(nn.Module):
    """``dec``: HiFi-GAN generator with a global condition, prod(upsample_rates) samples per frame."""

    def __init__(self, cfg: SovitsConfig) -> None:
        super().__init__()
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        init = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.inter_channels, init, 7, padding=3)
        self.ups = nn.ModuleList(
            _legacy_weight_norm(nn.ConvTranspose1d(init // 2**i, init // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            ResBlock(init // 2 ** (i + 1), k, tuple(d))
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        self.conv_post = nn.Conv1d(init // 2 ** len(cfg.upsample_rates), 1, 7, padding=3, bias=False)
        self.cond = nn.Conv1d(cfg.gin_channels, init, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x) + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # default slope 0.01 here, as in the original


# ----------------------------------------------------------------------------- the synthesizer


class SovitsSynthesizer(nn.Module):
    """SynthesizerTrn v2 / v2Pro / v2ProPlus inference: ``reference_style``, ``extract_latent``, ``decode``."""

    def __init__(self, cfg: SovitsConfig = V2_CONFIG) -> None:
        super().__init__()
        if cfg.version not in VERSIONS:
            raise TalkrtError(f"SoVITS {cfg.version} is not supported; supported: {', '.join(VERSIONS)}")
        self.config = cfg
        self.enc_p = TextEncoder(cfg)
        self.dec = Generator(cfg)
        self.flow = CouplingBlock(cfg)
        self.ref_enc = MelStyleEncoder(cfg.ref_bins, cfg.style_hidden, cfg.gin_channels)
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.ssl_dim, 2, stride=2)  # 50 Hz HuBERT -> 25 Hz tokens
        self.quantizer = Quantizer(cfg.codebook_size, cfg.ssl_dim)
        if cfg.is_pro:
            self.sv_emb = nn.Linear(cfg.sv_dim, cfg.gin_channels)
            self.ge_to512 = nn.Linear(cfg.gin_channels, cfg.mrte_hidden)
            self.prelu = nn.PReLU(num_parameters=cfg.gin_channels)

    def spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
        """The reference's linear spectrogram at this model's STFT settings (waveform at 32 kHz)."""
        cfg = self.config
        return linear_spectrogram(waveform, cfg.filter_length, cfg.hop_length, cfg.win_length)

    def reference_style(self, ref_spectrogram: torch.Tensor, sv_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Style vector ``ge`` (batch, gin, 1) from a (batch, bins, frames) linear spectrogram;
        v2Pro / v2ProPlus also take the (batch, sv_dim) speaker-verification embedding."""
        ge = self.ref_enc(ref_spectrogram[:, : self.config.ref_bins])
        if self.config.is_pro:
            if sv_emb is None:
                raise TalkrtError(f"SoVITS {self.config.version} needs the speaker-verification embedding sv_emb ({self.config.sv_dim} values)")
            ge = self.prelu(ge + self.sv_emb(sv_emb).unsqueeze(-1))
        return ge

    def extract_latent(self, ssl_features: torch.Tensor) -> torch.Tensor:
        """(batch, ssl_dim, 50 Hz frames) HuBERT features -> (batch, 1, 25 Hz frames) semantic codes."""
        return self.quantizer.encode(self.ssl_proj(ssl_features))

    def decode(self, codes: torch.Tensor, phones: torch.Tensor, ge: torch.Tensor, noise: torch.Tensor, noise_scale: float | torch.Tensor = 0.5, speed: float = 1.0) -> torch.Tensor:
        """Waveform (batch, 1, tokens * samples_per_token) at 32 kHz.

        ``codes`` (1, batch, tokens) int64 semantic tokens, ``phones`` (batch, n) int64
        target phone ids, ``ge`` from ``reference_style``, ``noise`` standard normal
        of the prior's shape (batch, inter_channels, frames): frames = 2 * tokens at
        speed 1, int(2 * tokens / speed) + 1 otherwise.
        """
        content = self.quantizer.decode(codes)
        # nearest x2 to 50 Hz, written as a repeat so a trace keeps the length dynamic
        content = content.unsqueeze(-1).expand(-1, -1, -1, 2).reshape(content.shape[0], content.shape[1], -1)
        ge_text = self.ge_to512(ge.transpose(1, 2)).transpose(1, 2) if self.config.is_pro else ge
        m, logs = self.enc_p(content, phones, ge_text, speed)
        z_p = m + noise * torch.exp(logs) * noise_scale
        z = self.flow.reverse(z_p, ge)
        return self.dec(z, ge)


class SovitsDecoderGraph(nn.Module):
    """``decode`` with tensors only, for export: (codes, phones, ge, noise, noise_scale) -> waveform."""

    def __init__(self, model: SovitsSynthesizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor, phones: torch.Tensor, ge: torch.Tensor, noise: torch.Tensor, noise_scale: torch.Tensor) -> torch.Tensor:
        return self.model.decode(codes, phones, ge, noise, noise_scale)


def build_random_sovits(cfg: SovitsConfig = SMALL_CONFIG, seed: int = 0) -> SovitsSynthesizer:
    """A SovitsSynthesizer with seeded random weights (and non-trivial layer norms), in eval mode."""
    from talkrt.models.random_init import random_model

    model = random_model(lambda: SovitsSynthesizer(cfg), seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, ChannelLayerNorm):
                layer.gamma.copy_(torch.empty_like(layer.gamma).uniform_(0.8, 1.2, generator=generator))
                layer.beta.copy_(torch.empty_like(layer.beta).uniform_(-0.1, 0.1, generator=generator))
    return model.eval()
