"""Mixed FP16 for strongly typed engines: real ONNX Runtime runs and real TensorRT-RTX builds, no mocks."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from talkrt.engines.build import BuildOptions, build_engine
from talkrt.errors import TalkrtError
from talkrt.models.registry import get_spec
from talkrt.export.onnx import export_onnx, read_metadata
from talkrt.precision.gates import gate_value, gates_from_spec_json
from talkrt.precision.plan import plan_precision
from talkrt.precision.report import PrecisionReport
from talkrt.precision.rewrite import convert_to_mixed
from talkrt.export.spec import Dim, ExportSpec, Gate, TensorSpec, Tolerance

pytestmark = pytest.mark.filterwarnings("ignore")
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
# Nodes that read a float tensor only for its shape, or convert it to an integer type, carry no precision.
UNTYPED_READERS = ("Shape", "Size")


# --------------------------------------------------------------------------- helpers


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def rtx_build(model: onnx.ModelProto, tmp_path, name: str) -> None:
    """Parse and build as a strongly typed TensorRT-RTX network (any Half/Float mismatch fails the parse)."""
    pytest.importorskip("tensorrt_rtx", reason="CI installs tensorrt-rtx-cu13; this skip is for partial installs only")
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    result = build_engine(path, tmp_path / f"{name}.engine", BuildOptions(backend="tensorrt-rtx"))
    assert result.engine.stat().st_size > 0


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {i.name: i.data_type for i in model.graph.initializer}
    for value in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        types.setdefault(value.name, value.type.tensor_type.elem_type)
    return types


def node_precisions(mixed: onnx.ModelProto) -> dict[str, str]:
    """Each original node's precision as the mixed graph's types say: fp16, fp32, or mixed."""
    types = tensor_types(mixed)
    result = {}
    for node in mixed.graph.node:
        if "__" in node.name or node.op_type in UNTYPED_READERS:
            continue  # boundary Casts added by the conversion; shape readers
        if node.op_type == "Cast" and types.get(node.output[0]) not in FLOATS:
            continue  # float -> integer Casts read whatever type the tensor has
        seen = {types.get(n) for n in (*node.input, *node.output) if n} & set(FLOATS)
        if seen:
            result[node.name] = "mixed" if len(seen) == 2 else ("fp16" if TensorProto.FLOAT16 in seen else "fp32")
    return result


def toy_spec(name: str, module: nn.Module, inputs, outputs, dims, keep=(), gates=(), validation=({"batch": 3},)) -> ExportSpec:
    return ExportSpec(
        family="toy",
        graph=name,
        build_module=lambda *args, **kwargs: module,
        inputs=inputs,
        outputs=outputs,
        dims=dims,
        opset=18,
        exporter="dynamo",
        exporter_reason="test",
        tolerance=Tolerance(atol=1e-4, rtol=1e-3),
        validation_points=validation,
        keep_fp32_ops=keep,
        gates=gates,
    )


def export_toy(spec: ExportSpec, module: nn.Module, tmp_path) -> onnx.ModelProto:
    path = tmp_path / f"{spec.graph}.onnx"
    export_onnx(spec, module.eval(), path)
    return onnx.load(str(path))


# --------------------------------------------------------------------------- gate metrics


def test_gate_values_match_hand_computed_numbers() -> None:
    reference = np.zeros((1, 4), np.float32)
    actual = np.array([[0.1, 0.0, 0.0, 0.0]], np.float32)
    # MSE = 0.01 / 4 = 0.0025 -> 10 log10(1 / 0.0025) = 26.0206 dB; peak 2 adds 20 log10(2)
    assert gate_value(Gate("y", "psnr", 30.0), reference, actual) == pytest.approx(26.0206, abs=1e-4)
    assert gate_value(Gate("y", "psnr", 30.0, peak=2.0), reference, actual) == pytest.approx(26.0206 + 6.0206, abs=1e-4)
    assert gate_value(Gate("y", "psnr", 30.0), reference, reference) == math.inf
    assert gate_value(Gate("y", "max_abs", 0.05), reference, actual) == pytest.approx(0.1)
    # SNR: signal 3^2 + 4^2 = 25, noise 1 -> 10 log10(25) = 13.9794 dB
    assert gate_value(Gate("y", "snr", 10.0), np.array([[3.0, 4.0]]), np.array([[3.0, 3.0]])) == pytest.approx(13.9794, abs=1e-4)
    # cosine per row of the last axis, the minimum; rows that are both zero count as 1
    ref_rows = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    act_rows = np.array([[[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    assert gate_value(Gate("y", "cosine", 0.9), ref_rows, act_rows) == pytest.approx(1 / math.sqrt(2))
    assert gate_value(Gate("y", "cosine", 0.9), ref_rows[:, ::2], act_rows[:, ::2]) == pytest.approx(1.0)
    # the region crops axes after the batch axis: rows 2: of a (1, 4, 2) image differ by 0.2
    image = np.zeros((1, 4, 2))
    changed = image.copy()
    changed[:, 2:] = 0.2
    changed[:, :2] = 0.5
    region = Gate("y", "max_abs", 0.3, region=((2, None), (None, None)))
    assert gate_value(region, image, changed) == pytest.approx(0.2) and region.passes(0.2)
    assert gate_value(Gate("y", "psnr", 40.0, region=((2, None),)), image, changed) == pytest.approx(10 * math.log10(1 / 0.04))
    # an output that overflowed is as bad as it gets
    broken = np.array([[np.inf, 0.0, 0.0, 0.0]])
    assert gate_value(Gate("y", "psnr", 30.0), reference, broken) == -math.inf
    assert gate_value(Gate("y", "max_abs", 0.05), reference, broken) == math.inf


def test_gates_round_trip_through_the_spec_json() -> None:
    spec = get_spec("wav2lip")
    gates = gates_from_spec_json(json.dumps(spec.to_json()))
    assert gates == list(spec.gates)
    assert gates_from_spec_json(spec.to_json())[0].region == ((None, None), (48, None), (None, None))


# --------------------------------------------------------------------------- every exported family


@pytest.fixture(scope="module")
def family_onnx(request, wav2lip_onnx, tmp_path_factory):
    """(family, ONNX model, spec) for each family exported so far (random weights, tiny encoder presets)."""
    name, options = request.param
    if name == "wav2lip":
        return name, onnx.load(str(wav2lip_onnx)), get_spec("wav2lip")
    spec = get_spec(name, **options)
    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    export_onnx(spec, spec.build_module(None, seed=3), path, validate=False)  # parity is test_*_export's job
    return name, onnx.load(str(path)), spec


FAMILIES = [("wav2lip", {}), ("hubert", {"preset": "tiny-hubert"}), ("wav2vec2", {"preset": "tiny-wav2vec2"}), ("mel", {})]


@pytest.mark.parametrize("family_onnx", FAMILIES, indirect=True, ids=[f for f, _ in FAMILIES])
def test_family_fp16_runs_in_ort_and_builds_with_rtx(family_onnx, tmp_path) -> None:
    name, model, spec = family_onnx
    mixed, report = plan_precision(model, "fp16", dims={"batch": 2})
    onnx.checker.check_model(mixed, full_check=True)

    # Inputs and outputs keep their declared types and shapes.
    assert [(v.name, v.type) for v in mixed.graph.input] == [(v.name, v.type) for v in model.graph.input]
    assert [(v.name, v.type) for v in mixed.graph.output] == [(v.name, v.type) for v in model.graph.output]

    # The FP32 nodes are exactly the spec's keep set plus the reported reasons.
    precisions = node_precisions(mixed)
    assert "mixed" not in precisions.values()
    fp32 = {n for n, p in precisions.items() if p == "fp32"}
    assert fp32 == set(report.fp32_nodes)
    ops = {node.name: node.op_type for node in mixed.graph.node}
    for node, reason in report.fp32_nodes.items():
        assert (ops[node] in spec.keep_fp32_ops) == reason.startswith(f"op type {ops[node]} kept in FP32 by the spec"), (node, reason)
        if ops[node] in spec.keep_fp32_ops and spec.keep_fp32_reason:  # the sidecar says why, from the spec in the file
            assert reason.endswith(spec.keep_fp32_reason), reason
    assert all(ops[n] not in spec.keep_fp32_ops for n, p in precisions.items() if p == "fp16")
    assert report.counts["fp32"] == len(fp32) and report.counts["fp16"] == sum(p == "fp16" for p in precisions.values())

    # Weights read by FP16 nodes are stored in FP16; those of FP32 nodes keep their FP32 values.
    types = tensor_types(mixed)
    originals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    half_weights = 0
    for node in mixed.graph.node:
        for slot, tensor in enumerate(node.input):
            base = tensor.removesuffix("__fp16")
            if base in originals and precisions.get(node.name) in ("fp16", "fp32"):
                expected = TensorProto.FLOAT16 if precisions[node.name] == "fp16" else TensorProto.FLOAT
                if not (node.op_type == "Resize" and slot > 0):
                    assert types[tensor] == expected, (node.name, tensor)
                    half_weights += expected == TensorProto.FLOAT16
    assert half_weights > 0

    # It runs in ONNX Runtime, and the gates were measured (values in the report).
    outputs = ort_run(mixed, {k: v.numpy() for k, v in spec.example_inputs({"batch": 2}, seed=5).items()})
    assert all(np.isfinite(v).all() for v in outputs.values())
    assert report.passed, report.to_markdown()
    assert len(report.gates_before) == len(spec.gates) and all(math.isfinite(g["value"]) for g in report.gates_before)

    # TensorRT-RTX parses it as a strongly typed network and builds it.
    rtx_build(mixed, tmp_path, name)


# --------------------------------------------------------------------------- traps


class MaskedConv(nn.Module):
    """``mask.float()`` twice: one mask scales FP16 activations, the other feeds an FP32 CumSum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x[:, :1] > 0).float()
        positions = torch.cumsum((x[:, 1:2] > 0.5).float(), dim=-1)
        return self.conv(x) * mask + 0.01 * positions


