"""VITS graphs for export: the encoder (text encoder + duration predictor), the decoder (prior
sampling, flow, HiFi-GAN) and both in one, rewritten where transformers' code does not export.

What each graph takes and gives, and why the model is cut where the length is decided,
is in ``talkrt.models.vits.specs``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from talkrt.models.vits.length import expand_to_frames

MASKED_KEY_BIAS = -1e4


# ----------------------------------------------------------------------------- spline


def rational_quadratic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    reverse: bool = False,
    tail_bound: float = 5.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' ``_unconstrained_rational_quadratic_spline`` (linear tails), export-friendly.

    The spline is evaluated on every element with the input clamped into the tail
    bound and the identity is selected outside it (``torch.where``), instead of
    boolean-mask indexing and a data-dependent domain check. Shapes stay static, so
    the graph has no NonZero / ScatterND and the dynamo exporter has nothing to
    guard on. Elementwise it performs the same arithmetic as transformers.
    ``unnormalized_derivatives`` has ``num_bins - 1`` entries in the last axis.
    """
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    x = inputs.clamp(-tail_bound, tail_bound)
    num_bins = unnormalized_widths.shape[-1]
    lower, upper = -tail_bound, tail_bound

    constant = float(np.log(np.exp(1 - min_derivative) - 1))
    edge = torch.full_like(unnormalized_derivatives[..., :1], constant)
    derivatives = min_derivative + nn.functional.softplus(torch.cat([edge, unnormalized_derivatives, edge], dim=-1))

    def knots(unnormalized: torch.Tensor, minimum: float) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = nn.functional.softmax(unnormalized, dim=-1)
        sizes = minimum + (1 - minimum * num_bins) * sizes
        cumulative = (upper - lower) * torch.cumsum(sizes, dim=-1) + lower
        # transformers pads a 0 in front (-> lower) and overwrites the last knot with upper
        first = torch.full_like(cumulative[..., :1], lower)
        last = torch.full_like(cumulative[..., :1], upper)
        cumulative = torch.cat([first, cumulative[..., :-1], last], dim=-1)
        return cumulative, cumulative[..., 1:] - cumulative[..., :-1]

    cumwidths, widths = knots(unnormalized_widths, min_bin_width)
    cumheights, heights = knots(unnormalized_heights, min_bin_height)

    locations = cumheights if reverse else cumwidths
    locations = torch.cat([locations[..., :-1], locations[..., -1:] + 1e-6], dim=-1)
    bin_idx = (torch.sum((x[..., None] >= locations).to(torch.int64), dim=-1) - 1).clamp(0, num_bins - 1)[..., None]

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(-1, bin_idx)[..., 0]

    input_cumwidths = pick(cumwidths)
    input_bin_widths = pick(widths)
    input_cumheights = pick(cumheights)
    delta = heights / widths
    input_delta = pick(delta)
    input_derivatives = pick(derivatives)
    input_derivatives_plus_one = pick(derivatives[..., 1:])
    input_heights = pick(heights)

    intermediate1 = input_derivatives + input_derivatives_plus_one - 2 * input_delta
    if not reverse:
        theta = (x - input_cumwidths) / input_bin_widths
        theta_one_minus_theta = theta * (1 - theta)
        numerator = input_heights * (input_delta * theta.pow(2) + input_derivatives * theta_one_minus_theta)
        denominator = input_delta + intermediate1 * theta_one_minus_theta
        outputs = input_cumheights + numerator / denominator
        derivative_numerator = input_delta.pow(2) * (
            input_derivatives_plus_one * theta.pow(2) + 2 * input_delta * theta_one_minus_theta + input_derivatives * (1 - theta).pow(2)
        )
        log_abs_det = torch.log(derivative_numerator) - 2 * torch.log(denominator)
    else:
        intermediate2 = x - input_cumheights
        intermediate3 = intermediate2 * intermediate1
        a = input_heights * (input_delta - input_derivatives) + intermediate3
        b = input_heights * input_derivatives - intermediate3
        c = -input_delta * intermediate2
        discriminant = b.pow(2) - 4 * a * c
        root = (2 * c) / (-b - torch.sqrt(discriminant))
        outputs = root * input_bin_widths + input_cumwidths
        theta_one_minus_theta = root * (1 - root)
        denominator = input_delta + intermediate1 * theta_one_minus_theta
        derivative_numerator = input_delta.pow(2) * (
            input_derivatives_plus_one * root.pow(2) + 2 * input_delta * theta_one_minus_theta + input_derivatives * (1 - root).pow(2)
        )
        log_abs_det = -(torch.log(derivative_numerator) - 2 * torch.log(denominator))
    outputs = torch.where(inside, outputs, inputs)
    log_abs_det = torch.where(inside, log_abs_det, torch.zeros_like(log_abs_det))
    return outputs, log_abs_det


