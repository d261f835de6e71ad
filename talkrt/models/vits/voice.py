"""A VITS voice from an exported directory, and text spoken with it (the glue `talkrt tts` and
`talkrt run --text` share)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from talkrt.errors import TalkrtError

def load_voice(directory: Path, backend: str, device: str, note: Callable[[str], None] = lambda text: None):
    """(synthesizer, manifest) of the voice exported to ``directory``, run with ``backend``
    (engines for trt) on ``device`` (auto: chosen for the backend, the reason given to ``note``)."""
    from talkrt.engines.devices import resolve_device
    from talkrt.models.vits.synth import VitsSynthesizer, read_manifest

    choice = resolve_device(device, backend)
    note(f"device: {choice.device} ({choice.reason})")
    return VitsSynthesizer.from_manifest(directory, backend=backend, device=choice.device), read_manifest(directory)


def speak(text: str, synthesizer, manifest: dict, speaker: int | None = None, seed: int = 0, skip_unknown: bool = False) -> tuple[torch.Tensor, int, float]:
    """Text -> (float32 waveform on the voice's device, sample rate, seconds the synthesis took)."""
    from talkrt.models.vits.text import text_to_ids

    ids = text_to_ids(text, manifest, skip_unknown)
    if not ids:
        raise TalkrtError("the text has no characters this voice can speak")
    start = time.perf_counter()
    waveform = synthesizer.synthesize(ids, speaker_id=speaker, seed=seed).float()
    if waveform.is_cuda:  # the time reported is the synthesis, not its launch
        torch.cuda.synchronize(waveform.device)
    return waveform, manifest["sample_rate"], time.perf_counter() - start
