"""What renderers share: shapes read from the graph a runner serves, and the lifecycle's capture fact."""

from __future__ import annotations

import pytest
import torch

from talkrt.engines.runners import make_runner
from talkrt.models.registry import get_spec
from talkrt.models.wav2lip.renderer import Wav2LipRenderer
from talkrt.runtime.renderer_base import batch_buffers, static_dims


def test_shapes_come_from_the_graph_on_every_backend(wav2lip_onnx) -> None:
    spec = get_spec("wav2lip")
    torch_runner = make_runner("torch", spec=spec, module=spec.build_module(None, seed=0))
    ort_runner = make_runner("ort", wav2lip_onnx)
    for runner in (torch_runner, ort_runner):
        assert static_dims(runner, "face_sequences") == (6, 96, 96)
        assert static_dims(runner, "audio_sequences") == (1, 80, 16)
        buffers = batch_buffers(runner, 3, ("audio_sequences", "face_sequences"))
        assert {k: tuple(v.shape) for k, v in buffers.items()} == {"audio_sequences": (3, 1, 80, 16), "face_sequences": (3, 6, 96, 96)}
        assert all(v.dtype == torch.float32 for v in buffers.values())
        renderer = Wav2LipRenderer(runner)
        assert renderer.crop_size == (96, 96) and renderer.feature_channels == 80
    # ONNX Runtime synchronises inside run(): a renderer over it must not be captured.
    assert Wav2LipRenderer(torch_runner).capturable and not Wav2LipRenderer(ort_runner).capturable
    with pytest.raises(ValueError, match="static dims after the batch"):
        from talkrt.engines.runners.base import GraphIO
        from talkrt.export.spec import TensorSpec

        class Dynamic:
            io = GraphIO((TensorSpec("x", ("batch", "frames")),), ())
            device = torch.device("cpu")

        static_dims(Dynamic(), "x")


def test_warmup_runs_the_features_and_forgets_them() -> None:
    from talkrt.models.dhlive.model import MouthPCA
    from talkrt.runtime.renderers import build_renderer

    renderer = build_renderer("dhlive", "torch", {}, torch.device("cpu"), pca=MouthPCA.random(3))
    wav = torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.1
    fresh = renderer.features(wav).clone()
    renderer.reset()
    warmed = renderer.warmup()
    assert warmed.shape[0] == renderer.feature_channels
    torch.testing.assert_close(renderer.features(wav), fresh, rtol=0, atol=0)  # no LSTM state left behind
