"""Wav2Lip export: parity with PyTorch at fresh shapes, metadata, atomic writes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from talkrt.errors import ValidationFailed
from talkrt.models.registry import get_spec
from talkrt.export.onnx import export_onnx, read_metadata
from talkrt.export.spec import Dim, ExportSpec, TensorSpec, Tolerance
from talkrt.export.validate import onnx_session

import talkrt


@pytest.fixture(scope="module")
def spec():
    return get_spec("wav2lip")


def test_onnx_matches_pytorch_at_other_batch_sizes(wav2lip_onnx, spec) -> None:
    """Batches the export never saw (traced at 8, validated at 1 and 5) still match."""
    module = spec.build_module(None, seed=0)
    session = onnx_session(wav2lip_onnx)
    for batch in (2, 13):
        inputs = spec.example_inputs({"batch": batch}, seed=100 + batch)
        with torch.no_grad():
            expected = module(inputs["audio_sequences"], inputs["face_sequences"]).numpy()
        (actual,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        assert actual.shape == (batch, 3, 96, 96)
        np.testing.assert_allclose(actual, expected, atol=spec.tolerance.atol, rtol=spec.tolerance.rtol)


def test_graph_is_clean_and_dynamic(wav2lip_onnx) -> None:
    model = onnx.load(str(wav2lip_onnx))
    ops = {node.op_type for node in model.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions
    assert ops <= {"Conv", "ConvTranspose", "Relu", "Add", "Concat", "Sigmoid"}
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*model.graph.input, *model.graph.output)}
    assert dims == {
        "audio_sequences": ["batch", 1, 80, 16],
        "face_sequences": ["batch", 6, 96, 96],
        "generated_faces": ["batch", 3, 96, 96],
    }
    assert model.opset_import[0].version == 18


def test_metadata_describes_the_graph(wav2lip_onnx, spec) -> None:
    meta = read_metadata(wav2lip_onnx)
    assert meta["talkrt.family"] == "wav2lip" and meta["talkrt.graph"] == "wav2lip"
    assert meta["talkrt.version"] == talkrt.__version__
    assert "BGR in [0, 1]" in meta["talkrt.tensor.face_sequences"]
    assert "80 mel bins x 16 frames" in meta["talkrt.tensor.audio_sequences"]
    stored = json.loads(meta["talkrt.spec"])
    assert stored == spec.to_json()
    assert stored["dims"] == {"batch": [1, 8, 128]}


def _identity_spec(tolerance: Tolerance) -> ExportSpec:
    return ExportSpec(
        family="toy",
        graph="toy",
        build_module=lambda *a, **k: torch.nn.Tanh(),
        inputs=(TensorSpec("x", ("n", 4)),),
        outputs=(TensorSpec("y", ("n", 4)),),
        dims=(Dim("n", 1, 2, 8),),
        opset=18,
        exporter="dynamo",
        exporter_reason="test",
        tolerance=tolerance,
        validation_points=({"n": 1}, {"n": 3}),
    )


def test_failed_validation_writes_nothing(tmp_path) -> None:
    impossible = _identity_spec(Tolerance(atol=-1.0, rtol=0.0))
    out = tmp_path / "toy.onnx"
    with pytest.raises(ValidationFailed, match="nothing was written"):
        export_onnx(impossible, torch.nn.Tanh(), out)
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous artifact")
    with pytest.raises(ValidationFailed):
        export_onnx(impossible, torch.nn.Tanh(), out)
    assert out.read_bytes() == b"previous artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.onnx"]


def test_legacy_exporter_path(tmp_path) -> None:
    spec = dataclasses.replace(_identity_spec(Tolerance(1e-6, 1e-6)), exporter="legacy", opset=17)
    report = export_onnx(spec, torch.nn.Tanh(), tmp_path / "legacy.onnx")
    assert all(r.ok for r in report.validation) and len(report.validation) == 2
    model = onnx.load(str(tmp_path / "legacy.onnx"))
    assert [d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim] == ["n", ""]


def test_spec_rejects_validation_at_the_traced_shape() -> None:
    with pytest.raises(ValueError, match="equals the traced shape"):
        dataclasses.replace(_identity_spec(Tolerance(0, 0)), validation_points=({"n": 2},))
