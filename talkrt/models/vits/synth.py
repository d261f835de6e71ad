"""VITS text-to-speech on one device: encoder graph -> length regulation -> decoder graph.

The encoder and decoder are runners (ONNX Runtime, TensorRT / TensorRT-RTX, or
PyTorch; see talkrt.models.vits.specs for what each graph takes and gives). Between
them, on the same device and in torch, length regulation turns durations into
frames: a frame count per item, an output mask and the prior expanded to frames
by a gather (``token_index`` from a searchsorted over the cumulative durations).
It equals transformers' hard monotonic attention-matrix product exactly, without
building the (frames x tokens) matrix.

Noise is an input of both graphs, drawn here (from ``seed`` when given) or
passed explicitly, so every backend reproduces PyTorch.

Streaming decodes the latent in overlapping chunks: each chunk is decoded with
``margin_frames`` of context on each side (the decoder's receptive field, from
the manifest) and only its middle is kept, so the concatenated chunks equal the
one-shot decode and the first audio is ready after the first, short chunk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from talkrt.engines.devices import normalize_device
from talkrt.engines.runners import StagingBuffers
from talkrt.errors import TalkrtError
from talkrt.models.family import read_manifest as read_family_manifest
from talkrt.models.vits.length import LengthRegulation, expand_prior, regulate_lengths

MANIFEST = "manifest.json"
# VITS notebook settings (jaywalnut310/vits inference.ipynb; transformers' VitsConfig defaults)
NOISE_SCALE = 0.667
NOISE_SCALE_W = 0.8


# ----------------------------------------------------------------------------- synthesizer


@dataclass
class EncodedText:
    """The encoder graph's outputs for one batch, plus length regulation."""

    durations: torch.Tensor  # (batch, tokens)
    prior_means: torch.Tensor  # (batch, C, tokens)
    prior_log_variances: torch.Tensor  # (batch, C, tokens)
    input_mask: torch.Tensor  # (batch, 1, tokens)
    regulation: LengthRegulation
    speaker_id: torch.Tensor | None  # (batch,) int64 for multi-speaker models

    @property
    def frames(self) -> int:
        return self.regulation.frames


@dataclass
class SynthesisOutput:
    waveform: torch.Tensor  # (batch, samples) padded to the longest item
    sample_lengths: torch.Tensor  # (batch,) int64
    durations: torch.Tensor  # (batch, tokens)
    frame_lengths: torch.Tensor  # (batch,) int64

    def items(self) -> list[torch.Tensor]:
        return [self.waveform[i, : int(n)] for i, n in enumerate(self.sample_lengths.tolist())]


