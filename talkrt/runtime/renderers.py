"""Renderer stages: audio features -> face crops, one class per model family.

A renderer declares its audio feature and alignment, computes the features on
the device, and fills its runners' preallocated inputs for a batch of frames
from the avatar and the feature windows. Every renderer returns faces as
(n, 3, H, W) BGR in [0, 1] in its avatar's crop size, ready for the compositor.

* Wav2Lip: 80 Hz mel windows + the masked and reference 96x96 face
  (talkrt.models.wav2lip.renderer).
* DINet: 25 Hz 29-dim DeepSpeech-like windows (precomputed, or HuBERT-ASR CTC
  emissions through DINet_optimized's mapper) + the masked 416x320 face + 5
  fixed references; RGB in and out (talkrt.models.dinet.renderer).
* DH_live: kaldi fbank -> Audio2Feature (LSTM, one step per video frame) -> 6 PCA
  coefficients -> mouth image -> prompt, + the masked 256x256 face and the
  reference features computed once per avatar (talkrt.models.dhlive.renderer).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from talkrt.engines.runners import Runner
from talkrt.errors import TalkrtError
from talkrt.models.dhlive.renderer import DHLiveRenderer
from talkrt.models.dinet.renderer import CtcFeatures, DINetRenderer, PrecomputedFeatures
from talkrt.models.wav2lip.renderer import Wav2LipRenderer

RENDERERS = {"wav2lip": Wav2LipRenderer, "dinet": DINetRenderer, "dhlive": DHLiveRenderer}

# Each renderer's graphs: role -> (export family, spec options, file stem in an --engines directory).
RENDERER_GRAPHS: dict[str, dict[str, tuple[str, dict, str]]] = {
    "wav2lip": {"generator": ("wav2lip", {}, "wav2lip")},
    "dinet": {
        "generator": ("dinet", {}, "dinet"),
        "asr": ("hubert-asr", {}, "hubert-asr"),
        "mapper": ("dinet-mapper", {}, "dinet-mapper"),
    },
    "dhlive": {
        "generator": ("dhlive-render", {"graph": "generator"}, "dhlive-render-generator"),
        "reference": ("dhlive-render", {"graph": "reference"}, "dhlive-render-reference"),
        "audio": ("dhlive-audio", {}, "dhlive-audio"),
    },
}


def expected_graph(renderer: str, role: str) -> tuple[str, str]:
    """(family, graph) of the ONNX graph or engine that plays ``role`` for ``renderer``."""
    family, options, _ = RENDERER_GRAPHS[renderer][role]
    return family, options.get("graph", family)


def check_renderer_models(renderer: str, backend: str, models: dict) -> None:
    """Every graph file given is one ``backend`` runs and the graph its role needs: checked
    before anything loads, so a wrong file is one line with the fix."""
    from talkrt.engines.model_files import check_model_file

    if backend == "torch":
        return
    for role, path in models.items():
        if path is not None:
            check_model_file(path, backend, expected_graph(renderer, role))


def build_renderer(
    name: str,
    backend: str,
    models: Mapping[str, str | Path | None],
    device: torch.device,
    stream: torch.cuda.Stream | None = None,
    *,
    features: np.ndarray | None = None,
    pca=None,
    asr_preset: str | None = None,
    torch_dtype: torch.dtype = torch.float32,
):
    """A renderer with one runner per graph; ``models`` maps a role to an engine / ONNX file / checkpoint.

    A role without a file runs its random-weight PyTorch module (torch backend only), in
    ``torch_dtype`` (float16 for the half-precision baseline).
    DINet takes ``features`` (precomputed, (T, 29)) or runs the asr + mapper graphs;
    a random-weight asr graph is the tiny preset (its emissions mean nothing either way).
    """
    from talkrt.engines.runners import make_runner
    from talkrt.export import get_spec

    if name not in RENDERERS:
        raise TalkrtError(f"unknown renderer {name!r}; available: {', '.join(RENDERERS)}")

    def runner(role: str, **spec_options) -> Runner:
        family, options, stem = RENDERER_GRAPHS[name][role]
        spec = get_spec(family, **options, **spec_options)
        path = models.get(role)
        if backend != "torch":
            if path is None:
                raise TalkrtError(f"{name} needs its {role} graph ({stem}.{'engine' if backend == 'trt' else 'onnx'}): export it with `talkrt export {family}`")
            return make_runner(backend, path, device=device, stream=stream, expect=expected_graph(name, role))
        module = spec.build_module(str(path)) if path else spec.build_module(None, seed=0)
        return make_runner("torch", spec=spec, module=module, device=device, torch_dtype=torch_dtype)

    if name == "wav2lip":
        return Wav2LipRenderer(runner("generator"))
    if name == "dinet":
        if features is not None:
            source = PrecomputedFeatures(features, device)
        else:
            checkpoint = models.get("asr")
            preset = asr_preset or ("hubert-large-ls960-ft" if checkpoint else "tiny-hubert-asr")
            extra = {"checkpoint": str(checkpoint)} if backend == "torch" and checkpoint else {}
            source = CtcFeatures(runner("asr", preset=preset, **extra), runner("mapper"), stream)
        return DINetRenderer(runner("generator"), source)
    from talkrt.models.dhlive.model import MouthPCA

    if backend == "torch" and models.get("reference") is None:
        models = {**models, "reference": models.get("generator")}  # render.pth holds both halves
    return DHLiveRenderer(runner("generator"), runner("reference"), runner("audio"), pca or MouthPCA.random(), stream)
