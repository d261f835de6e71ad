"""Mixed FP16 for strongly typed engines: the precision lives in the ONNX graph.

TensorRT 11 and TensorRT-RTX build strongly typed networks: every tensor has the
type the ONNX graph gives it, and there is no FP16 builder flag. This module
rewrites an FP32 graph into a mixed one and decides which nodes stay FP32:

* ``convert_to_mixed``: FP16 weights and activations except the nodes kept in
  FP32 (by op type or by name), with Cast nodes at every FP16/FP32 boundary and
  the graph's inputs and outputs keeping their declared types. Existing
  ``Cast(to=FLOAT)`` nodes inside an FP16 region are retargeted to FLOAT16 (the
  onnxconverter-common trap); nothing is clamped: an initializer or constant
  outside the FP16 range, or one that would underflow, keeps its consumer in
  FP32, and every FP32 node is returned with the reason.
* ``plan_precision``: converts with the spec's keep set (``fp16``) and, in
  ``auto`` mode, pins the most sensitive FP16 node to FP32 until the spec's
  gates hold against the FP32 graph.

How the FP16 graph is evaluated on a CPU: ONNX Runtime's CPU provider has FP16
kernels for few compute ops (x86, 1.31: LayerNormalization, Clip, Max (Relu runs
as its function body, a Max), Transpose, Concat and other data movement; not
Conv, ConvTranspose, MatMul, Gemm, Add/Sub/Mul/Div/Pow, Sqrt, Exp, Log, Erf,
Tanh, Sigmoid, Softmax, ReduceMean/Sum/L2, BatchNormalization,
InstanceNormalization). It still runs such a graph: its
InsertCastTransformer wraps those nodes in Cast float16 <-> float32 and removes
the back-to-back pairs between two of them, so a chain of FP16 nodes runs in
FP32 and an intermediate that overflows FP16 never does. Gates measured that
way would pass graphs that overflow on the GPU. The gates are therefore
measured on an *emulated* graph: the same plan, every FP16 node computed in
FP32 from FP16-rounded inputs and its outputs rounded to FP16 (explicit
Cast pairs, which ONNX Runtime keeps), FP16 weights rounded likewise. That is
FP16 storage exactly (rounding, overflow to inf, underflow) with FP32
arithmetic inside each node, which is what GPU kernels with FP32 accumulation
do; accumulation inside a node in FP16 is not modelled, which is why the
normalisation ops stay in the spec's keep sets. The real mixed graph is run in
ONNX Runtime as well, to prove it loads and runs (``PrecisionReport.ort_check``).

Sensitivity (``auto``): for each FP16 node, the error that running it in FP16
adds *locally*: the relative L2 difference between its outputs computed in FP32
and the same outputs rounded to FP16, together with the rounding of any FP32
input cast down to FP16 at an island boundary. Values that are finite in FP32
and overflow in FP16 score infinity. This is exactly the error that pinning the
node removes (its inputs from FP16 producers stay as they are), it needs no
FP32 intermediates to compare against, and it blames the first node of an
overflowing chain rather than everything downstream of it. The node with the
highest score is pinned (ties: the earliest in the graph), the gates are
measured again, and the loop stops when they hold or after ``max_pins``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from talkrt.errors import TalkrtError
from talkrt.export.samplers import sample_inputs
from talkrt.export.spec import Gate, TensorSpec

FP16_MAX = 65504.0
# An initializer whose FP16 copy differs from it by more than this (relative L2) underflows meaningfully:
# ordinary FP16 rounding gives about 3e-4; eps constants such as 1e-12 or 1e-7 lose 20-100 %.
UNDERFLOW_RELATIVE_ERROR = 1e-2
# auto: a node on the error path is the culprit when its own FP16 error is at least this share of the
# error accumulated at its output (the rest is inherited from its inputs).
_LOCAL_SHARE = 0.5
# Op types a graph without a talkrt spec keeps in FP32 (specs/tooling.md §6.3).
DEFAULT_KEEP_FP32_OPS = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "ReduceMean", "ReduceSum", "Pow", "Sqrt", "Exp", "CumSum")
DEFAULT_COSINE = 0.999
SPEC_KEY = "talkrt.spec"
PLAN_KEY = "talkrt.precision"
# Nodes that read a float tensor only for its shape or convert it to a non-float type: they read
# whatever type the tensor has, so a FP16 producer does not force a Cast (or a rounding) on them.
_SHAPE_READERS = ("Shape", "Size")
_CONTROL_FLOW = ("If", "Loop", "Scan")
# Ops whose outputs are elements of their inputs (data movement, selection): exact in either precision.
_VALUE_PRESERVING = frozenset(
    ("Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "GatherElements", "GatherND", "Concat", "Split",
     "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Relu", "Abs", "Neg", "Max", "Min", "Clip", "Where", "MaxPool", "ReduceMax", "ReduceMin")
)

Mode = Literal["fp16", "auto"]


# --------------------------------------------------------------------------- gates


def gate_value(gate: Gate, reference: np.ndarray, actual: np.ndarray) -> float:
    """The gate's metric of ``actual`` against the FP32 ``reference`` (``region`` applied first)."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.shape != actual.shape:
        raise ValueError(f"{gate.output}: shapes differ, reference {reference.shape} vs actual {actual.shape}")
    if gate.region:
        if len(gate.region) > reference.ndim - 1:
            raise ValueError(f"{gate.output}: region has {len(gate.region)} axes, the output only {reference.ndim - 1} after the batch axis")
        crop = (slice(None),) + tuple(slice(start, stop) for start, stop in gate.region)
        reference, actual = reference[crop], actual[crop]
    # Equal values (infinities included) differ by exactly 0, not inf - inf.
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(reference == actual, 0.0, actual - reference)
    finite = bool(np.all(np.isfinite(diff)))
    worst = -math.inf if gate.higher_is_better else math.inf
    if gate.metric == "max_abs":
        return float(np.abs(diff).max(initial=0.0)) if finite else math.inf
    if not finite:
        return worst
    if gate.metric == "psnr":
        mse = float(np.mean(diff**2)) if diff.size else 0.0
        return math.inf if mse == 0.0 else 10.0 * math.log10(gate.peak**2 / mse)
    if gate.metric == "snr":
        noise = float(np.sum(diff**2))
        signal = float(np.sum(reference**2))
        if noise == 0.0:
            return math.inf
        return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)
    if gate.metric == "cosine":
        if reference.size == 0:
            return 1.0
        last = reference.shape[-1] if reference.ndim else 1
        ref_rows, act_rows = reference.reshape(-1, last), actual.reshape(-1, last)
        ref_norm, act_norm = np.linalg.norm(ref_rows, axis=1), np.linalg.norm(act_rows, axis=1)
        # "~0": below 1e-6 of the largest reference row (or exactly 0 when everything is 0).
        tiny = 1e-6 * float(ref_norm.max(initial=0.0))
        both_zero = (ref_norm <= tiny) & (act_norm <= tiny)
        denominator = ref_norm * act_norm
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = np.where(denominator > 0, np.sum(ref_rows * act_rows, axis=1) / np.where(denominator > 0, denominator, 1.0), 0.0)
        cosine = np.where(both_zero, 1.0, cosine)
        return float(cosine.min())
    raise ValueError(f"unknown gate metric {gate.metric!r}")


