"""DINet export: ORT parity at batches the trace never saw, one 4-D GridSample, TensorRT-RTX builds."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from talkrt.models.registry import get_spec
from talkrt.export.onnx import export_onnx, read_metadata
from talkrt.export.validate import onnx_session


@pytest.fixture(scope="module")
def dinet_export(tmp_path_factory):
    """The random-weight generator exported once; export_onnx validates it at the spec's points (batch 1 and 3, traced at 2)."""
    spec = get_spec("dinet")
    module = spec.build_module(None, seed=0)
    path = tmp_path_factory.mktemp("dinet") / "dinet.onnx"
    report = export_onnx(spec, module, path)
    return spec, module, path, report


@pytest.fixture(scope="module")
def mapper_export(tmp_path_factory):
    spec = get_spec("dinet-mapper")
    module = spec.build_module(None, seed=0)
    path = tmp_path_factory.mktemp("mapper") / "dinet-mapper.onnx"
    return spec, module, path, export_onnx(spec, module, path)


def test_dinet_parity_at_untraced_batches(dinet_export) -> None:
    spec, _module, _path, report = dinet_export
    assert spec.trace_point == {"batch": 2}
    assert sorted(r.point["batch"] for r in report.validation) == [1, 3]
    for result in report.validation:
        assert result.ok and result.max_abs < 1e-4, result.describe()


def test_dinet_graph_has_one_4d_gridsample(dinet_export) -> None:
    _spec, _module, path, _report = dinet_export
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    nodes = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(nodes) == 1
    (node,) = nodes
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes.get("mode", b"bilinear") == b"bilinear"  # opset 18 spelling (20 renamed it "linear")
    assert attributes.get("padding_mode", b"zeros") == b"zeros" and attributes.get("align_corners", 0) == 0
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    assert ranks[node.input[0]] == 4 and ranks[node.input[1]] == 4
    assert max(ranks.values()) <= 4  # no 5-D tensor anywhere in the graph
    assert model.opset_import[0].version == 18


def test_dinet_metadata(dinet_export) -> None:
    spec, _module, path, _report = dinet_export
    meta = read_metadata(path)
    assert meta["talkrt.family"] == "dinet"
    assert meta["talkrt.face_size"] == "416x320" and meta["talkrt.feature"] == "deepspeech-25hz-29"
    assert meta["talkrt.mouth_region"] == "rows 128:384, cols 32:288"
    assert "mouth region" in meta["talkrt.tensor.source_image"] and "RGB" in meta["talkrt.tensor.source_image"]
    stored = json.loads(meta["talkrt.spec"])
    assert stored == spec.to_json() and stored["dims"] == {"batch": [1, 1, 8]}
    assert stored["keep_fp32_ops"] == ["GridSample"]
    assert [g["region"] for g in stored["gates"]] == [[[None, None], [128, 384], [32, 288]], []]  # (channels, rows, cols)


def test_mapper_parity(mapper_export) -> None:
    spec, module, path, report = mapper_export
    assert all(r.ok for r in report.validation) and len(report.validation) == 2
    session = onnx_session(path)
    inputs = spec.example_inputs({"batch": 2, "frames": 251}, seed=9)
    with torch.no_grad():
        expected = module(inputs["emissions"]).numpy()
    (actual,) = session.run(None, {"emissions": inputs["emissions"].numpy()})
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-3)
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "frames", 29]


@pytest.mark.parametrize("which", ["dinet", "mapper"])
def test_tensorrt_rtx_builds(which, dinet_export, mapper_export, tmp_path) -> None:
    pytest.importorskip("tensorrt_rtx")
    from talkrt.engines.build import BuildOptions, build_engine

    spec, _module, path, _report = dinet_export if which == "dinet" else mapper_export
    result = build_engine(path, tmp_path / f"{which}.engine", BuildOptions(backend="tensorrt-rtx", cache=False))
    assert result.engine.stat().st_size > 0
    assert result.metadata["family"] == spec.family
    profile = result.metadata["profiles"][0]
    first = spec.inputs[0]
    assert profile[first.name]["max"][0] == spec.dim("batch").max