class VitsSynthesizer:
    """Text ids -> waveform with an encoder runner and a decoder runner on one device."""

    def __init__(
        self,
        encoder,
        decoder,
        *,
        sample_rate: int,
        hop_length: int,
        num_speakers: int = 1,
        receptive_field: int | None = None,
        add_blank: bool = True,
        vocab: dict[str, int] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.device = normalize_device(device) if device is not None else encoder.device
        self._staging = StagingBuffers()  # decoder windows, copied to aligned buffers
        self.sample_rate = int(sample_rate)
        self.hop_length = int(hop_length)
        self.num_speakers = int(num_speakers)
        self.add_blank = add_blank
        self.vocab = vocab
        self.stochastic = "duration_noise" in encoder.input_names
        means = next(t for t in decoder.io.inputs if t.name == "prior_means") if hasattr(decoder, "io") else None
        self.channels = int(means.shape[1]) if means is not None and isinstance(means.shape[1], int) else None
        self.receptive_field = receptive_field
        self._encoder_outputs = encoder.output_names

    # --- construction

    @classmethod
    def from_model(cls, model, device: str | torch.device = "cpu", torch_dtype: torch.dtype = torch.float32) -> "VitsSynthesizer":
        """PyTorch runners around a ``VitsModel`` (the reference backend), run in ``torch_dtype``."""
        from talkrt.engines.runners import make_runner
        from talkrt.models.vits.graphs import decoder_receptive_field
        from talkrt.models.vits.specs import build_vits_graph, vits_specs_for_model
        from talkrt.models.vits.model import vits_info

        info = vits_info(model)
        specs = vits_specs_for_model(model)
        encoder, decoder = (
            make_runner("torch", spec=specs[graph], module=build_vits_graph(graph=graph, model=model), device=device, torch_dtype=torch_dtype)
            for graph in ("encoder", "decoder")
        )
        return cls(
            encoder,
            decoder,
            sample_rate=info.sample_rate,
            hop_length=info.hop_length,
            num_speakers=info.num_speakers,
            receptive_field=decoder_receptive_field(model.config),
            add_blank=info.add_blank,
            vocab=info.vocab,
            device=device,
        )

    @classmethod
    def from_manifest(
        cls, directory: str | os.PathLike, backend: str = "ort", device: str | torch.device = "cpu", trust: bool = False, torch_dtype: torch.dtype = torch.float32
    ) -> "VitsSynthesizer":
        """The graphs named by ``directory/manifest.json`` (written by ``talkrt.models.vits.specs.export_vits``).

        ``ort`` runs the ONNX files, ``trt`` the engines that ``build_vits_engines``
        recorded in the manifest, ``torch`` rebuilds the PyTorch modules from the
        preset and seed (or checkpoint) the manifest names.
        """
        from talkrt.engines.runners import make_runner

        directory = Path(directory)
        manifest = read_manifest(directory)
        if backend == "torch":
            from talkrt.models.vits.model import build_random_vits, load_vits

            if manifest.get("checkpoint"):
                model = load_vits(manifest["checkpoint"], trust=trust)[0]
            else:
                model = build_random_vits(manifest["preset"], seed=int(manifest.get("seed") or 0))
            return cls.from_model(model, device, torch_dtype)
        if backend == "ort":
            paths = {graph: directory / manifest["files"][graph] for graph in ("encoder", "decoder")}
        elif backend == "trt":
            engines = manifest.get("engines") or {}
            missing = [graph for graph in ("encoder", "decoder") if graph not in engines or not (directory / engines[graph]).is_file()]
            if missing:
                raise TalkrtError(
                    f"{directory} has no {' or '.join(missing)} engine; build them with "
                    f"`talkrt build {directory}` (or use the ort backend)"
                )
            paths = {graph: directory / engines[graph] for graph in ("encoder", "decoder")}
        else:
            raise TalkrtError(f"unknown backend {backend!r}; choose ort, trt or torch")
        runners = {graph: make_runner(backend, path, device=device) for graph, path in paths.items()}
        synthesizer = cls(
            runners["encoder"],
            runners["decoder"],
            sample_rate=manifest["sample_rate"],
            hop_length=manifest["hop"],
            num_speakers=manifest.get("num_speakers", 1),
            receptive_field=manifest.get("decoder_receptive_field_frames"),
            add_blank=manifest.get("add_blank", True),
            vocab=manifest.get("vocab"),
            device=device,
        )
        if synthesizer.channels is None:
            synthesizer.channels = int(manifest["channels"])
        return synthesizer

    # --- inputs

    def _batch(self, token_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids padded with 0, input_lengths) on the device from one or several sequences."""
        if isinstance(token_ids, torch.Tensor):
            if token_ids.dim() == 1:
                token_ids = [token_ids.tolist()]
            elif token_ids.dim() == 2:
                token_ids = token_ids.tolist()
            else:
                raise TalkrtError(f"token ids must be 1-D or 2-D, got shape {tuple(token_ids.shape)}")
        elif token_ids and not isinstance(token_ids[0], (list, tuple, torch.Tensor)):
            token_ids = [list(token_ids)]
        sequences = [list(map(int, s.tolist() if isinstance(s, torch.Tensor) else s)) for s in token_ids]
        if not sequences or any(len(s) == 0 for s in sequences):
            raise TalkrtError("nothing to synthesize: every item needs at least one token")
        width = max(len(s) for s in sequences)
        ids = torch.zeros(len(sequences), width, dtype=torch.int64)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.int64)
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
        return ids.to(self.device), lengths.to(self.device)

    def _speakers(self, speaker_id, batch: int) -> torch.Tensor | None:
        if self.num_speakers <= 1:
            if speaker_id is not None and bool(torch.as_tensor(speaker_id).ne(0).any()):
                raise TalkrtError(f"this VITS model has one speaker; got speaker_id {speaker_id}")
            return None
        ids = torch.as_tensor(0 if speaker_id is None else speaker_id, dtype=torch.int64).reshape(-1)
        if ids.numel() == 1:
            ids = ids.expand(batch)
        if ids.numel() != batch:
            raise TalkrtError(f"{ids.numel()} speaker ids for a batch of {batch}")
        if bool(((ids < 0) | (ids >= self.num_speakers)).any()):
            raise TalkrtError(f"speaker_id must be in 0..{self.num_speakers - 1}, got {ids.tolist()}")
        return ids.contiguous().to(self.device)

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def _scalar(self, value: float) -> torch.Tensor:
        return torch.tensor([float(value)], dtype=torch.float32, device=self.device)

    # --- the three steps

    def encode(
        self,
        token_ids,
        speaker_id=None,
        noise_scale_w: float = NOISE_SCALE_W,
        length_scale: float = 1.0,
        duration_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> EncodedText:
        """Run the encoder graph and length regulation."""
        input_ids, input_lengths = self._batch(token_ids)
        batch, tokens = input_ids.shape
        speakers = self._speakers(speaker_id, batch)
        inputs = {"input_ids": input_ids, "input_lengths": input_lengths, "length_scale": self._scalar(length_scale)}
        if self.stochastic:
            if duration_noise is None:
                duration_noise = torch.randn(batch, 2, tokens, generator=generator, device=self.device)
            elif tuple(duration_noise.shape) != (batch, 2, tokens):
                raise TalkrtError(f"duration_noise must be {(batch, 2, tokens)}, got {tuple(duration_noise.shape)}")
            inputs["duration_noise"] = duration_noise.to(self.device, torch.float32).contiguous()
            inputs["noise_scale_w"] = self._scalar(noise_scale_w)
        if speakers is not None:
            inputs["speaker_id"] = speakers
        outputs = self.encoder.run(inputs)
        durations = outputs["durations"]
        return EncodedText(durations, outputs["prior_means"], outputs["prior_log_variances"], outputs["input_mask"], regulate_lengths(durations), speakers)

    def latent_noise(self, encoded: EncodedText, latent_noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch, C, frames) prior noise: drawn, or the given tensor cut to the frame count."""
        batch, channels = encoded.prior_means.shape[:2]
        frames = encoded.frames
        if latent_noise is None:
            return torch.randn(batch, channels, frames, generator=generator, device=self.device)
        if latent_noise.dim() != 3 or latent_noise.shape[0] != batch or latent_noise.shape[1] != channels or latent_noise.shape[2] < frames:
            raise TalkrtError(f"latent_noise must be (batch={batch}, {channels}, >= {frames} frames), got {tuple(latent_noise.shape)}")
        return latent_noise[:, :, :frames].to(self.device, torch.float32)

    def _decoder_inputs(self, encoded: EncodedText, noise: torch.Tensor, noise_scale: float) -> dict[str, torch.Tensor]:
        regulation = encoded.regulation
        inputs = {
            "prior_means": expand_prior(encoded.prior_means, regulation),
            "prior_log_variances": expand_prior(encoded.prior_log_variances, regulation),
            "latent_noise": noise,
            "noise_scale": self._scalar(noise_scale),
            "output_mask": regulation.output_mask,
        }
        if encoded.speaker_id is not None:
            inputs["speaker_id"] = encoded.speaker_id
        return inputs

    def _decode_window(self, inputs: dict[str, torch.Tensor], start: int, stop: int) -> torch.Tensor:
        """The decoder graph on frames [start, stop) of the full-length inputs -> (batch, samples)."""
        # A window is a view at an arbitrary offset; engines need aligned, contiguous inputs.
        window = {name: (self._staging.copy(name, value[..., start:stop]) if value.dim() == 3 else value) for name, value in inputs.items()}
        return self.decoder.run(window)["waveform"][:, 0, :]

    def decode(self, encoded: EncodedText, noise_scale: float = NOISE_SCALE, latent_noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The decoder graph on the whole utterance -> (batch, frames * hop), padded."""
        noise = self.latent_noise(encoded, latent_noise, generator).contiguous()
        return self._decode_window(self._decoder_inputs(encoded, noise, noise_scale), 0, encoded.frames)

    # --- public calls

    def infer(
        self,
        token_ids,
        speaker_id=None,
        noise_scale: float = NOISE_SCALE,
        noise_scale_w: float = NOISE_SCALE_W,
        length_scale: float = 1.0,
        seed: int | None = None,
        duration_noise: torch.Tensor | None = None,
        latent_noise: torch.Tensor | None = None,
    ) -> SynthesisOutput:
        """Padded batch synthesis: the waveform (batch, samples) and each item's length."""
        generator = self._generator(seed)
        encoded = self.encode(token_ids, speaker_id, noise_scale_w, length_scale, duration_noise, generator)
        waveform = self.decode(encoded, noise_scale, latent_noise, generator)
        frame_lengths = encoded.regulation.frame_lengths
        return SynthesisOutput(waveform, frame_lengths * self.hop_length, encoded.durations, frame_lengths)

    def synthesize(
        self,
        token_ids,
        speaker_id=None,
        noise_scale: float = NOISE_SCALE,
        noise_scale_w: float = NOISE_SCALE_W,
        length_scale: float = 1.0,
        seed: int | None = None,
        duration_noise: torch.Tensor | None = None,
        latent_noise: torch.Tensor | None = None,
    ):
        """One sequence (list of ids or 1-D tensor) -> float32 waveform (samples,).

        Several sequences (list of lists or 2-D tensor) -> a list of waveforms, one
        per item, synthesized as one padded batch.
        """
        single = isinstance(token_ids, torch.Tensor) and token_ids.dim() == 1 or (
            not isinstance(token_ids, torch.Tensor) and len(token_ids) > 0 and not isinstance(token_ids[0], (list, tuple, torch.Tensor))
        )
        output = self.infer(token_ids, speaker_id, noise_scale, noise_scale_w, length_scale, seed, duration_noise, latent_noise)
        items = output.items()
        return items[0] if single else items

    def stream(
        self,
        token_ids,
        speaker_id=None,
        noise_scale: float = NOISE_SCALE,
        noise_scale_w: float = NOISE_SCALE_W,
        length_scale: float = 1.0,
        seed: int | None = None,
        duration_noise: torch.Tensor | None = None,
        latent_noise: torch.Tensor | None = None,
        first_chunk_frames: int = 16,
        chunk_frames: int = 64,
        margin_frames: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """One sequence -> waveform chunks (samples,) whose concatenation equals ``synthesize``.

        The encoder and length regulation run once; the decoder then runs on
        frames [start - margin, stop + margin) for each chunk [start, stop) and
        keeps the samples of [start, stop). The first chunk is short
        (``first_chunk_frames``) so audio starts early; ``margin_frames`` defaults to
        the decoder's receptive field (exact stitching); a smaller margin trades
        exactness for less work.
        """
        if first_chunk_frames < 1 or chunk_frames < 1:
            raise TalkrtError("chunk sizes must be at least one frame")
        margin = self.receptive_field if margin_frames is None else int(margin_frames)
        if margin is None:
            raise TalkrtError("the decoder's receptive field is unknown (no manifest): pass margin_frames")
        input_ids, _ = self._batch(token_ids)
        if input_ids.shape[0] != 1:
            raise TalkrtError("stream() takes one sequence; use synthesize() for a batch")
        generator = self._generator(seed)
        encoded = self.encode(token_ids, speaker_id, noise_scale_w, length_scale, duration_noise, generator)
        noise = self.latent_noise(encoded, latent_noise, generator)
        inputs = self._decoder_inputs(encoded, noise, noise_scale)
        frames = encoded.frames
        start, size = 0, first_chunk_frames
        while start < frames:
            stop = min(frames, start + size)
            window_start, window_stop = max(0, start - margin), min(frames, stop + margin)
            waveform = self._decode_window(inputs, window_start, window_stop)
            offset = (start - window_start) * self.hop_length
            yield waveform[0, offset : offset + (stop - start) * self.hop_length]
            start, size = stop, chunk_frames


# ----------------------------------------------------------------------------- manifest and engines


def read_manifest(directory: str | os.PathLike) -> dict:
    return read_family_manifest(directory, "vits", "vits", "VITS")


def build_vits_engines(directory: str | os.PathLike, options=None, graphs: Sequence[str] = ("encoder", "decoder")) -> dict:
    """Build engines for the manifest's encoder and decoder graphs and record them in the manifest."""
    from talkrt.engines.build import BuildOptions, build_engine
    from talkrt.fileio import write_text_atomic

    directory = Path(directory)
    manifest = read_manifest(directory)
    options = options or BuildOptions()
    engines = dict(manifest.get("engines") or {})
    for graph in graphs:
        if graph == "full":
            raise TalkrtError("the full VITS graph has a data-dependent output length: run it with ONNX Runtime, build encoder and decoder engines")
        result = build_engine(directory / manifest["files"][graph], directory / f"{graph}.engine", options)
        engines[graph] = result.engine.name
    manifest["engines"] = engines
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
