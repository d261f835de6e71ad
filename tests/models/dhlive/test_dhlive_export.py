"""DH_live export: reference + generator renderer graphs, per-frame Audio2Feature graph,
ONNX Runtime parity, streaming the audio graph, TensorRT-RTX builds (CPU-only)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from talkrt.errors import TalkrtError
from talkrt.models.registry import get_spec
from talkrt.export.onnx import export_onnx, read_metadata
from talkrt.export.validate import onnx_session
from talkrt.models.dhlive.model import Audio2Feature

GRAPHS = {
    "dhlive-render-reference": ("dhlive-render", {"graph": "reference"}),
    "dhlive-render-generator": ("dhlive-render", {"graph": "generator"}),
    "dhlive-audio": ("dhlive-audio", {}),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (spec, module, path, report): each graph exported and validated (batch 1 and 3) once."""
    out = tmp_path_factory.mktemp("dhlive")
    result = {}
    for name, (family, options) in GRAPHS.items():
        spec = get_spec(family, **options)
        assert spec.name == name
        module = spec.build_module(None, seed=0)
        path = out / f"{name}.onnx"
        report = export_onnx(spec, module, path)
        result[name] = (spec, module, path, report)
    return result


def test_export_parity_at_two_batch_sizes(exported) -> None:
    """export_onnx compares ORT with PyTorch at batch 1 and 3, shapes the trace (batch 2) never saw."""
    for name, (spec, _, _, report) in exported.items():
        points = sorted({r.point["batch"] for r in report.validation})
        assert points == [1, 3], name
        assert {r.output for r in report.validation} == {t.name for t in spec.outputs}
        assert all(r.ok for r in report.validation), [r.describe() for r in report.validation if not r.ok]
        assert max(r.max_abs for r in report.validation) < 1e-5, name


def test_graph_shapes_ops_and_opsets(exported) -> None:
    def dims(model):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)}

    reference = onnx.load(str(exported["dhlive-render-reference"][2]))
    assert dims(reference) == {
        "reference": ["batch", 30, 256, 256],
        "ref_in_feature": ["batch", 256, 64, 64],
        "ref_trans_feature": ["batch", 256, 64, 64],
    }
    generator = onnx.load(str(exported["dhlive-render-generator"][2]))
    assert dims(generator) == {
        "source": ["batch", 6, 256, 256],
        "ref_in_feature": ["batch", 256, 64, 64],
        "ref_trans_feature": ["batch", 256, 64, 64],
        "image": ["batch", 3, 256, 256],
    }
    ops = [node.op_type for node in generator.graph.node]
    assert ops.count("GridSample") == 1  # AdaAT's 4-D rewrite: one node, no 5-D sampling
    assert generator.opset_import[0].version <= 19 and reference.opset_import[0].version <= 19
    audio = onnx.load(str(exported["dhlive-audio"][2]))
    assert dims(audio) == {
        "fbank": ["batch", 2, 80],  # T fixed to one video frame
        "h0": [2, "batch", 192],
        "c0": [2, "batch", 192],
        "coefficients": ["batch", 6],
        "hn": [2, "batch", 192],
        "cn": [2, "batch", 192],
    }
    assert "LSTM" in {node.op_type for node in audio.graph.node}
    assert audio.opset_import[0].version == 17


def test_metadata_and_spec_options(exported) -> None:
    spec, _, path, _ = exported["dhlive-render-generator"]
    meta = read_metadata(path)
    assert meta["talkrt.family"] == "dhlive-render" and meta["talkrt.graph"] == "generator"
    assert json.loads(meta["talkrt.spec"]) == spec.to_json()
    assert spec.keep_fp32_ops == ("GridSample",)
    mouth = next(g for g in spec.gates if g.region)
    assert mouth.threshold == 40.0 and mouth.region == ((None, None), (96, 240), (32, 224))
    assert next(g for g in spec.gates if not g.region).threshold == 35.0
    assert "filled black" in meta["talkrt.tensor.source"]
    assert read_metadata(exported["dhlive-audio"][2])["talkrt.fps"] == "25"
    with pytest.raises(TalkrtError, match="graphs generator, reference"):
        get_spec("dhlive-render", graph="decoder")