def test_cast_to_float_trap(tmp_path) -> None:
    spec = toy_spec(
        "masked", MaskedConv(), (TensorSpec("x", ("batch", 4, "time"), value_range=(-1.0, 1.0)),), (TensorSpec("y", ("batch", 4, "time")),),
        (Dim("batch", 1, 2, 4), Dim("time", 8, 16, 64)), keep=("CumSum",), validation=({"batch": 3, "time": 9},),
    )
    torch.manual_seed(0)
    model = export_toy(spec, MaskedConv(), tmp_path)
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT]
    assert len(casts) == 2, "the export should hold two Cast(to=FLOAT) nodes"

    mixed, report = plan_precision(model, "fp16")
    onnx.checker.check_model(mixed, full_check=True)
    retargeted = {n.name: n.attribute[0].i for n in mixed.graph.node if n.name in {c.name for c in casts}}
    consumers = {n.name: [m.op_type for m in mixed.graph.node if set(n.output) & set(m.input)] for n in casts}
    for cast, to in retargeted.items():
        if "CumSum" in consumers[cast]:  # feeds the FP32 island: stays a Cast to FLOAT, with a reason
            assert to == TensorProto.FLOAT and "feeds no FP16 node" in report.fp32_nodes[cast]
        else:  # inside the FP16 region: now a Cast to FLOAT16
            assert to == TensorProto.FLOAT16 and cast not in report.fp32_nodes
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, 16)).astype(np.float32)
    (expected,) = ort_run(model, {"x": x}).values()
    (actual,) = ort_run(mixed, {"x": x}).values()
    np.testing.assert_allclose(actual, expected, atol=5e-3)
    rtx_build(mixed, tmp_path, "masked")