def gates_from_spec_json(spec_json: Mapping | str) -> list[Gate]:
    """The gates stored in a spec JSON (the ``talkrt.spec`` metadata value, as text or parsed)."""
    spec = json.loads(spec_json) if isinstance(spec_json, str) else spec_json
    gates = []
    for entry in spec.get("gates", []):
        region = tuple(tuple(pair) for pair in entry.get("region", ()))
        gates.append(Gate(entry["output"], entry["metric"], float(entry["threshold"]), region=region, peak=float(entry.get("peak", 1.0)), description=entry.get("description", "")))  # type: ignore[arg-type]
    return gates


def _describe(gate: Gate) -> str:
    return gate.description or f"{gate.metric} of {gate.output}" + (f" over {list(map(list, gate.region))}" if gate.region else "")


def _gate_results(gates: list[Gate], reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[dict]:
    results = []
    for gate in gates:
        value = gate_value(gate, reference[gate.output], actual[gate.output])
        results.append({"gate": _describe(gate), "output": gate.output, "metric": gate.metric, "threshold": gate.threshold, "value": value, "passed": gate.passes(value)})
    return results


def _fmt(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _summary(results: list[dict]) -> str:
    return ", ".join(f"{r['metric']} {r['output']} {_fmt(r['value'])}" for r in results)


# --------------------------------------------------------------------------- graph analysis


@dataclass
class _NodeInfo:
    index: int
    name: str
    op: str
    kind: Literal["float", "shape", "other"]  # float: has a precision; shape: reads any type; other: no float I/O
    fixed32_inputs: set[int] = field(default_factory=set)
    fixed32_outputs: set[int] = field(default_factory=set)
    static_reason: str | None = None  # why it can never be FP16


class _Analysis:
    """A prepared copy of the FP32 graph: unique node names, float constants as
    initializers, every tensor's element type, producers and consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        model = _copy(model)
        _name_nodes(model.graph)
        _constants_to_initializers(model.graph)
        self.model = model
        graph = model.graph
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.types = _element_types(model)
        self.initializers = {i.name: i for i in graph.initializer}
        # The graph without its weights: builders copy this and add (converted) initializers.
        self.skeleton = onnx.ModelProto()
        self.skeleton.CopyFrom(model)  # cheap relative to what it saves: every build copies only the skeleton
        self.skeleton.graph.ClearField("initializer")
        self._arrays: dict[str, np.ndarray] = {}
        self._rounded: dict[str, np.ndarray] = {}
        self.input_names = [i.name for i in graph.input]
        self.graph_inputs = set(self.input_names)  # an initializer listed as an input is an input (overridable)
        self.output_names = [o.name for o in graph.output]
        self.output_set = set(self.output_names)
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[tuple[int, int]]] = {}
        for index, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = index
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((index, slot))
        self.subgraph_refs: dict[str, str] = {}  # outer tensor read inside a subgraph -> the node holding it
        for node in self.nodes:
            for name in _outer_references(node):
                self.subgraph_refs.setdefault(name, node.name)
        self.info = [self._classify(index, node) for index, node in enumerate(self.nodes)]
        self.by_name = {info.name: info for info in self.info}
        self._init_check: dict[str, str | None] = {}

    def is_float(self, name: str) -> bool:
        return bool(name) and self.types.get(name) == TensorProto.FLOAT

    def _classify(self, index: int, node: onnx.NodeProto) -> _NodeInfo:
        float_in = [slot for slot, name in enumerate(node.input) if self.is_float(name)]
        float_out = [slot for slot, name in enumerate(node.output) if self.is_float(name)]
        info = _NodeInfo(index, node.name, node.op_type, "other")
        if not float_in and not float_out:
            unknown = [n for n in node.output if n and n not in self.types]
            if unknown and node.op_type not in _CONTROL_FLOW:
                info.kind = "float"
                info.static_reason = f"output types unknown to ONNX shape inference ({node.domain or 'ai.onnx'}::{node.op_type})"
            return info
        if node.op_type in _SHAPE_READERS or (node.op_type == "Cast" and not float_out):
            info.kind = "shape"
            return info
        info.kind = "float"
        if node.op_type in _CONTROL_FLOW:
            info.static_reason = f"control flow ({node.op_type}): its subgraphs stay FP32"
            return info
        schema = _schema(node, self.opsets)
        if schema is None:
            info.static_reason = f"no ONNX schema for {node.domain or 'ai.onnx'}::{node.op_type}: its FP16 form is unknown"
            return info
        constraints = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
        fp16_slots = 0
        for slots, formals, fixed in ((float_in, schema.inputs, info.fixed32_inputs), (float_out, schema.outputs, info.fixed32_outputs)):
            for slot in slots:
                formal = formals[min(slot, len(formals) - 1)] if formals else None
                allowed = constraints.get(formal.type_str, [formal.type_str]) if formal is not None else []
                if "tensor(float16)" in allowed:
                    fp16_slots += 1
                else:
                    fixed.add(slot)
        if not fp16_slots:
            info.static_reason = f"ONNX {node.op_type} (opset {schema.since_version}) has no FLOAT16 form"
        return info

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self.initializers[name])
        return self._arrays[name]

    def rounded(self, name: str) -> np.ndarray:
        """The initializer's values after FP16 storage, as FP32 (for the emulation)."""
        if name not in self._rounded:
            self._rounded[name] = self.array(name).astype(np.float16).astype(np.float32)
        return self._rounded[name]

    def initializer_problem(self, name: str) -> str | None:
        """Why ``name`` cannot become FP16 without changing its values, or None."""
        if name not in self._init_check:
            self._init_check[name] = _fp16_problem(f"initializer {name}", self.array(name))
        return self._init_check[name]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give unnamed or duplicate-named nodes the stable name ``<op>_<index>`` (plans refer to node names)."""
    taken = {node.name for node in graph.node if node.name}
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.op_type}_{index}"
        name, suffix = base, 1
        while name in taken or name in seen:
            name, suffix = f"{base}_{suffix}", suffix + 1
        node.name = name
        seen.add(name)
        taken.add(name)


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Float Constant nodes become initializers, so weights and constants follow one rule."""
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and not node.domain and len(node.attribute) == 1:
            attr = node.attribute[0]
            tensor = None
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                tensor = numpy_helper.to_array(attr.t)
            elif attr.name == "value_float":
                tensor = np.array(attr.f, dtype=np.float32)
            elif attr.name == "value_floats":
                tensor = np.array(list(attr.floats), dtype=np.float32)
            if tensor is not None:
                graph.initializer.append(numpy_helper.from_array(tensor, node.output[0]))
                continue
        kept.append(node)
    if len(kept) != len(graph.node):
        graph.ClearField("node")
        graph.node.extend(kept)


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    types: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a model shape inference cannot handle: use what the file declares
        inferred = model
    graph = inferred.graph
    for value in (*graph.input, *graph.output, *graph.value_info, *model.graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types.setdefault(value.name, value.type.tensor_type.elem_type)
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def _outer_references(node: onnx.NodeProto) -> set[str]:
    """Tensor names a node's subgraphs read from the enclosing scope."""
    refs: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []
        for sub in graphs:
            local = {i.name for i in sub.input} | {i.name for i in sub.initializer}
            for inner in sub.node:
                refs |= {n for n in inner.input if n and n not in local}
                refs |= _outer_references(inner)
                local |= set(inner.output)
    return refs


def _schema(node: onnx.NodeProto, opsets: Mapping[str, int]):
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if domain not in opsets:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opsets[domain], domain)
    except Exception:
        return None


def _fp16_problem(what: str, values: np.ndarray) -> str | None:
    values = np.asarray(values, dtype=np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    peak = float(np.abs(finite).max())
    if peak > FP16_MAX:
        return f"{what} exceeds FP16 range (max |x| = {peak:.4g} > {FP16_MAX:g})"
    norm = float(np.linalg.norm(finite.astype(np.float64)))
    if norm == 0.0:
        return None
    error = float(np.linalg.norm(finite.astype(np.float16).astype(np.float64) - finite)) / norm
    if error > UNDERFLOW_RELATIVE_ERROR:
        return f"{what} underflows in FP16 (relative error {error:.3g}; smallest |x| = {float(np.abs(finite[finite != 0]).min()):.3g})"
    return None


# --------------------------------------------------------------------------- the plan


def _decide(a: _Analysis, keep_ops: Iterable[str], keep_nodes: Mapping[str, str], source: str) -> dict[str, str]:
    """node name -> reason, for every node with a precision that stays FP32."""
    keep_ops = set(keep_ops)
    unknown = sorted(set(keep_nodes) - set(a.by_name))
    if unknown:
        raise TalkrtError(f"keep_fp32_nodes names nodes the graph does not have: {', '.join(unknown[:5])}")
    fp32: dict[str, str] = {}
    for info in a.info:
        if info.kind != "float":
            continue
        if info.static_reason:
            fp32[info.name] = info.static_reason
        elif info.op in keep_ops:
            fp32[info.name] = f"op type {info.op} kept in FP32 by {source}"
        elif info.name in keep_nodes:
            fp32[info.name] = keep_nodes[info.name]
    for tensor, holder in a.subgraph_refs.items():
        producer = a.producer.get(tensor)
        if producer is not None and a.info[producer].kind == "float" and a.info[producer].name not in fp32:
            fp32[a.info[producer].name] = f"its output {tensor} is read inside the subgraph of {holder}"
    for info in a.info:
        if info.kind != "float" or info.name in fp32:
            continue
        node = a.nodes[info.index]
        for slot, name in enumerate(node.input):
            if slot in info.fixed32_inputs or not a.is_float(name) or name not in a.initializers or name in a.graph_inputs:
                continue
            problem = a.initializer_problem(name)
            if problem:
                fp32[info.name] = problem
                break
        else:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                    problem = _fp16_problem(f"attribute {attr.name}", numpy_helper.to_array(attr.t))
                    if problem:
                        fp32[info.name] = problem
                        break
    # Ops that only move or select values (and a Cast to FLOAT, e.g. mask.float()) are exact in
    # any precision: the rounding happens at the Cast in front of them. Between FP32 nodes an
    # FP16 copy would round FP32 values for nothing, so they follow their neighbours: FP32 when
    # no FP16 node reads them (backward pass), unless every input already is FP16 (forward pass).
    def fp16_readers(tensor: str, tentative: set[str]) -> bool:
        for consumer, slot in a.consumers.get(tensor, []):
            info = a.info[consumer]
            if info.kind == "float" and info.name not in fp32 and info.name not in tentative and slot not in info.fixed32_inputs:
                return True
        return False

    def fp16_home(tensor: str, tentative: set[str]) -> bool:
        producer = a.producer.get(tensor)
        if producer is None:
            return False
        info = a.info[producer]
        slot = list(a.nodes[producer].output).index(tensor)
        return info.kind == "float" and info.name not in fp32 and info.name not in tentative and slot not in info.fixed32_outputs

    movers = [info for info in a.info if info.kind == "float" and info.name not in fp32 and (info.op in _VALUE_PRESERVING or info.op == "Cast")]
    tentative: set[str] = set()
    changed = True
    while changed:
        changed = False
        for info in movers:
            outputs = [n for n in a.nodes[info.index].output if a.is_float(n)]
            if info.name not in tentative and not any(fp16_readers(n, tentative) for n in outputs):
                tentative.add(info.name)
                changed = True
    changed = True
    while changed:
        changed = False
        for info in movers:
            inputs = [n for slot, n in enumerate(a.nodes[info.index].input) if a.is_float(n) and slot not in info.fixed32_inputs]
            if info.name in tentative and inputs and all(fp16_home(n, tentative) for n in inputs):
                tentative.discard(info.name)
                changed = True
    for info in movers:
        if info.name in tentative:
            what = "Cast to FLOAT" if info.op == "Cast" else f"{info.op} only moves or selects values and"
            fp32[info.name] = f"{what} feeds no FP16 node: FP32 keeps its FP32 inputs unrounded"
    return fp32


class _Builder:
    """Writes a plan into a graph: the real mixed graph, or its FP32 emulation."""

    def __init__(self, a: _Analysis, fp32: Mapping[str, str], emulate: bool, expose: bool = False) -> None:
        self.a, self.emulate, self.expose = a, emulate, expose
        # Emulation: large float weights become graph inputs fed from cached arrays, so each
        # evaluation serializes and loads a small graph instead of every weight again.
        self.weight_feeds: dict[str, np.ndarray] = {}
        self.precision: list[str | None] = []
        for info in a.info:
            self.precision.append(None if info.kind != "float" else ("fp32" if info.name in fp32 else "fp16"))
        self.names = set(a.types) | set(a.producer) | set(a.initializers) | set(a.input_names) | {n.name for n in a.nodes}
        self.nodes: list[onnx.NodeProto] = []
        self.probes: list[tuple[str, str, str, str, list[str]]] = []  # (kind, exact name, FP16-rounded name, tensor, blamed nodes)
        self.half = TensorProto.FLOAT if emulate else TensorProto.FLOAT16

    def fresh(self, base: str) -> str:
        name, suffix = base, 1
        while name in self.names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.names.add(name)
        return name

    def home(self, tensor: str) -> int:
        """The type a float tensor is stored in: its producer's precision."""
        producer = self.a.producer.get(tensor)
        if producer is None:
            return TensorProto.FLOAT  # graph input or initializer (initializers get FP16 copies)
        info = self.a.info[producer]
        slot = list(self.a.nodes[producer].output).index(tensor)
        return TensorProto.FLOAT16 if self.precision[producer] == "fp16" and slot not in info.fixed32_outputs else TensorProto.FLOAT

    def required(self, index: int, slot: int, tensor: str) -> int:
        info = self.a.info[index]
        if self.precision[index] is None:
            return self.home(tensor)
        return TensorProto.FLOAT16 if self.precision[index] == "fp16" and slot not in info.fixed32_inputs else TensorProto.FLOAT

    def build(self) -> onnx.ModelProto:
        a = self.a
        model = _copy(a.skeleton)
        graph = model.graph
        # Initializers: an FP16 copy for FP16 readers, the original for FP32 readers.
        fp16_inits: set[str] = set()
        fp32_inits: set[str] = set(a.output_set | set(a.subgraph_refs)) & set(a.initializers)
        for index, node in enumerate(a.nodes):
            for slot, name in enumerate(node.input):
                if name in a.initializers and a.is_float(name) and name not in a.graph_inputs:
                    (fp16_inits if self.required(index, slot, name) == TensorProto.FLOAT16 else fp32_inits).add(name)
        # float tensor -> {element type: the name under which that version exists}
        versions: dict[str, dict[int, str]] = {name: {TensorProto.FLOAT: name} for name in a.input_names if a.is_float(name)}
        for name, init in a.initializers.items():
            if name in a.graph_inputs or name not in fp16_inits:
                self.add_initializer(graph, name, init, a.array(name) if a.is_float(name) else None)
                if a.is_float(name):
                    versions.setdefault(name, {TensorProto.FLOAT: name})
                continue
            half = a.rounded(name) if self.emulate else a.array(name).astype(np.float16)
            if name in fp32_inits:
                self.add_initializer(graph, name, init, a.array(name))
                name16 = self.fresh(f"{name}__fp16")
                self.add_initializer(graph, name16, None, half)
                versions[name] = {TensorProto.FLOAT: name, TensorProto.FLOAT16: name16}
            else:
                self.add_initializer(graph, name, None, half)
                versions[name] = {TensorProto.FLOAT16: name}
        conversion_probe: dict[str, list[str]] = {}  # converted name -> the FP16 nodes reading it

        for index, node in enumerate(a.nodes):
            new = onnx.NodeProto()
            new.CopyFrom(node)
            for slot, name in enumerate(node.input):
                if not a.is_float(name):
                    continue
                wanted = self.required(index, slot, name)
                known = versions[name]
                if wanted not in known:
                    source = known[self.home(name)] if self.home(name) in known else next(iter(known.values()))
                    target = self.fresh(f"{name}__{'fp16' if wanted == TensorProto.FLOAT16 else 'fp32'}")
                    self.cast(source, target, wanted)
                    known[wanted] = target
                    if wanted == TensorProto.FLOAT16 and self.expose:
                        conversion_probe[target] = []
                        self.probes.append(("input", source, target, name, conversion_probe[target]))
                if known[wanted] in conversion_probe:
                    conversion_probe[known[wanted]].append(node.name)
                new.input[slot] = known[wanted]
            if self.precision[index] == "fp16":
                self.retype_attributes(new, node)
            after: list[tuple[str, str, str]] = []  # (written name, FP16 name, original name)
            for slot, name in enumerate(node.output):
                if not a.is_float(name):
                    continue
                if self.home(name) == TensorProto.FLOAT16:
                    stored = self.fresh(f"{name}__fp16") if name in a.output_set else name
                    versions[name] = {TensorProto.FLOAT16: stored}
                    written = self.fresh(f"{name}__exact") if self.emulate else stored
                    new.output[slot] = written
                    after.append((written, stored, name))
                else:
                    versions[name] = {TensorProto.FLOAT: name}
            self.nodes.append(new)
            for written, stored, name in after:
                if self.emulate:
                    self.round(written, stored)
                    if self.expose:
                        self.probes.append(("output", written, stored, name, [node.name]))
                if name in a.output_set:  # the graph output keeps its declared FLOAT
                    self.cast(stored, name, TensorProto.FLOAT)
                    versions[name][TensorProto.FLOAT] = name
        graph.ClearField("node")
        graph.node.extend(self.nodes)
        self.fix_value_info(graph, versions)
        return model

    def add_initializer(self, graph: onnx.GraphProto, name: str, proto: TensorProto | None, values: np.ndarray | None) -> None:
        if self.emulate and values is not None and values.dtype == np.float32 and values.size >= 1024 and name not in self.a.graph_inputs:
            self.weight_feeds[name] = values
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(values.shape)))
        elif proto is not None:
            graph.initializer.append(proto)
        else:
            graph.initializer.append(numpy_helper.from_array(values, name))

    def cast(self, source: str, target: str, to: int) -> None:
        if self.emulate:
            if to == TensorProto.FLOAT16:
                self.round(source, target)
            else:
                self.nodes.append(helper.make_node("Identity", [source], [target], name=self.fresh(f"{target}__identity")))
        else:
            self.nodes.append(helper.make_node("Cast", [source], [target], name=self.fresh(f"{target}__cast"), to=to))

    def round(self, source: str, target: str) -> None:
        """Emulation: FP32 -> FP16 -> FP32, i.e. FP16 storage in an FP32 graph."""
        half = self.fresh(f"{target}__half")
        self.nodes.append(helper.make_node("Cast", [source], [half], name=self.fresh(f"{half}__cast"), to=TensorProto.FLOAT16))
        self.nodes.append(helper.make_node("Cast", [half], [target], name=self.fresh(f"{target}__cast"), to=TensorProto.FLOAT))

    def retype_attributes(self, new: onnx.NodeProto, node: onnx.NodeProto) -> None:
        """Cast(to=FLOAT) inside an FP16 region casts to FLOAT16; float constants in attributes become FP16."""
        info = self.a.by_name[node.name]
        produces_half = any(self.a.is_float(n) and slot not in info.fixed32_outputs for slot, n in enumerate(node.output))
        for attr in new.attribute:
            if attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == TensorProto.FLOAT and produces_half:
                attr.i = self.half
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT and produces_half:
                values = numpy_helper.to_array(attr.t).astype(np.float16)
                attr.t.CopyFrom(numpy_helper.from_array(values.astype(np.float32) if self.emulate else values, attr.t.name))

    def fix_value_info(self, graph: onnx.GraphProto, versions: dict[str, dict[int, str]]) -> None:
        """Every float tensor's value_info gets the type of each of its versions, shapes copied."""
        source = self.a.model.graph
        declared = {v.name: v for v in (*source.input, *source.output, *source.value_info)}
        graph.ClearField("value_info")
        if self.emulate:  # ONNX Runtime infers what it needs; nothing outside this module reads the emulation
            return
        skip = self.a.output_set | self.a.graph_inputs
        for tensor, known in versions.items():
            if tensor in self.a.initializers and tensor not in self.a.graph_inputs:
                continue
            for elem, name in known.items():
                if name in skip:
                    continue
                value = onnx.ValueInfoProto()
                if tensor in declared:
                    value.CopyFrom(declared[tensor])
                else:
                    value.type.tensor_type.SetInParent()
                value.name = name
                value.type.tensor_type.elem_type = elem
                graph.value_info.append(value)
        graph.value_info.extend(v for v in source.value_info if v.name not in versions and not self.a.is_float(v.name))


def convert_to_mixed(
    model: onnx.ModelProto,
    keep_fp32_ops: Iterable[str] = (),
    keep_fp32_nodes: Iterable[str] | Mapping[str, str] = (),
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """FP16 weights and activations except the kept nodes; returns the mixed model and
    {FP32 node name: reason}. ``keep_fp32_nodes`` may map names to reasons.

    Unnamed nodes are named ``<op>_<index>`` first (the returned names refer to them).
    Graph inputs and outputs keep their declared types, float Constant nodes become
    initializers, and the input model is not modified.
    """
    analysis = _Analysis(model)
    fp32 = _decide(analysis, keep_fp32_ops, _node_reasons(keep_fp32_nodes), "the caller")
    return _Builder(analysis, fp32, emulate=False).build(), fp32


def _node_reasons(nodes: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(nodes, Mapping):
        return dict(nodes)
    return {name: "node kept in FP32 by the caller" for name in nodes}


# --------------------------------------------------------------------------- evaluation


def _session(model: onnx.ModelProto):
    from talkrt.optional import require

    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    session = _session(model)
    names = outputs or [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def _expose(model: onnx.ModelProto, names: Iterable[str]) -> None:
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            existing.add(name)


def _relative_error(fp32: np.ndarray, fp16: np.ndarray) -> tuple[float, float]:
    """(relative L2 error over positions finite in FP32 (inf when FP16 is not finite there), max |fp32|)."""
    fp32 = np.asarray(fp32, dtype=np.float64)
    fp16 = np.asarray(fp16, dtype=np.float64)
    finite = np.isfinite(fp32)
    if not finite.any():
        return 0.0, 0.0
    ref, act = fp32[finite], fp16[finite]
    peak = float(np.abs(ref).max())
    if not np.all(np.isfinite(act)):
        return math.inf, peak
    norm = float(np.linalg.norm(ref))
    error = float(np.linalg.norm(act - ref))
    return (error / norm if norm > 0 else (0.0 if error == 0 else math.inf)), peak


class _Evaluator:
    def __init__(self, a: _Analysis, gates: list[Gate], feeds: Mapping[str, np.ndarray]) -> None:
        self.a, self.gates, self.feeds = a, gates, dict(feeds)
        names = sorted({g.output for g in gates})
        missing = [n for n in names if n not in a.output_set]
        if missing:
            raise TalkrtError(f"gates name outputs the graph does not have: {', '.join(missing)}")
        self.outputs = names
        self.reference = _run(a.model, self.feeds, names)
        self._reference_all: dict[str, np.ndarray] | None = None

    def measure(self, fp32: Mapping[str, str], sensitivity: bool = False) -> tuple[list[dict], Callable[[], tuple[str, float, str] | None]]:
        """The gates of the emulated plan and, with ``sensitivity``, a function that picks the
        FP16 node to pin next from the same run (intermediates exposed as outputs)."""
        builder = _Builder(self.a, fp32, emulate=True, expose=sensitivity)
        model = builder.build()
        feeds = {**self.feeds, **builder.weight_feeds}
        names = list(self.outputs)
        if sensitivity:
            probed = [name for probe in builder.probes for name in probe[1:3]] + self.intermediates
            probed = [n for n in dict.fromkeys(probed) if n not in feeds and n not in names]
            _expose(model, probed)
            names += probed
        values = _run(model, feeds, names)
        values.update({k: v for k, v in self.feeds.items() if k not in values})
        gates = _gate_results(self.gates, self.reference, values)
        return gates, lambda: self._most_sensitive(builder, values, gates)

    def ort_check(self, mixed: onnx.ModelProto) -> list[dict]:
        return _gate_results(self.gates, self.reference, _run(mixed, self.feeds, self.outputs))

    @property
    def intermediates(self) -> list[str]:
        return [n for node in self.a.nodes for n in node.output if self.a.is_float(n)]

    def reference_all(self) -> dict[str, np.ndarray]:
        """Every float intermediate of the FP32 graph (computed once)."""
        if self._reference_all is None:
            model = _copy(self.a.model)
            _expose(model, self.intermediates)
            names = list(dict.fromkeys(self.outputs + self.intermediates))
            self._reference_all = _run(model, self.feeds, names)
        return self._reference_all

    def _most_sensitive(self, builder: _Builder, values: Mapping[str, np.ndarray], gates: list[dict]) -> tuple[str, float, str] | None:
        """Walk back from each failing output along the largest accumulated error (emulated vs
        FP32) to the first FP16 node whose own FP16 error is most of the error there."""
        a = self.a
        local: dict[str, tuple[float, str]] = {}
        for kind, exact, rounded, tensor, blamed in builder.probes:
            error, peak = _relative_error(values[exact], values[rounded])
            if error == 0.0:
                continue
            what = f"FP16 {'output' if kind == 'output' else 'copy of FP32 input'} {tensor}"
            what += f" overflows (max |x| = {peak:.4g} > {FP16_MAX:g})" if math.isinf(error) else f" has relative error {error:.3g}"
            for node in blamed:
                if error > local.get(node, (-1.0, ""))[0]:
                    local[node] = (error, what)
        if not local:
            return None
        reference = self.reference_all()
        accumulated: dict[str, float] = {}

        def acc(tensor: str) -> float:
            if tensor not in accumulated:
                accumulated[tensor] = _relative_error(reference[tensor], values[tensor])[0] if tensor in reference and tensor in values else 0.0
            return accumulated[tensor]

        for gate in (g for g in gates if not g["passed"]):
            tensor, seen = gate["output"], set()
            while tensor not in seen:
                seen.add(tensor)
                producer = a.producer.get(tensor)
                if producer is None:
                    break
                name = a.info[producer].name
                if name in local:
                    score, what = local[name]
                    total = acc(tensor)
                    if math.isinf(score) or score >= _LOCAL_SHARE * total:
                        share = "all" if math.isinf(score) or total == 0 else f"{min(score / total, 1.0):.0%}"
                        return name, score, f"{what}; {share} of the error of {tensor} on the path to output {gate['output']}"
                inputs = [t for t in a.nodes[producer].input if a.is_float(t) and t not in a.initializers]
                if not inputs:
                    break
                worst = max(inputs, key=acc)
                if acc(worst) == 0.0:
                    break
                tensor = worst
        order = {info.name: info.index for info in a.info}
        name = max(local, key=lambda n: (local[n][0], -order[n]))
        return name, local[name][0], f"{local[name][1]} (largest FP16 error in the graph)"


# --------------------------------------------------------------------------- the report


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


@dataclass
class PrecisionReport:
    mode: str
    fp32_nodes: dict[str, str]  # node name -> why it stays FP32
    fp32_op_types: dict[str, int]  # op type -> FP32 nodes of that type
    counts: dict[str, int]  # nodes (compute nodes of the source graph), fp16, fp32, untyped (no float tensors), casts_added
    gates_before: list[dict]  # plain FP16 with the spec's keep set
    gates_after: list[dict]  # the returned graph
    iterations: int  # auto: pins tried (each re-measured the gates)
    passed: bool
    keep_fp32_ops: list[str] = field(default_factory=list)
    keep_source: str = "the spec"
    pins: list[dict] = field(default_factory=list)  # auto: node, op, score, detail, gates after the pin
    ort_check: list[dict] = field(default_factory=list)  # gates of the real mixed graph in ONNX Runtime CPU
    calibration: dict[str, list[int]] = field(default_factory=dict)  # input -> shape
    evaluation: str = "emulated FP16 storage (FP32 arithmetic inside each node) in ONNX Runtime CPU"

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite numbers as strings): the precision plan of the engine sidecar."""

        def clean(results: list[dict]) -> list[dict]:
            return [{**r, "value": _json_float(r["value"])} for r in results]

        return {
            "mode": self.mode,
            "passed": self.passed,
            "fp32_nodes": dict(self.fp32_nodes),
            "fp32_op_types": dict(self.fp32_op_types),
            "counts": dict(self.counts),
            "keep_fp32_ops": list(self.keep_fp32_ops),
            "keep_source": self.keep_source,
            "gates_before": clean(self.gates_before),
            "gates_after": clean(self.gates_after),
            "ort_check": clean(self.ort_check),
            "iterations": self.iterations,
            "pins": [{**p, "score": _json_float(p["score"]), "gates": clean(p["gates"])} for p in self.pins],
            "calibration": dict(self.calibration),
            "evaluation": self.evaluation,
        }

    def to_markdown(self) -> str:
        c = self.counts
        lines = [
            f"## Precision plan: {self.mode} ({'gates pass' if self.passed else 'GATES FAIL'})",
            "",
            f"{c['nodes']} nodes: {c['fp16']} FP16, {c['fp32']} FP32, {c['untyped']} without float tensors; {c['casts_added']} Casts added. "
            f"Evaluated with {self.evaluation} on {', '.join(f'{k} {tuple(v)}' for k, v in self.calibration.items())}.",
            "",
            "| gate | metric | threshold | plain fp16 | final | ORT mixed | pass |",
            "|---|---|---|---|---|---|---|",
        ]
        check = self.ort_check or [None] * len(self.gates_after)
        for before, after, ort in zip(self.gates_before, self.gates_after, check):
            lines.append(
                f"| {after['gate']} | {after['metric']} | {_fmt(after['threshold'])} | {_fmt(before['value'])} | {_fmt(after['value'])} | "
                f"{_fmt(ort['value']) if ort else '-'} | {'yes' if after['passed'] else 'NO'} |"
            )
        if self.pins:
            lines += ["", f"Pinned by auto ({self.iterations} iterations):", ""]
            lines += [f"- `{p['node']}` ({p['op']}): {p['detail']}; then {_summary(p['gates'])}" for p in self.pins]
        if self.fp32_nodes:
            lines += ["", "| FP32 node | op | reason |", "|---|---|---|"]
            lines += [f"| `{name}` | {self._ops.get(name, '')} | {reason} |" for name, reason in self.fp32_nodes.items()]
        return "\n".join(lines) + "\n"

    _ops: dict[str, str] = field(default_factory=dict, repr=False, compare=False)  # node name -> op type, for the tables


# --------------------------------------------------------------------------- plan_precision


def _load(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    from talkrt.engines.model_files import load_onnx

    return load_onnx(model, external_data=True)


def _spec_json(model: onnx.ModelProto) -> dict | None:
    for prop in model.metadata_props:
        if prop.key == SPEC_KEY:
            return json.loads(prop.value)
    return None


def task_gates(model: onnx.ModelProto | str | os.PathLike) -> list[Gate]:
    """The gates a graph is judged by: its spec's, or the default gate for a graph without any."""
    source = _load(model)
    spec = _spec_json(source)
    return (gates_from_spec_json(spec) if spec is not None else []) or _default_gates(source)


def calibration_feeds(
    model: onnx.ModelProto | str | os.PathLike,
    calibration: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Inputs for judging a graph: ``calibration`` (a dict or an .npz), else drawn from its spec."""
    source = _load(model)
    return _calibration(source, _spec_json(source), calibration, dims, seed)


def run_onnx(model: onnx.ModelProto | str | os.PathLike, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All outputs of ``model`` in ONNX Runtime (CPU)."""
    return _run(_load(model), feeds)


def _calibration(
    model: onnx.ModelProto,
    spec: dict | None,
    calibration: Mapping[str, np.ndarray] | str | os.PathLike | None,
    dims: Mapping[str, int] | None,
    seed: int,
) -> dict[str, np.ndarray]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if calibration is not None:
        if isinstance(calibration, (str, os.PathLike)):
            path = Path(calibration)
            if not path.is_file():
                raise TalkrtError(f"calibration file not found: {path}")
            with np.load(path) as data:
                feeds = {k: data[k] for k in data.files}
        else:
            feeds = {k: np.asarray(v) for k, v in calibration.items()}
        missing = [i.name for i in inputs if i.name not in feeds]
        if missing:
            raise TalkrtError(f"calibration inputs lack {', '.join(missing)}")
        return {i.name: feeds[i.name].astype(helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type), copy=False) for i in inputs}
    rng = np.random.default_rng(seed)
    feeds = {}
    if spec is not None:
        sizes = {name: sizes[1] for name, sizes in spec.get("dims", {}).items()}
        sizes.update(dims or {})
        # drawn as validation draws them (each input's sampler), from the spec the file carries
        return sample_inputs([TensorSpec.from_json(tensor) for tensor in spec["inputs"]], sizes, rng)
    for value in inputs:
        shape = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_value > 0:
                shape.append(dim.dim_value)
            elif dim.dim_param and dims and dim.dim_param in dims:
                shape.append(dims[dim.dim_param])
            else:
                raise TalkrtError(
                    f"{value.name} has a dynamic axis {axis} and the graph carries no talkrt spec: pass calibration inputs (a dict or an .npz with one array per input)"
                )
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = (rng.integers(0, 2, shape) if np.issubdtype(dtype, np.integer) else rng.uniform(0.0, 1.0, shape)).astype(dtype)
    return feeds


def _default_gates(model: onnx.ModelProto) -> list[Gate]:
    return [
        Gate(o.name, "cosine", DEFAULT_COSINE, description=f"cosine similarity of every row of {o.name} to FP32 (default gate: the graph carries no talkrt spec)")
        for o in model.graph.output
        if o.type.tensor_type.elem_type == TensorProto.FLOAT
    ]


def _report(a: _Analysis, fp32: Mapping[str, str], mixed: onnx.ModelProto, mode: str) -> PrecisionReport:
    typed = [info for info in a.info if info.kind == "float"]
    ops: dict[str, int] = {}
    for info in typed:
        if info.name in fp32:
            ops[info.op] = ops.get(info.op, 0) + 1
    counts = {
        "nodes": len(a.info),
        "fp16": sum(info.name not in fp32 for info in typed),
        "fp32": sum(info.name in fp32 for info in typed),
        "untyped": len(a.info) - len(typed),
        "casts_added": len(mixed.graph.node) - len(a.info),
    }
    report = PrecisionReport(mode, dict(fp32), dict(sorted(ops.items())), counts, [], [], 0, False)
    report._ops = {info.name: info.op for info in a.info}
    return report


def plan_precision(
    model: onnx.ModelProto | str | os.PathLike,
    mode: Mode = "fp16",
    calibration: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    max_pins: int = 32,
    *,
    dims: Mapping[str, int] | None = None,
    seed: int = 0,
) -> tuple[onnx.ModelProto, PrecisionReport]:
    """The mixed graph and its report.

    ``fp16``: FP16 except the spec's keep_fp32_ops; the report says whether the gates hold.
    ``auto``: the same, then while a gate fails the most sensitive FP16 node is pinned to
    FP32 (see the module docstring), at most ``max_pins`` times.

    Calibration inputs: ``calibration`` (a dict or an .npz, one array per input), else drawn
    (seeded) by the spec's samplers at its opt sizes, with ``dims`` overriding sizes
    (e.g. ``{"batch": 2}``). A graph without a talkrt spec keeps DEFAULT_KEEP_FP32_OPS, is
    gated by cosine >= 0.999 on every float output, and needs calibration unless its
    inputs are static.
    """
    if mode not in ("fp16", "auto"):
        raise TalkrtError(f"precision mode {mode!r}: choose fp16 or auto")
    source = _load(model)
    spec = _spec_json(source)
    if spec is not None:
        keep_ops, gates, keep_source = list(spec.get("keep_fp32_ops", [])), gates_from_spec_json(spec), "the spec"
    else:
        keep_ops, gates, keep_source = list(DEFAULT_KEEP_FP32_OPS), _default_gates(source), "the default keep set (no talkrt spec)"
    # A gate-less spec (an export older than the gates) gets the default gate, never a vacuous pass.
    gates = gates or _default_gates(source)
    feeds = _calibration(source, spec, calibration, dims, seed)
    analysis = _Analysis(source)
    evaluator = _Evaluator(analysis, gates, feeds)

    fp32 = _decide(analysis, keep_ops, {}, keep_source)
    before, choose = evaluator.measure(fp32, sensitivity=mode == "auto")
    after, pins = before, []
    if mode == "auto":
        pinned: dict[str, str] = {}
        while not all(r["passed"] for r in after) and len(pins) < max_pins:
            choice = choose()
            if choice is None:
                break
            node, score, detail = choice
            failing = [i for i, r in enumerate(after) if not r["passed"]]
            pinned[node] = f"pinned by auto: {detail}"
            fp32 = _decide(analysis, keep_ops, pinned, keep_source)
            measured, choose = evaluator.measure(fp32, sensitivity=True)
            pinned[node] += f"; {_summary([after[i] for i in failing])} -> {_summary([measured[i] for i in failing])}"
            fp32[node] = pinned[node]
            pins.append({"node": node, "op": analysis.by_name[node].op, "score": score, "detail": detail, "gates": measured})
            after = measured
    mixed = _Builder(analysis, fp32, emulate=False).build()
    report = _report(analysis, fp32, mixed, mode)
    report.keep_fp32_ops, report.keep_source = keep_ops, keep_source
    report.gates_before, report.gates_after = before, after
    report.iterations, report.pins = len(pins), pins
    report.passed = all(r["passed"] for r in after)
    report.calibration = {k: list(v.shape) for k, v in feeds.items()}
    report.ort_check = evaluator.ort_check(mixed)
    plan = {"mode": mode, "passed": report.passed, "fp32_nodes": report.fp32_nodes, "keep_fp32_ops": keep_ops}
    from talkrt.export.onnx import set_metadata

    set_metadata(mixed, {PLAN_KEY: json.dumps(plan, separators=(",", ":"))})
    return mixed, report
