"""PyTorch -> ONNX: one ExportSpec per graph, export and validation (precision plans: talkrt/precision/).

Families register a spec factory here; their modules are imported only when used.
"""

from __future__ import annotations

import importlib

from talkrt.errors import TalkrtError

# family -> "module:factory"; the factory returns the family's ExportSpec.
FAMILIES: dict[str, str] = {
    "wav2lip": "talkrt.models.wav2lip.specs:wav2lip_spec",
    "hubert": "talkrt.models.hubert.specs:hubert_spec",
    "wav2vec2": "talkrt.models.hubert.specs:wav2vec2_spec",
    "hubert-asr": "talkrt.models.hubert.specs:asr_spec",
    "mel": "talkrt.models.wav2lip.mel:mel_spec",
    "vits": "talkrt.models.vits.specs:vits_spec",
    "dinet": "talkrt.models.dinet.specs:dinet_spec",
    "dinet-mapper": "talkrt.models.dinet.specs:mapper_spec",
    "dhlive-render": "talkrt.models.dhlive.specs:render_spec",
    "dhlive-audio": "talkrt.models.dhlive.specs:audio_spec",
}


def get_spec(family: str, **options):
    """The ExportSpec of ``family`` (options are the family's own, e.g. a preset)."""
    if family not in FAMILIES:
        raise TalkrtError(f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    module_name, factory = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module_name), factory)(**options)