def test_hand_built_graph_gets_node_names_and_keeps_nodes_by_name(tmp_path) -> None:
    """Unnamed nodes are named <op>_<index>; keep_fp32_nodes refers to those names; a float Cast stays exact."""
    weight = numpy_helper.from_array(np.full((4, 4), 0.5, np.float32), "weight")
    nodes = [
        helper.make_node("MatMul", ["x", "weight"], ["h"]),
        helper.make_node("Greater", ["h", "zero"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["h", "mask"], ["relu"]),
        helper.make_node("Tanh", ["relu"], ["y"]),
    ]
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [weight, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    mixed, fp32 = convert_to_mixed(model, keep_fp32_nodes=["Tanh_4"])
    assert [n.name for n in mixed.graph.node if "__" not in n.name] == ["MatMul_0", "Greater_1", "Cast_2", "Mul_3", "Tanh_4"]
    assert fp32 == {"Tanh_4": "node kept in FP32 by the caller"}
    assert all(not n.name for n in model.graph.node), "the input model is not modified"
    assert node_precisions(mixed) == {"MatMul_0": "fp16", "Greater_1": "fp16", "Cast_2": "fp16", "Mul_3": "fp16", "Tanh_4": "fp32"}
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(ort_run(mixed, {"x": x})["y"], ort_run(model, {"x": x})["y"], atol=2e-3)
    with pytest.raises(TalkrtError, match="does not have"):
        convert_to_mixed(model, keep_fp32_nodes=["no_such_node"])


class BigConstants(nn.Module):
    """Weights FP16 cannot hold: 1e5 (overflow) and 1e-8 (underflow), next to ordinary ones."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Parameter(torch.tensor([1e5, 2e5, 3.0, 1e5]))
        self.tiny = nn.Parameter(torch.full((4,), 1e-8))
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x / self.big  # stays FP32: the divisor exceeds the FP16 range
        return self.linear(scaled) + x * self.tiny * 1e6


def test_no_silent_clamp(tmp_path) -> None:
    spec = toy_spec("big", BigConstants(), (TensorSpec("x", ("batch", 4), value_range=(-1e4, 1e4)),), (TensorSpec("y", ("batch", 4)),), (Dim("batch", 1, 2, 4),))
    torch.manual_seed(0)
    model = export_toy(spec, BigConstants(), tmp_path)
    mixed, fp32 = convert_to_mixed(model)
    originals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    stored = {i.name: numpy_helper.to_array(i) for i in mixed.graph.initializer}
    big = next(name for name, value in originals.items() if value.max() >= 1e5)
    tiny = next(name for name, value in originals.items() if 0 < value.max() < 1e-7)
    ops = {n.name: n for n in mixed.graph.node}
    for name, words in ((big, "exceeds FP16 range"), (tiny, "underflows in FP16")):
        consumers = [n for n in model.graph.node if name in n.input]
        assert consumers and all(f"initializer {name} {words}" in fp32[c.name] for c in consumers), fp32
        assert stored[name].dtype == np.float32 and np.array_equal(stored[name], originals[name])  # values preserved exactly
        assert all(ops[c.name].op_type == c.op_type for c in consumers)
    assert any(v.dtype == np.float16 for v in stored.values()), "the Linear weight still becomes FP16"
    x = np.array([[1e4, -2e4, 3.0, 5e3], [-1.0, 2.0, 0.5, 7e3]], np.float32)
    np.testing.assert_allclose(ort_run(mixed, {"x": x})["y"], ort_run(model, {"x": x})["y"], rtol=2e-3, atol=2e-3)
    rtx_build(mixed, tmp_path, "big")


# --------------------------------------------------------------------------- auto


class ExplicitLayerNorm(nn.Module):
    """Activations around 1000 and a LayerNorm written out: Pow (x^2 ~ 1e6) overflows FP16."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x) * 1000.0
        centred = h - h.mean(-1, keepdim=True)
        variance = centred.pow(2).mean(-1, keepdim=True)
        return centred / torch.sqrt(variance + 1e-5)


def test_auto_pins_the_overflowing_nodes(tmp_path) -> None:
    spec = toy_spec(
        "overflow", ExplicitLayerNorm(), (TensorSpec("x", ("batch", 8, 16), value_range=(-1.0, 1.0)),), (TensorSpec("y", ("batch", 8, 16)),),
        (Dim("batch", 1, 2, 4),), keep=(), gates=(Gate("y", "cosine", 0.999, description="cosine of every normalised row"),),
    )
    torch.manual_seed(0)
    model = export_toy(spec, ExplicitLayerNorm(), tmp_path)
    assert json.loads(read_metadata(model)["talkrt.spec"])["keep_fp32_ops"] == []

    plain, plain_report = plan_precision(model, "fp16")
    assert not plain_report.passed and plain_report.fp32_nodes == {}
    assert plain_report.gates_after == plain_report.gates_before and plain_report.gates_before[0]["value"] < 0.5

    npz = tmp_path / "calibration.npz"
    np.savez(npz, x=np.random.default_rng(1).uniform(-1, 1, (2, 8, 16)).astype(np.float32))
    mixed, report = plan_precision(model, "auto", calibration=str(npz))
    assert report.passed and report.mode == "auto", report.to_markdown()
    assert not report.gates_before[0]["passed"] and report.gates_after[0]["value"] >= 0.999
    ops = {n.name: n.op_type for n in mixed.graph.node}
    assert report.iterations == len(report.pins) == len(report.fp32_nodes) >= 2
    assert ops[report.pins[0]["node"]] == "Pow" and "overflows" in report.pins[0]["detail"] and math.isinf(report.pins[0]["score"])
    for pin in report.pins:  # every reason names the pin and the gate before and after it
        reason = report.fp32_nodes[pin["node"]]
        assert reason.startswith("pinned by auto: FP16") and "cosine y" in reason and "->" in reason
    assert {p for p, v in node_precisions(mixed).items() if v == "fp32"} == set(report.fp32_nodes)
    # what the report says, in JSON and Markdown
    data = json.loads(json.dumps(report.to_json()))
    assert data["passed"] and data["gates_before"][0]["passed"] is False and data["fp32_op_types"]["Pow"] == 1
    markdown = report.to_markdown()
    assert "Pow" in markdown and "pinned by auto" in markdown and "gates pass" in markdown
    # the real mixed graph runs in ONNX Runtime, and builds strongly typed
    x = np.random.default_rng(2).uniform(-1, 1, (3, 8, 16)).astype(np.float32)
    reference, actual = ort_run(model, {"x": x})["y"], ort_run(mixed, {"x": x})["y"]
    assert gate_value(Gate("y", "cosine", 0.999), reference, actual) >= 0.999
    assert report.ort_check[0]["passed"]
    rtx_build(mixed, tmp_path, "overflow")


def test_auto_gives_up_after_max_pins(tmp_path) -> None:
    spec = toy_spec(
        "hopeless", ExplicitLayerNorm(), (TensorSpec("x", ("batch", 8, 16), value_range=(-1.0, 1.0)),), (TensorSpec("y", ("batch", 8, 16)),),
        (Dim("batch", 1, 2, 4),), gates=(Gate("y", "max_abs", 0.0, description="bit-exact"),),
    )
    torch.manual_seed(0)
    model = export_toy(spec, ExplicitLayerNorm(), tmp_path)
    _, report = plan_precision(model, "auto", max_pins=2)
    assert not report.passed and report.iterations == 2 and len(report.fp32_nodes) == 2
    assert isinstance(report, PrecisionReport) and "GATES FAIL" in report.to_markdown()


def test_foreign_graph_uses_defaults_and_needs_calibration_for_dynamic_inputs() -> None:
    nodes = [
        helper.make_node("Mul", ["x", "gain"], ["h"], name="gain"),
        helper.make_node("Softmax", ["h"], ["y"], name="softmax", axis=-1),
    ]
    gain = numpy_helper.from_array(np.full((8,), 2.0, np.float32), "gain")
    for shape, calibration in (([2, 8], None), (["n", 8], {"x": np.ones((3, 8), np.float32)})):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [gain])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        mixed, report = plan_precision(model, "auto", calibration=calibration)
        assert report.fp32_nodes == {"softmax": "op type Softmax kept in FP32 by the default keep set (no talkrt spec)"}
        assert report.gates_after[0]["metric"] == "cosine" and report.gates_after[0]["threshold"] == 0.999 and report.passed
    with pytest.raises(TalkrtError, match="calibration"):
        plan_precision(model, "fp16")