def test_reference_then_generator_in_ort_equals_pytorch(exported) -> None:
    """The two renderer graphs chained through ONNX Runtime equal the model's single forward (batch 2)."""
    ref_spec, ref_module, ref_path, _ = exported["dhlive-render-reference"]
    gen_spec, gen_module, gen_path, _ = exported["dhlive-render-generator"]
    assert ref_module.model is not gen_module.model  # built separately, from the same seed
    reference = ref_spec.example_inputs({"batch": 2}, seed=11)["reference"]
    source = gen_spec.example_inputs({"batch": 2}, seed=12)["source"]
    ref_in, ref_trans = onnx_session(ref_path).run(None, {"reference": reference.numpy()})
    (image,) = onnx_session(gen_path).run(None, {"source": source.numpy(), "ref_in_feature": ref_in, "ref_trans_feature": ref_trans})
    with torch.no_grad():
        expected = gen_module.model(source, reference).numpy()
    assert image.shape == (2, 3, 256, 256)
    assert float(np.abs(image - expected).max()) < 1e-5


def test_streamed_audio_graph_equals_the_full_sequence(exported) -> None:
    """50 video frames through the per-frame ONNX graph, h/c fed back, against the whole-utterance PyTorch forward."""
    _, module, path, _ = exported["dhlive-audio"]
    model: Audio2Feature = module.model
    frames, batch = 50, 2
    generator = torch.Generator().manual_seed(13)
    fbank = torch.randn(batch, 2 * frames, 80, generator=generator) * 3 - 5
    h0, c0 = Audio2Feature.initial_state(batch)
    with torch.no_grad():
        expected, expected_h, expected_c = model(fbank, h0, c0)
    session = onnx_session(path)
    h, c = h0.numpy(), c0.numpy()
    outputs = []
    for t in range(frames):
        coefficients, h, c = session.run(None, {"fbank": fbank[:, 2 * t : 2 * t + 2].numpy(), "h0": h, "c0": c})
        outputs.append(coefficients)
    streamed = np.stack(outputs, 1)
    assert float(np.abs(streamed - expected.numpy()).max()) < 1e-5
    assert float(np.abs(h - expected_h.numpy()).max()) < 1e-5 and float(np.abs(c - expected_c.numpy()).max()) < 1e-5


def test_tensorrt_rtx_builds_all_three_graphs(exported, tmp_path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    from talkrt.engines.build import BuildOptions, build_engine, read_sidecar

    for name, (spec, _, path, _) in exported.items():
        result = build_engine(path, tmp_path / f"{name}.engine", BuildOptions(backend="tensorrt-rtx", cache=False))
        sidecar = read_sidecar(result.engine)
        assert result.engine.stat().st_size > 100_000
        assert sidecar["family"] == spec.family and sidecar["graph"] == spec.graph and sidecar["backend"]["name"] == "tensorrt-rtx"
        profile = sidecar["profiles"][0]
        if name == "dhlive-render-generator":
            assert profile["source"] == {"min": [1, 6, 256, 256], "opt": [1, 6, 256, 256], "max": [8, 6, 256, 256]}
            assert profile["ref_trans_feature"]["max"] == [8, 256, 64, 64]
        elif name == "dhlive-render-reference":
            assert profile["reference"] == {"min": [1, 30, 256, 256], "opt": [1, 30, 256, 256], "max": [4, 30, 256, 256]}
        else:
            assert profile["fbank"] == {"min": [1, 2, 80], "opt": [1, 2, 80], "max": [4, 2, 80]}
            assert profile["h0"] == {"min": [2, 1, 192], "opt": [2, 1, 192], "max": [2, 4, 192]}