def _conv_flow_reverse(flow: nn.Module, inputs: torch.Tensor, padding_mask: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
    """``VitsConvFlow.forward(reverse=True)`` with the export-friendly spline, on the flow's own submodules."""
    first_half, second_half = torch.split(inputs, [flow.half_channels] * 2, dim=1)
    hidden_states = flow.conv_pre(first_half)
    hidden_states = flow.conv_dds(hidden_states, padding_mask, conditioning)
    hidden_states = flow.conv_proj(hidden_states) * padding_mask
    batch_size, channels, length = first_half.shape
    hidden_states = hidden_states.reshape(batch_size, channels, -1, length).permute(0, 1, 3, 2)
    bins = flow.num_bins
    scale = math.sqrt(flow.filter_channels)
    second_half, _ = rational_quadratic_spline(
        second_half,
        hidden_states[..., :bins] / scale,
        hidden_states[..., bins : 2 * bins] / scale,
        hidden_states[..., 2 * bins :],
        reverse=True,
        tail_bound=flow.tail_bound,
    )
    return torch.cat([first_half, second_half], dim=1) * padding_mask


def _wavenet(wavenet: nn.Module, inputs: torch.Tensor, padding_mask: torch.Tensor, conditioning: torch.Tensor | None) -> torch.Tensor:
    """``VitsWaveNet.forward`` on its own submodules, without the all-zeros conditioning.

    transformers adds ``zeros_like(hidden_states)`` when there is no speaker; TensorRT-RTX
    1.7 fuses that Add into the convolution as a 3-D bias and fails to build
    (``MyelinCheckException: CHECK(nbdims_bias == 4 || nbdims_bias == 5)``). Adding
    nothing is the same number.
    """
    hidden_size = wavenet.hidden_size
    outputs = None
    if conditioning is not None:
        conditioning = wavenet.cond_layer(conditioning)
    for i in range(wavenet.num_layers):
        hidden_states = wavenet.in_layers[i](inputs)
        if conditioning is not None:
            offset = i * 2 * hidden_size
            hidden_states = hidden_states + conditioning[:, offset : offset + 2 * hidden_size, :]
        acts = torch.tanh(hidden_states[:, :hidden_size, :]) * torch.sigmoid(hidden_states[:, hidden_size:, :])
        res_skip_acts = wavenet.res_skip_layers[i](acts)
        if i < wavenet.num_layers - 1:
            inputs = (inputs + res_skip_acts[:, :hidden_size, :]) * padding_mask
            skip = res_skip_acts[:, hidden_size:, :]
        else:
            skip = res_skip_acts
        outputs = skip if outputs is None else outputs + skip
    return outputs * padding_mask


def _flow_reverse(block: nn.Module, inputs: torch.Tensor, padding_mask: torch.Tensor, conditioning: torch.Tensor | None) -> torch.Tensor:
    """``VitsResidualCouplingBlock.forward(reverse=True)`` (mean-only coupling layers) with ``_wavenet``."""
    for flow in reversed(block.flows):
        inputs = torch.flip(inputs, [1])
        first_half, second_half = torch.split(inputs, [flow.half_channels] * 2, dim=1)
        hidden_states = flow.conv_pre(first_half) * padding_mask
        hidden_states = _wavenet(flow.wavenet, hidden_states, padding_mask, conditioning)
        mean = flow.conv_post(hidden_states) * padding_mask
        # transformers: (second_half - mean) * exp(-log_stddev) with log_stddev == 0
        second_half = (second_half - mean) * padding_mask
        inputs = torch.cat([first_half, second_half], dim=1)
    return inputs


# ----------------------------------------------------------------------------- graph modules


def _speaker_embedding(model: nn.Module, speaker_id: torch.Tensor | None) -> torch.Tensor | None:
    if speaker_id is None:
        return None
    return model.embed_speaker(speaker_id).unsqueeze(-1)  # (batch, E, 1)


def _weight_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def sequence_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(batch, size) float mask: 1 where position < length."""
    positions = torch.arange(size, device=lengths.device)
    return (positions.unsqueeze(0) < lengths.unsqueeze(1)).to(torch.float32)


class VitsEncoderGraph(nn.Module):
    """Text encoder + duration predictor (stochastic: reverse pass with the noise as an input)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.text_encoder = model.text_encoder
        self.duration_predictor = model.duration_predictor
        self.stochastic = bool(model.config.use_stochastic_duration_prediction)
        self.multi_speaker = model.config.num_speakers > 1
        if self.multi_speaker:
            self.embed_speaker = model.embed_speaker

    def forward(self, input_ids: torch.Tensor, input_lengths: torch.Tensor, *rest: torch.Tensor):
        rest = list(rest)
        duration_noise = rest.pop(0) if self.stochastic else None
        noise_scale_w = rest.pop(0) if self.stochastic else None
        length_scale = rest.pop(0)
        speaker_id = rest.pop(0) if self.multi_speaker else None
        conditioning = _speaker_embedding(self, speaker_id)

        tokens = input_ids.shape[1]
        dtype = _weight_dtype(self)  # masks in the weights' dtype: a float32 mask would promote an FP16 module's activations
        mask = (torch.arange(tokens, device=input_ids.device).unsqueeze(0) < input_lengths.unsqueeze(1)).to(dtype)
        # Keys beyond the length get a large negative bias. Built here as a 4-D mask,
        # which transformers uses as is (it turns an all-ones 2-D mask into None in
        # Python, which a trace would bake in). transformers' own bias is the float32
        # minimum; -1e4 also fits FP16, and softmax gives those keys exactly 0 either way.
        key_mask = mask[:, None, None, :] > 0
        attention_mask = torch.where(key_mask, torch.zeros((), dtype=dtype), torch.full((), MASKED_KEY_BIAS, dtype=dtype))
        attention_mask = attention_mask.expand(-1, 1, tokens, tokens)
        hidden, prior_means, prior_log_variances = self.text_encoder(
            input_ids=input_ids, padding_mask=mask.unsqueeze(-1), attention_mask=attention_mask, return_dict=False
        )[:3]
        hidden = hidden.transpose(1, 2)
        input_mask = mask.unsqueeze(1)  # (batch, 1, tokens)

        if self.stochastic:
            log_duration = self._stochastic_durations(hidden, input_mask, conditioning, duration_noise * noise_scale_w)
        else:
            log_duration = self.duration_predictor(hidden, input_mask, conditioning)
        durations = torch.ceil(torch.exp(log_duration) * input_mask * length_scale)
        return durations[:, 0, :], prior_means.transpose(1, 2), prior_log_variances.transpose(1, 2), input_mask

    def _stochastic_durations(self, hidden, padding_mask, conditioning, latents):
        """``VitsStochasticDurationPredictor.forward(reverse=True)`` with ``latents`` = noise * noise_scale_w."""
        predictor = self.duration_predictor
        inputs = predictor.conv_pre(hidden)
        if conditioning is not None:
            inputs = inputs + predictor.cond(conditioning)
        inputs = predictor.conv_dds(inputs, padding_mask)
        inputs = predictor.conv_proj(inputs) * padding_mask
        flows = list(reversed(predictor.flows))
        flows = flows[:-2] + [flows[-1]]  # transformers drops a useless flow in reverse
        for flow in flows:
            latents = torch.flip(latents, [1])
            if hasattr(flow, "conv_proj"):  # VitsConvFlow
                latents = _conv_flow_reverse(flow, latents, padding_mask, inputs)
            else:  # VitsElementwiseAffine
                latents, _ = flow(latents, padding_mask, global_conditioning=inputs, reverse=True)
        return latents[:, :1, :]


class VitsDecoderGraph(nn.Module):
    """Prior sampling with the noise as an input, flow (reverse) and HiFi-GAN."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.flow = model.flow
        self.decoder = model.decoder
        self.multi_speaker = model.config.num_speakers > 1
        if self.multi_speaker:
            self.embed_speaker = model.embed_speaker

    def forward(self, prior_means, prior_log_variances, latent_noise, noise_scale, output_mask, speaker_id=None):
        conditioning = _speaker_embedding(self, speaker_id)
        prior_latents = prior_means + latent_noise * torch.exp(prior_log_variances) * noise_scale
        latents = _flow_reverse(self.flow, prior_latents, output_mask, conditioning)
        return self.decoder(latents * output_mask, conditioning)


def token_index(durations: torch.Tensor, frames: int | torch.Tensor) -> torch.Tensor:
    """(batch, frames) index of the token each output frame belongs to; ``tokens`` where none does.

    Frame f belongs to the first token whose cumulative duration exceeds f, i.e. the
    number of cumulative durations <= f. This is the comparison form (graph
    friendly); the runtime uses searchsorted.
    """
    cumulative = torch.cumsum(durations, dim=-1)  # (batch, tokens)
    positions = torch.arange(frames, device=durations.device).to(durations.dtype)
    return torch.sum((cumulative.unsqueeze(1) <= positions[None, :, None]).to(torch.int64), dim=-1)


class VitsFullGraph(nn.Module):
    """The whole synthesis in one graph (ONNX Runtime): variable output length, noise as inputs.

    ``latent_noise`` has its own length (``noise_frames``): frame f uses column f,
    and frames beyond the columns given get no noise. Pass at least as many columns
    as the utterance has frames (e.g. 20 per token).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = VitsEncoderGraph(model)
        self.decoder = VitsDecoderGraph(model)
        self.stochastic = self.encoder.stochastic
        self.multi_speaker = self.encoder.multi_speaker
        self.hop = int(math.prod(model.config.upsample_rates))

    def forward(self, input_ids, input_lengths, *rest):
        rest = list(rest)
        duration_noise = rest.pop(0) if self.stochastic else None
        latent_noise = rest.pop(0)
        noise_scale = rest.pop(0)
        noise_scale_w = rest.pop(0) if self.stochastic else None
        length_scale = rest.pop(0)
        speaker_id = rest.pop(0) if self.multi_speaker else None
        encoder_inputs = [duration_noise, noise_scale_w] if self.stochastic else []
        encoder_inputs.append(length_scale)
        if self.multi_speaker:
            encoder_inputs.append(speaker_id)
        durations, prior_means, prior_log_variances, input_mask = self.encoder(input_ids, input_lengths, *encoder_inputs)

        frame_lengths = torch.clamp_min(torch.sum(durations, dim=-1), 1).to(torch.int64)
        frames = frame_lengths.max()
        index = token_index(durations, frames)  # (batch, frames), == tokens where no token
        output_mask = (torch.arange(frames, device=durations.device).unsqueeze(0) < frame_lengths.unsqueeze(1)).to(_weight_dtype(self))
        means = expand_to_frames(prior_means, index) * output_mask.unsqueeze(1)
        log_variances = expand_to_frames(prior_log_variances, index) * output_mask.unsqueeze(1)
        # frames beyond the noise given get none: append zeros, then cut to the frame count
        noise = torch.cat([latent_noise, torch.zeros_like(means)], dim=2)[:, :, : means.shape[2]]
        decoder_inputs = [means, log_variances, noise, noise_scale, output_mask.unsqueeze(1)]
        if self.multi_speaker:
            decoder_inputs.append(speaker_id)
        waveform = self.decoder(*decoder_inputs)
        return waveform, frame_lengths * self.hop


# ----------------------------------------------------------------------------- receptive field


def decoder_receptive_field(config) -> int:
    """One-sided receptive field of the decoder graph in frames (flow + HiFi-GAN), rounded up.

    Output samples of frame f depend only on input frames within this many frames
    of f, so decoding a chunk with this margin on each side and keeping its middle
    equals decoding the whole utterance.
    """
    kernel, rate = config.wavenet_kernel_size, config.wavenet_dilation_rate
    wavenet = sum((kernel * rate**i - rate**i) // 2 for i in range(config.prior_encoder_num_wavenet_layers))
    frames = config.prior_encoder_num_flows * wavenet  # each coupling layer: 1x1 convs around the WaveNet
    frames += 3  # HiFi-GAN conv_pre, kernel 7
    scale = 1  # samples per frame at the current stage
    for upsample_rate, upsample_kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
        frames += math.ceil(upsample_kernel / upsample_rate) / scale  # transposed conv, in its input's units
        scale *= upsample_rate
        resblock = max(
            sum((k * d - d) // 2 + (k - 1) // 2 for d in dilations)
            for k, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
        )
        frames += resblock / scale
    frames += 3 / scale  # conv_post, kernel 7
    return int(math.ceil(frames)) + 1
