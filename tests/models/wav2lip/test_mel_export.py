"""The Wav2Lip mel spectrogram as an ONNX graph: parity with PyTorch up to 60 s, silence, a real TensorRT-RTX build."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from talkrt.errors import TalkrtError
from talkrt.models.registry import get_spec
from talkrt.models.wav2lip.mel import MIN_SAMPLES
from talkrt.export.onnx import export_onnx, read_metadata, to_onnx_proto
from talkrt.export.validate import onnx_session
from talkrt.runtime.audio import WAV2LIP_MEL_CONFIG, Wav2LipMel, mel_filterbank, mel_num_frames, wav2lip_mel


def speech_like(batch: int, num_samples: int, seed: int = 0) -> np.ndarray:
    """Voiced harmonics with vibrato and a 3 Hz syllable envelope over a faint noise floor, (batch, S) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / 16000.0
    rows = []
    for row in range(batch):
        f0 = 105.0 + 20.0 * row + 10.0 * np.sin(2 * np.pi * 4.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / 16000.0
        voiced = sum(np.sin(k * phase + row) / k for k in range(1, 30))
        envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 3.0 * t + row))
        rows.append(0.3 * envelope * voiced + 0.005 * rng.standard_normal(num_samples))
    return np.stack(rows).astype(np.float32)


@pytest.fixture(scope="module")
def spec():
    return get_spec("mel")


@pytest.fixture(scope="module")
def mel_onnx(spec, tmp_path_factory):
    path = tmp_path_factory.mktemp("mel") / "wav2lip-mel.onnx"
    report = export_onnx(spec, spec.build_module(None), path)
    assert len(report.validation) == 2 and all(r.ok for r in report.validation)
    return path


@pytest.fixture(scope="module")
def session(mel_onnx):
    return onnx_session(mel_onnx)


# (batch, samples): the shortest input, a length off the hop grid, the opt point, odd batch, and 60 s.
@pytest.mark.parametrize("batch, num_samples", [(1, MIN_SAMPLES), (1, 3201), (2, 32000), (3, 40007), (1, 60 * 16000)])
def test_onnx_matches_torch_at_several_lengths(session, batch: int, num_samples: int) -> None:
    waveform = torch.from_numpy(speech_like(batch, num_samples, seed=num_samples))
    (actual,) = session.run(["mel"], {"waveform": waveform.numpy()})
    assert actual.shape == (batch, 80, mel_num_frames(num_samples)) == (batch, 80, num_samples // 200 + 1)
    with torch.no_grad():
        exported_path = Wav2LipMel()(waveform).numpy()  # the real-valued STFT the graph was traced from
    runtime_path = wav2lip_mel(waveform).numpy()  # torch.stft, what the runtime uses
    np.testing.assert_allclose(actual, exported_path, atol=1e-4, rtol=0)
    np.testing.assert_allclose(actual, runtime_path, atol=1e-4, rtol=0)
    assert actual.min() >= -4.0 and actual.max() <= 4.0
    assert actual.std() > 0.3  # a real spectrogram, not a constant


def test_silence_is_the_finite_floor_through_onnx_runtime(session) -> None:
    (mel,) = session.run(["mel"], {"waveform": np.zeros((2, 16000), np.float32)})
    assert np.isfinite(mel).all()
    np.testing.assert_array_equal(mel, np.full((2, 80, 81), -WAV2LIP_MEL_CONFIG.max_abs_value, np.float32))


def test_graph_refuses_inputs_shorter_than_its_reflect_pad(session) -> None:
    """The Pad node's reflect mode needs more samples than the 400-sample pad; the spec says so."""
    with pytest.raises(Exception, match="(?i)pad"):
        session.run(["mel"], {"waveform": np.zeros((1, MIN_SAMPLES - 1), np.float32)})


def test_graph_is_small_dynamic_and_described(mel_onnx, spec) -> None:
    model = onnx.load(str(mel_onnx))
    ops = {node.op_type for node in model.graph.node}
    assert {"Pad", "Conv", "ReduceL2", "MatMul", "Log"} <= ops
    assert not ops & {"STFT", "DFT", "ScatterND"}  # the real-valued STFT, and no in-place slice update
    assert set(spec.keep_fp32_ops) <= ops  # every op the precision plan names exists
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)}
    assert dims == {"waveform": ["batch", "samples"], "mel": ["batch", 80, "mel_frames"]}
    assert model.opset_import[0].version == 18
    assert sum(np.prod(i.dims) for i in model.graph.initializer) < 2 * (802 * 800 + 80 * 401)  # constants only
    meta = read_metadata(mel_onnx)
    assert meta["talkrt.family"] == "mel" and meta["talkrt.graph"] == "wav2lip-mel"
    assert (meta["talkrt.sample_rate"], meta["talkrt.feature_rate"], meta["talkrt.hop"]) == ("16000", "80", "200")
    assert meta["talkrt.alignment"] == "wav2lip_mel"
    stored = json.loads(meta["talkrt.spec"])
    assert stored == spec.to_json()
    assert stored["dims"] == {"batch": [1, 1, 4], "samples": [3200, 32000, 480000]}
    assert stored["derived_dims"] == {"mel_frames": "floor(samples / 200) + 1"}


def test_module_has_no_weights(spec) -> None:
    module = spec.build_module(None)
    assert not module.training and module.state_dict() == {}
    with pytest.raises(TalkrtError, match="no weights"):
        spec.build_module("wav2lip.pth")


def test_export_does_not_poison_the_runtime_caches(spec) -> None:
    """Tracing wav2lip_mel with its cached filterbank must not leave fake tensors in the cache."""

    class CachedMel(torch.nn.Module):
        def forward(self, waveform):
            return wav2lip_mel(waveform)

    mel_filterbank.cache_clear()
    to_onnx_proto(spec, CachedMel())
    waveform = torch.from_numpy(speech_like(1, 8000))
    assert type(mel_filterbank(waveform.device, waveform.dtype)) is torch.Tensor
    torch.testing.assert_close(wav2lip_mel(waveform), Wav2LipMel()(waveform), atol=1e-4, rtol=0)


def test_tensorrt_rtx_builds_the_graph(mel_onnx, tmp_path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    from talkrt.engines.build import BuildOptions, build_engine

    result = build_engine(mel_onnx, tmp_path / "mel.engine", BuildOptions(backend="tensorrt-rtx"))
    assert result.engine.stat().st_size > 0
    assert result.metadata["family"] == "mel" and result.metadata["graph"] == "wav2lip-mel"
    assert result.metadata["profiles"] == [{"waveform": {"min": [1, 3200], "opt": [1, 32000], "max": [4, 480000]}}]
