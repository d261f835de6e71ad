"""A VITS voice from an exported directory, and text spoken with it (the glue `talkrt tts` and
`talkrt run --text` share): whole (``speak``) or chunk by chunk as it is decoded (``speak_stream``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from talkrt.errors import TalkrtError


def load_voice(directory: Path, backend: str, device: str, note: Callable[[str], None] = lambda text: None, reference: tuple[Path, str] | None = None):
    """(synthesizer, manifest) of the voice exported to ``directory``, run with ``backend``
    (engines for trt) on ``device`` (auto: chosen for the backend, the reason given to ``note``)."""
    from talkrt.engines.devices import resolve_device
    from talkrt.models.vits.synth import VitsSynthesizer, read_manifest

    if reference is not None:
        raise TalkrtError(f"{directory} is a VITS voice, which speaks as trained: a reference (--ref-audio, --ref-text) is for GPT-SoVITS voices")
    choice = resolve_device(device, backend)
    note(f"device: {choice.device} ({choice.reason})")
    return VitsSynthesizer.from_manifest(directory, backend=backend, device=choice.device), read_manifest(directory)


def _ids(text: str, manifest: dict, skip_unknown: bool) -> list[int]:
    from talkrt.models.vits.text import text_to_ids

    ids = text_to_ids(text, manifest, skip_unknown)
    if not ids:
        raise TalkrtError("the text has no characters this voice can speak")
    return ids


def speak(text: str, synthesizer, manifest: dict, speaker: int | None = None, seed: int = 0, skip_unknown: bool = False) -> tuple[torch.Tensor, int, float]:
    """Text -> (float32 waveform on the voice's device, sample rate, seconds the synthesis took)."""
    ids = _ids(text, manifest, skip_unknown)
    start = time.perf_counter()
    waveform = synthesizer.synthesize(ids, speaker_id=speaker, seed=seed).float()
    if waveform.is_cuda:  # the time reported is the synthesis, not its launch
        torch.cuda.synchronize(waveform.device)
    return waveform, manifest["sample_rate"], time.perf_counter() - start


def speak_stream(text: str, synthesizer, manifest: dict, speaker: int | None = None, seed: int = 0, skip_unknown: bool = False,
                 chunk_ms: float = 40.0) -> tuple[Iterator[torch.Tensor], int]:
    """Text -> (float32 waveform chunks on the voice's device, as the decoder makes them; sample rate).

    Joined, the chunks equal ``speak``'s waveform for the same seed (the decoder runs on each
    chunk with its receptive field as margin on both sides). The first chunk holds about
    ``chunk_ms`` of speech, so the first audio is ready after one short decode; the later ones
    are at least as long and at least twice the margin, so the margins at most double the
    decoder's work. The text is checked now; the synthesis runs as the chunks are drawn.
    """
    if not chunk_ms > 0:
        raise TalkrtError(f"chunk_ms must be positive, got {chunk_ms}")
    ids = _ids(text, manifest, skip_unknown)
    rate = int(manifest["sample_rate"])
    first = max(1, round(chunk_ms * rate / 1000 / synthesizer.hop_length))
    steady = max(first, 2 * (synthesizer.receptive_field or 0))
    chunks = synthesizer.stream(ids, speaker_id=speaker, seed=seed, first_chunk_frames=first, chunk_frames=steady)
    return (chunk.float() for chunk in chunks), rate
